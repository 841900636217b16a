"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory following docs/contracts.md §4 (read-only: copy it to modify it).

    For now this is `tests/contract_model.py`'s interim directory: random weights, NOT a trained
    model, correct names, shapes and semantics. It will switch to the real exporter
    (`boxmask.export.exporter.export_checkpoint` on a tiny trained checkpoint) once that exists.
    """
    from tests.contract_model import build_contract_model_dir

    return build_contract_model_dir(tmp_path_factory.mktemp("contract_model"))
