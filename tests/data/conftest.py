"""A tiny synthetic dataset shared by the data tests (generated once per session)."""

from pathlib import Path

import pytest

from boxmask.data.synthetic import generate


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "ds"
    stats = generate(out, seed=3, num_train=6, num_val=2, image_size=64)
    return out, stats
