"""int8 against fp32 on a trained model: the bundled demo model's int8 graphs, on the synthetic
validation split its `evaluation.json` was measured on, every ground-truth box with its label.

Bounded: the int8 masks' mean IoU with the fp32 masks, and each precision's mean IoU with the
truth, all within the stated tolerance of the shipped figures (two-sided: int8 graphs that
silently fell back to fp32 would agree too well). The fixture model of the other runtime tests is
barely trained, so its masks sit near the threshold and say nothing about int8's cost.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from boxmask.runtime import Predictor
from tests.conftest import BUNDLED_MODEL, FIGURE_TOLERANCE
from tests.mask_quality import mask_iou, mean_iou_by_side


def _masks(precision: str, coco: COCO, images: Path) -> dict[int, np.ndarray]:
    predictor = Predictor.from_dir(BUNDLED_MODEL, precision=precision)
    out = {}
    for img_id in sorted(coco.getImgIds()):
        anns = coco.imgToAnns[img_id]
        if not anns:
            continue
        key = predictor.set_image((images / coco.imgs[img_id]["file_name"]).read_bytes())
        boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                  a["bbox"][1] + a["bbox"][3]] for a in anns]
        pred = predictor.predict(boxes, labels=[a["category_id"] for a in anns], key=key)
        out.update({a["id"]: m for a, m in zip(anns, pred.masks)})
    return out


def test_int8_masks_stay_within_the_documented_distance_of_fp32(
        bundled_evaluation: dict, bundled_eval_set: Path) -> None:
    coco = COCO(str(bundled_eval_set / "annotations" / "instances_val.json"))
    images = bundled_eval_set / "images" / "val"
    fp32, int8 = _masks("fp32", coco, images), _masks("int8", coco, images)
    seen_ids = {c.id for c in Predictor.from_dir(BUNDLED_MODEL).card.categories if c.seen}

    agreement = float(np.mean([mask_iou(fp32[i], int8[i]) for i in fp32]))
    recorded = bundled_evaluation["int8"]["mask_iou_vs_fp32"]
    assert abs(agreement - recorded) <= FIGURE_TOLERANCE, (agreement, recorded)
    for precision, masks in (("fp32", fp32), ("int8", int8)):
        measured = mean_iou_by_side(coco, masks, seen_ids)
        for side, value in measured.items():
            expected = bundled_evaluation[precision]["mean_iou"][side]
            assert abs(value - expected) <= FIGURE_TOLERANCE, (precision, side, value, expected)
    print(f"int8 vs fp32 masks: mean IoU {agreement:.4f} (recorded {recorded:.4f})")
