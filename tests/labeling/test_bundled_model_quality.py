"""The batch labeler on the bundled demo model: masks for a box-only copy of a freshly generated
synthetic split, scored against that split's true masks.

The split is the one the model's `evaluation.json` was measured on (regenerated from its
recipe), so the labeler must reproduce the shipped figures within the stated tolerance and sit
on the same side of the box-as-mask baseline (measured here) as they do.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pycocotools.coco import COCO

from tests.conftest import BUNDLED_MODEL, FIGURE_TOLERANCE
from tests.labeling.conftest import label, strip_masks
from tests.mask_quality import assert_matches_record, box_as_mask_by_side, mean_iou_by_side


def test_labeling_a_box_only_set_with_the_bundled_model_gives_its_documented_quality(
        bundled_evaluation: dict, bundled_eval_set: Path, tmp_path: Path) -> None:
    truth_path = bundled_eval_set / "annotations" / "instances_val.json"
    truth = COCO(str(truth_path))
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps(strip_masks(json.loads(truth_path.read_text()))))
    images = tmp_path / "images"
    shutil.copytree(bundled_eval_set / "images" / "val", images)
    dataset = {"images": images, "boxes": boxes, "out": tmp_path / "out" / "labels.json"}

    report = label(dataset, BUNDLED_MODEL)
    out = COCO(str(dataset["out"]))
    masks = {a["id"]: out.annToMask(a).astype(bool) for a in out.dataset["annotations"]
             if "segmentation" in a}
    # Every box was masked but those the report names (an empty mask counts as IoU 0 below).
    assert len(masks) + len(report["not_masked"].get("empty_mask", [])) == len(truth.anns)
    card = json.loads((BUNDLED_MODEL / "model.json").read_text())
    seen_ids = {c["id"] for c in card["categories"] if c["seen"]}
    measured = mean_iou_by_side(truth, masks, seen_ids)
    baseline = box_as_mask_by_side(truth, seen_ids)
    print(f"labeled with {card['name']}: mean IoU {measured}, box as mask {baseline}")
    assert_matches_record(measured, bundled_evaluation["fp32"]["mean_iou"], baseline,
                          bundled_evaluation["box_as_mask"]["mean_iou"], FIGURE_TOLERANCE,
                          "boxmask label")
