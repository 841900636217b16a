"""Fixtures for training tests: a tiny synthetic dataset and configs that train in seconds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from boxmask.config import BoxMaskConfig, load_config

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "configs" / "synth_tiny_test.yaml"


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # Two cores are shared by the whole suite; results must not depend on the thread count.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 training and 2 validation images of 64x64 from the project's own generator."""
    from boxmask.data.synthetic import generate

    out = tmp_path_factory.mktemp("data") / "synth_tiny"
    generate(out, seed=0, num_train=8, num_val=2, image_size=64)
    return out


@pytest.fixture
def tiny_cfg(tiny_synth: Path, tmp_path: Path) -> Callable[..., BoxMaskConfig]:
    """``tiny_cfg("train.epochs=3", ...)``: configs/synth_tiny_test.yaml on the tiny dataset,
    writing into this test's tmp folder (``out`` subfolder unless overridden)."""

    def make(*overrides: str) -> BoxMaskConfig:
        base = [
            f"data.train_annotations={tiny_synth / 'annotations' / 'instances_train.json'}",
            f"data.train_images={tiny_synth / 'images' / 'train'}",
            f"data.val_annotations={tiny_synth / 'annotations' / 'instances_val.json'}",
            f"data.val_images={tiny_synth / 'images' / 'val'}",
            f"train.output_dir={tmp_path / 'out'}",
        ]
        return load_config(TINY_CONFIG, base + list(overrides))

    return make
