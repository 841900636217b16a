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

    from boxmask.training.trainer import train

    torch.set_num_threads(1)
    return train(tiny_train_config(tiny_dataset, tmp_path_factory.mktemp("tiny_run")))


def tiny_train_config(dataset: Path, output_dir: Path, *overrides: str):
    """configs/synth_tiny_test.yaml on ``dataset`` (``tiny_dataset``), two training steps into
    ``output_dir``, then ``overrides`` (dotted, as on the CLI)."""
    from boxmask.config import load_config

    return load_config(TINY_CONFIG, [
        f"data.train_annotations={dataset / 'annotations' / 'instances_train.json'}",
        f"data.train_images={dataset / 'images' / 'train'}",
        f"data.val_annotations={dataset / 'annotations' / 'instances_val.json'}",
        f"data.val_images={dataset / 'images' / 'val'}",
        f"train.output_dir={output_dir}",
        "train.epochs=1", "train.max_iters_per_epoch=2", *overrides,
    ])


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
def quality_model_dir(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model with the mask-quality head (``model.mask_quality=true``), trained as
    ``tiny_checkpoint`` and exported with its int8 graphs: both decoders output ``quality``
    (contract §4). Barely trained, so every mask's quality sits near 0.5, a little apart:
    enough to order masks, not to judge them. Read-only."""
    import torch

    from boxmask.export.exporter import export_checkpoint
    from boxmask.training.trainer import train

    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("quality_run")
    ckpt = train(tiny_train_config(tiny_dataset, run, "model.mask_quality=true"))
    out = tmp_path_factory.mktemp("exported_quality") / "synth-tiny-quality"
    export_checkpoint(ckpt, out, name="synth-tiny-quality", int8=True)
    return out


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


# -- the bundled demo model and the figures it ships with ------------------------------------
BUNDLED_MODEL = REPO / "boxmask" / "assets" / "models" / "synthetic-demo"
# How far a re-measured mean IoU may sit from the figure in the model's evaluation.json. The
# same model on the same split gives the same masks up to floating-point rounding (ONNX Runtime
# version, CPU kernels), which moves a mask by a pixel here and there: about 1e-5 on a mean over
# ~570 masks. A regression (a shifted paste, a wrong class channel, a broken int8 graph) moves
# it by 0.05 or more.
FIGURE_TOLERANCE = 0.01


@pytest.fixture(scope="session")
def bundled_evaluation() -> dict:
    """The demo model's `evaluation.json` (scripts/evaluate_demo_model.py), checked to belong
    to the ONNX files shipped beside it."""
    import json

    path = BUNDLED_MODEL / "evaluation.json"
    rebuild = "run `python scripts/evaluate_demo_model.py` (scripts/build_demo_model.sh does)"
    assert path.is_file(), f"the bundled model ships no {path.name}: {rebuild}"
    record = json.loads(path.read_text())
    card = json.loads((BUNDLED_MODEL / "model.json").read_text())
    shipped = {k: v["sha256"] for k, v in card["files"].items()}
    assert record["model_files"] == shipped, f"{path.name} was measured on other files: {rebuild}"
    return record


@pytest.fixture(scope="session")
def bundled_eval_set(bundled_evaluation: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic split the demo model's figures were measured on, generated afresh from
    the recipe in its `evaluation.json` (a split depends only on seed, split and index)."""
    from boxmask.data.synthetic import SUPPORTED_VERSIONS, generate

    recipe = bundled_evaluation["dataset"]
    assert recipe["generator_version"] in SUPPORTED_VERSIONS, (
        f"the demo model's figures were measured on generator version "
        f"{recipe['generator_version']}, which this generator no longer builds: re-run "
        "scripts/evaluate_demo_model.py")
    assert recipe["split"] == "val"
    out = tmp_path_factory.mktemp("bundled_eval") / "synthetic"
    generate(out, seed=recipe["seed"], num_train=1, num_val=recipe["images"],
             image_size=recipe["image_size"], scene=recipe["scene"],
             version=recipe["generator_version"])
    return out
