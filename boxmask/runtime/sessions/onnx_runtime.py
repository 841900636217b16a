"""`OnnxRuntimeSession`: a graph of the exported model run in-process by ONNX Runtime."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from boxmask.runtime.errors import BackendUnavailable, ModelDirError

logger = logging.getLogger(__name__)

# Fastest first. TensorRT and CUDA are listed by `get_available_providers()` only in GPU builds
# (onnxruntime-gpu); a build may list one whose libraries are missing, so creation falls back.
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

ProviderSpec = str | tuple[str, dict[str, Any]]


def choose_providers(available: Sequence[str] | None = None) -> list[str]:
    """The preferred providers that this ONNX Runtime build has, fastest first, CPU always last."""
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    chosen = [p for p in PREFERRED_PROVIDERS if p in available]
    return chosen if "CPUExecutionProvider" in chosen else [*chosen, "CPUExecutionProvider"]


def _provider_options(provider: str, cache_dir: Path | None, fp16: bool) -> ProviderSpec:
    if provider == "TensorrtExecutionProvider":
        options: dict[str, Any] = {"trt_fp16_enable": fp16}
        if cache_dir is not None:
            # Building TensorRT engines takes minutes; cache them next to the model.
            options |= {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir)}
        return provider, options
    return provider


class OnnxRuntimeSession:
    """One ONNX graph in ONNX Runtime.

    providers: ONNX Runtime execution providers in order of preference; None chooses among
    TensorRT, CUDA and CPU by what `onnxruntime.get_available_providers()` reports. If creating
    the session with a GPU provider fails, it is retried without it (and logged).
    intra_op_threads: threads for one operator (None = ONNX Runtime's default, all cores).
    allow_spinning: whether those threads spin while they wait for work (None = ONNX Runtime's
    default, they do): spinning saves a wake-up per operator on idle cores and burns the cores
    that other work needs on busy ones.
    """

    def __init__(
        self,
        path: str | Path,
        providers: Sequence[ProviderSpec] | None = None,
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        allow_spinning: bool | None = None,
        trt_cache_dir: str | Path | None = None,
        trt_fp16: bool = False,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelDirError(f"ONNX file not found: {self.path}")
        options = ort.SessionOptions()
        if intra_op_threads is not None:
            options.intra_op_num_threads = intra_op_threads
        if inter_op_threads is not None:
            options.inter_op_num_threads = inter_op_threads
        if allow_spinning is not None:
            options.add_session_config_entry("session.intra_op.allow_spinning",
                                             "1" if allow_spinning else "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

        cache = Path(trt_cache_dir) if trt_cache_dir is not None else self.path.parent / "trt_cache"
        candidates: list[ProviderSpec] = (
            [_provider_options(p, cache, trt_fp16) for p in choose_providers()]
            if providers is None
            else list(providers)
        )
        errors: list[str] = []
        while candidates:
            try:
                self._session = ort.InferenceSession(
                    str(self.path), sess_options=options, providers=candidates
                )
                break
            except Exception as e:  # ONNX Runtime raises several unrelated types
                first = candidates[0] if isinstance(candidates[0], str) else candidates[0][0]
                if first == "CPUExecutionProvider" or len(candidates) == 1:
                    raise ModelDirError(f"ONNX Runtime cannot load {self.path}: {e}") from e
                errors.append(f"{first}: {e}")
                logger.warning(
                    "ONNX Runtime provider %s failed for %s (%s); trying the next",
                    first,
                    self.path.name,
                    e,
                )
                candidates = candidates[1:]
        self.providers: list[str] = self._session.get_providers()
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._outputs = [o.name for o in self._session.get_outputs()]

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    def run(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        names = list(output_names) if output_names is not None else self._outputs
        feed = {name: inputs[name] for name in self._inputs}
        try:
            values = self._session.run(names, feed)
        except MemoryError as e:
            raise BackendUnavailable(f"ONNX Runtime ran out of memory in {self.path.name}") from e
        return dict(zip(names, values, strict=True))

    def describe(self) -> str:
        return f"onnxruntime {self.path.name} on {', '.join(self.providers)}"
