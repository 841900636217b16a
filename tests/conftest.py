"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "configs" / "synth_tiny_test.yaml"


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic dataset at 64x64: 8 training and 4 validation images."""
    from boxmask.data.synthetic import generate

    out = tmp_path_factory.mktemp("shared_data") / "synth_tiny"
    generate(out, seed=0, num_train=8, num_val=4, image_size=64)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A teacher-student checkpoint of configs/synth_tiny_test.yaml after a few iterations.

    Trained, but barely: its masks are not good; tests may rely on the pipeline agreeing with
    itself (eager vs exported vs served), not on quality.
    """
    import torch

    from boxmask.config import load_config
    from boxmask.training.trainer import train

    torch.set_num_threads(1)
    d = tiny_dataset
    cfg = load_config(TINY_CONFIG, [
        f"data.train_annotations={d / 'annotations' / 'instances_train.json'}",
        f"data.train_images={d / 'images' / 'train'}",
        f"data.val_annotations={d / 'annotations' / 'instances_val.json'}",
        f"data.val_images={d / 'images' / 'val'}",
        f"train.output_dir={tmp_path_factory.mktemp('tiny_run')}",
        "train.epochs=1", "train.max_iters_per_epoch=2",
    ])
    return train(cfg)


@pytest.fixture(scope="session")
def exported_model_dir(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_checkpoint`` through the real exporter (with its parity check), read-only."""
    from boxmask.export.exporter import export_checkpoint

    out = tmp_path_factory.mktemp("exported") / "synth-tiny"
    export_checkpoint(tiny_checkpoint, out, name="synth-tiny")
    return out


@pytest.fixture(scope="session")
def model_dir(exported_model_dir: Path) -> Path:
    """An exported model directory (docs/contracts.md §4) for runtime, server, labeling and
    integration tests: the real exporter's output for a tiny, barely trained model.
    Read-only: copy it to modify it."""
    return exported_model_dir


@pytest.fixture(scope="session")
def contract_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tests/contract_model.py`'s hand-built directory: random weights, NOT a trained model,
    with non-contiguous category ids and a small resize rule that runtime unit tests rely on."""
    from tests.contract_model import build_contract_model_dir

    return build_contract_model_dir(tmp_path_factory.mktemp("contract_model"))


def copy_without_detector(model_dir: Path, dest: Path) -> Path:
    """A copy of an exported model directory with its detector graphs removed from the files
    and the card, as `boxmask export` of a model without a detector would leave it."""
    import json
    import shutil

    shutil.copytree(model_dir, dest)
    card = json.loads((dest / "model.json").read_text())
    for key in [k for k in card["files"] if k.startswith("detector")]:
        (dest / card["files"].pop(key)["path"]).unlink()
    (dest / "model.json").write_text(json.dumps(card))
    return dest
