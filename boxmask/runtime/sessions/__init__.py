"""Inference sessions: one interface over ONNX Runtime in-process and a Triton server.

A session runs one graph of the exported model (`encoder`, `decoder` or `detector`): numpy
arrays in by input name, numpy arrays out by output name (docs/contracts.md §4 names them).
Backends are imported only when used, so the runtime needs neither tritonclient nor a GPU build
of ONNX Runtime unless it is asked for them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class InferenceSession(Protocol):
    """What the predictor needs from a backend."""

    @property
    def input_names(self) -> list[str]: ...

    @property
    def output_names(self) -> list[str]: ...

    def run(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run the graph; returns the requested outputs (all when None) by name."""
        ...

    def describe(self) -> str:
        """One line for logs and /v1/models: backend, model and device."""
        ...


__all__ = ["InferenceSession"]
