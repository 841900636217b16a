"""`boxmask finetune`: one command from a checkpoint and a box-only COCO file to a served model.

Tiny models and a handful of iterations: these tests check the command's contract (data
checks, resume, evaluation beside the box, export with provenance, the served result), not
quality; benchmarks/finetune_quality.py measures that.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from boxmask.cli import app

runner = CliRunner()
# Two of the synthetic shapes renamed: categories the checkpoint has never heard of.
RENAMED = {"ring": "washer", "star": "asterisk"}


def _user_file(src: Path, dest: Path, keep_masks: bool, rename: dict[str, str] = RENAMED) -> Path:
    coco = json.loads(src.read_text())
    coco["categories"] = [{**c, "name": rename.get(c["name"], c["name"])} for c in coco["categories"]]
    if not keep_masks:
        coco["annotations"] = [{k: v for k, v in a.items() if k != "segmentation"}
                               for a in coco["annotations"]]
    dest.write_text(json.dumps(coco))
    return dest


@pytest.fixture(scope="module")
def user_data(tiny_dataset: Path, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("user")
    ann = tiny_dataset / "annotations"
    return {"train": _user_file(ann / "instances_train.json", root / "train.json", False),
            "val": _user_file(ann / "instances_val.json", root / "val.json", True),
            "images": tiny_dataset / "images" / "train", "val_images": tiny_dataset / "images" / "val"}


def _run(*args: str):
    return runner.invoke(app, ["finetune", *[str(a) for a in args]])


def _args(ckpt: Path, data: dict[str, Path], out: Path, *more: str) -> list:
    return ["--from", ckpt, "--coco", data["train"], "--images", data["images"],
            "--val-coco", data["val"], "--val-images", data["val_images"], "--out", out,
            "--iterations", "2", "--no-int8", *more]


def test_finetune_trains_evaluates_beside_the_box_exports_and_serves(tiny_checkpoint, user_data,
                                                                      tmp_path) -> None:
    from fastapi.testclient import TestClient

    from boxmask.server import create_app
    from tests.server.conftest import make_settings, png_bytes

    out = tmp_path / "run"
    result = _run(*_args(tiny_checkpoint, user_data, out))
    assert result.exit_code == 0, result.output
    assert f"boxmask serve --model-dir {out / 'model'}" in " ".join(result.output.split())
    card = json.loads((out / "model" / "model.json").read_text())
    names = {c["name"] for c in card["categories"]}
    assert set(RENAMED.values()) <= names
    provenance = card["provenance"]["finetune"]
    assert provenance["checkpoint"] == str(tiny_checkpoint) and provenance["iterations"] == 2
    assert len(provenance["checkpoint_sha256"]) == 64 and len(provenance["coco_sha256"]) == 64
    evaluation = json.loads((out / "evaluation.json").read_text())
    by_name = {c["name"]: c for c in evaluation["by_category"]}
    assert by_name["washer"]["had_masks"] is False and by_name["washer"]["box_mean_iou"] > 0
    with TestClient(create_app(make_settings(out / "model"))) as client:
        import base64

        response = client.post("/v1/segment", json={
            "image": base64.b64encode(png_bytes()).decode(), "boxes": [[10, 10, 60, 50]],
            "labels": ["washer"]})
        assert response.status_code == 200, response.text
        assert response.json()["instances"][0]["label"] == "washer"
    # The same request again resumes (nothing left to train); another one is refused.
    again = _run(*_args(tiny_checkpoint, user_data, out))
    assert again.exit_code == 0, again.output
    other = _run(*_args(tiny_checkpoint, user_data, out)[:-3], "--iterations", "3")
    assert other.exit_code != 0 and "another request" in other.output


@pytest.mark.parametrize("problem", ["empty category", "missing image", "not a checkpoint",
                                     "other architecture"])
def test_bad_input_gets_one_line_and_no_model(problem: str, tiny_checkpoint, user_data,
                                             tmp_path) -> None:
    data, ckpt, more = dict(user_data), tiny_checkpoint, []
    if problem == "empty category":
        coco = json.loads(user_data["train"].read_text())
        coco["categories"].append({"id": 99, "name": "unicorn"})
        data["train"] = tmp_path / "t.json"
        data["train"].write_text(json.dumps(coco))
    elif problem == "missing image":
        coco = json.loads(user_data["train"].read_text())
        coco["images"][0]["file_name"] = "nowhere.png"
        data["train"] = tmp_path / "t.json"
        data["train"].write_text(json.dumps(coco))
    elif problem == "not a checkpoint":
        ckpt = tmp_path / "c.pt"
        ckpt.write_bytes(b"not a checkpoint")
    else:
        more = ["model.fpn_channels=24"]
    result = _run(*_args(ckpt, data, tmp_path / "run"), *more)
    assert result.exit_code != 0
    assert "Traceback" not in result.output and "error: " in result.output
    assert not (tmp_path / "run" / "model").exists()


def test_a_validation_set_without_masks_trains_and_exports_and_says_so(tiny_checkpoint, user_data,
                                                                      tmp_path) -> None:
    data = {**user_data, "val": _user_file(user_data["val"], tmp_path / "v.json", False, {})}
    out = tmp_path / "run"
    result = _run(*_args(tiny_checkpoint, data, out)[:-3], "--iterations", "1", "--no-int8")
    assert result.exit_code == 0, result.output
    assert "quality was not measured" in result.output
    assert (out / "model" / "model.json").is_file() and not (out / "evaluation.json").exists()


@pytest.mark.slow
def test_finetune_from_an_imported_torchvision_checkpoint(tiny_dataset, tmp_path) -> None:
    """R50-FPN v1 as `boxmask import torchvision` writes it (random seeded weights): COCO's
    categories matched by name (two of the shapes renamed to COCO's), the rest new."""
    from boxmask.model.torchvision_import import import_torchvision
    from tests.torchvision_models import import_overrides, write_torchvision_weights

    weights = tmp_path / "maskrcnn.pth"
    write_torchvision_weights("maskrcnn_resnet50_fpn", weights)
    ckpt = tmp_path / "coco_r50.pt"
    import_torchvision(weights, "maskrcnn_resnet50_fpn", ckpt, import_overrides())
    coco_names = {"disc": "sports ball", "square": "tv"}
    ann = tiny_dataset / "annotations"
    data = {"train": _user_file(ann / "instances_train.json", tmp_path / "t.json", False, coco_names),
            "val": _user_file(ann / "instances_val.json", tmp_path / "v.json", True, coco_names),
            "images": tiny_dataset / "images" / "train", "val_images": tiny_dataset / "images" / "val"}
    out = tmp_path / "run"
    result = _run(*_args(ckpt, data, out)[:-3], "--iterations", "1", "--no-int8")
    assert result.exit_code == 0, result.output
    card = json.loads((out / "model" / "model.json").read_text())
    assert {"sports ball", "tv", "hexagon"} <= {c["name"] for c in card["categories"]}
    assert card["backbone"] == "resnet50_fpn"


def test_keep_categories_keeps_the_checkpoints_categories_the_file_lacks(tiny_checkpoint, user_data,
                                                                         tmp_path) -> None:
    """The Label Studio loop's project versions: a file that names only some categories still
    gives a model that knows every category of the checkpoint, and the file's new ones."""
    coco = json.loads(user_data["train"].read_text())
    keep = {c["id"] for c in coco["categories"] if c["name"] in ("disc", "washer")}
    coco["categories"] = [c for c in coco["categories"] if c["id"] in keep]
    coco["annotations"] = [a for a in coco["annotations"] if a["category_id"] in keep]
    data = {**user_data, "train": tmp_path / "two.json"}
    data["train"].write_text(json.dumps(coco))
    out = tmp_path / "run"
    result = _run(*_args(tiny_checkpoint, data, out)[:-5], "--out", out, "--iterations", "1",
                  "--no-int8", "--keep-categories")
    assert result.exit_code == 0, result.output
    names = {c["name"] for c in json.loads((out / "model" / "model.json").read_text())["categories"]}
    assert {"disc", "washer", "square", "ring", "star"} <= names


def test_the_recipe_refines_with_the_crf_and_serves_box_taught_masks_fitted(
        tiny_checkpoint, user_data, tmp_path, monkeypatch) -> None:
    """The recipe's CRF step and its served masks: the pseudo-masks refined by the CRF with or
    without the optional pydensecrf (the runtime's numpy CRF stands in), the bundle serving
    box-taught categories fitted and every mask refined by the CRF."""
    import builtins
    import json

    import numpy as np
    import torch

    from boxmask.model.checkpoint import load_checkpoint
    from boxmask.model.pseudo_masks import dense_crf
    from boxmask.runtime.crf import crf_refine
    from boxmask.training import finetune as ft

    request = ft.FinetuneRequest(checkpoint=tiny_checkpoint, coco=user_data["train"],
                                 images=user_data["images"], out=tmp_path / "a")
    cfg, _ = ft.build_config(request, load_checkpoint(tiny_checkpoint), 8)
    assert cfg.model.sigma == "crf" and cfg.model.served_mask_fit == "box"
    assert cfg.model.served_crf

    # Without pydensecrf, the training sigma's CRF is the runtime's.
    real_import = builtins.__import__

    def no_pydensecrf(name, *args, **kwargs):
        if name.startswith("pydensecrf"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    rng = np.random.default_rng(0)
    probs = rng.random((28, 28)).astype(np.float32)
    image = rng.integers(0, 255, (28, 28, 3), dtype=np.uint8)
    monkeypatch.setattr(builtins, "__import__", no_pydensecrf)
    np.testing.assert_array_equal(dense_crf(probs, image), crf_refine(probs[None], image[None])[0])
    monkeypatch.undo()

    out = tmp_path / "run"
    ft.finetune(ft.FinetuneRequest(checkpoint=tiny_checkpoint, coco=user_data["train"],
                                   images=user_data["images"], out=out, iterations=2,
                                   int8=False), say=lambda _: None)
    trained = torch.load(out / "train" / "checkpoint_last.pt", map_location="cpu",
                         weights_only=False)
    assert trained["config"]["model"]["sigma"] == "crf"
    assert trained["config"]["model"]["served_mask_fit"] == "box"
    assert trained["config"]["model"]["served_crf"] is True
    assert json.loads((out / "model" / "model.json").read_text())["mask_refine"] == "crf"
