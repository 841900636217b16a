"""`boxmask label` with a model that has the mask-quality head: each masked annotation says its
mask's review score (`boxmask.quality`, boxmask.runtime.review) and the report lists the masks worst first; with
`--tight-boxes`, each says the box of its mask's pixels (`boxmask.tight_bbox`) beside its
`bbox`. A model without the head gets the review score of its masks' statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from typer.testing import CliRunner

from boxmask.cli import app
from boxmask.labeling import LabelSettings
from boxmask.runtime import Predictor
from tests.labeling.conftest import label

BEFORE = {"status", "score", "model", "version", "mask_area"}  # a masked annotation's marker


def _masked(out: Path) -> list[tuple[int, dict]]:
    anns = json.loads(out.read_text())["annotations"]
    return [(i, a) for i, a in enumerate(anns) if a["boxmask"]["status"] == "masked"]


def _runtime(model_dir: Path, dataset: dict, ann: dict, coco: dict):
    """The runtime's prediction for one annotation's box and category, on its image."""
    image = next(im for im in coco["images"] if im["id"] == ann["image_id"])
    rgb = np.asarray(Image.open(dataset["images"] / image["file_name"]).convert("RGB"))
    x, y, w, h = ann["bbox"]
    name = next(c["name"] for c in coco["categories"] if c["id"] == ann["category_id"])
    p = Predictor.from_dir(model_dir)
    return p.predict([[x, y, x + w, y + h]], labels=[name], key=p.set_image(rgb))


def test_each_mask_carries_its_quality_and_the_report_lists_the_worst_first(
        dataset: dict, quality_model_dir: Path) -> None:
    report = label(dataset, quality_model_dir, workers=1)
    masked = _masked(dataset["out"])
    assert masked and all(set(a["boxmask"]) == BEFORE | {"quality"} for _, a in masked)
    boxes = json.loads(dataset["boxes"].read_text())
    for _, ann in masked[:4]:
        expected = _runtime(quality_model_dir, dataset, ann, boxes)
        assert ann["boxmask"]["quality"] == pytest.approx(float(expected.quality[0]), abs=1e-5)

    review = report["review"]
    quality = {i: a["boxmask"]["quality"] for i, a in masked}
    assert [r["index"] for r in review] == sorted(quality, key=lambda i: (quality[i], i))
    by_index = dict(masked)
    for entry in review:
        ann = by_index[entry["index"]]
        assert entry == {"index": entry["index"], "id": ann["id"], "image_id": ann["image_id"],
                         "category_id": ann["category_id"], "quality": quality[entry["index"]]}
    summary = report["summary"]["mask_quality"]
    assert summary["masks"] == len(masked) and summary["lowest"] == review[0]["quality"]
    on_disk = json.loads(dataset["out"].with_name("labels.report.json").read_text())
    assert on_disk["review"] == review


def test_pre_annotations_are_scored_and_reviewed_too(dataset: dict,
                                                     quality_model_dir: Path) -> None:
    coco = json.loads(dataset["boxes"].read_text())
    bare = coco["images"][0]["id"]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] != bare]
    boxes = dataset["boxes"].with_name("fewer.json")
    boxes.write_text(json.dumps(coco))
    report = label(dataset, quality_model_dir, coco=boxes, pre_annotate=True, workers=1,
                   settings=LabelSettings(detect_threshold=0.0))
    anns = json.loads(dataset["out"].read_text())["annotations"]
    pre = [i for i, a in enumerate(anns) if a["boxmask"].get("pre_annotated")]
    assert pre and all("quality" in anns[i]["boxmask"] for i in pre)
    reviewed = {r["index"]: r for r in report["review"]}
    assert all(reviewed[i].get("pre_annotated") is True for i in pre)
    assert len(reviewed) == report["summary"]["annotations_masked"] + len(pre)


def test_a_model_without_the_head_still_ranks_its_masks_for_review(dataset: dict,
                                                                    model_dir: Path) -> None:
    """The review score of the mask's own statistics (boxmask.runtime.review) needs no head."""
    report = label(dataset, model_dir, workers=1)
    masked = _masked(dataset["out"])
    assert masked and all(set(a["boxmask"]) == BEFORE | {"quality"} for _, a in masked)
    boxes = json.loads(dataset["boxes"].read_text())
    for _, ann in masked[:3]:
        expected = _runtime(model_dir, dataset, ann, boxes)
        assert np.isnan(expected.head_quality).all()
        assert ann["boxmask"]["quality"] == pytest.approx(float(expected.quality[0]), abs=1e-5)
    assert len(report["review"]) == report["summary"]["mask_quality"]["masks"] == len(masked)


@pytest.mark.parametrize("model", ["quality_model_dir", "model_dir"])
def test_tight_boxes_are_the_masks_boxes_beside_the_input_boxes(
        dataset: dict, model: str, request: pytest.FixtureRequest) -> None:
    model_dir = request.getfixturevalue(model)
    label(dataset, model_dir, workers=1, settings=LabelSettings(tight_boxes=True))
    inputs = json.loads(dataset["boxes"].read_text())["annotations"]
    masked = _masked(dataset["out"])
    assert masked
    for i, ann in masked:
        tight = ann["boxmask"]["tight_bbox"]
        rle = {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"]}
        assert tight == pytest.approx(mask_utils.toBbox(rle).tolist())
        assert ann["bbox"] == inputs[i]["bbox"]  # the drawn box stays as it was
        x, y, w, h = ann["bbox"]
        assert x - 1 < tight[0] and tight[0] + tight[2] < x + w + 1
        assert y - 1 < tight[1] and tight[1] + tight[3] < y + h + 1


def test_tight_boxes_from_the_command_line_and_the_journal_of_a_job_without_them(
        dataset: dict, quality_model_dir: Path) -> None:
    """`--tight-boxes` is part of the job (a resume must match it); off, the job's settings are
    written as before the option existed, so an older journal still resumes."""
    assert "tight_boxes" not in LabelSettings().to_dict()
    assert LabelSettings(tight_boxes=True).to_dict()["tight_boxes"] is True
    out = dataset["out"]
    out.parent.mkdir(parents=True, exist_ok=True)
    result = CliRunner().invoke(app, [
        "label", "--coco", str(dataset["boxes"]), "--images", str(dataset["images"]),
        "--out", str(out), "--model", str(quality_model_dir), "--tight-boxes", "--workers", "1",
        "--no-progress"], env={"COLUMNS": "300", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    assert "mask quality" in result.output
    report = json.loads(out.with_name("labels.report.json").read_text())
    assert report["job"]["settings"]["tight_boxes"] is True
    assert all("tight_bbox" in a["boxmask"] and "quality" in a["boxmask"]
               for _, a in _masked(out))
