"""Mean mask IoU against the ground truth of a COCO set, per seen/unseen side, for tests that
hold a path (server, labeler, runtime) to the figures a model ships with."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np
from pycocotools.coco import COCO

# One copy of the two scores, shared with the scripts that write the figures these tests hold.
from boxmask.runtime.prompted_masks import box_rectangle, mask_iou


def mean_iou_by_side(coco: COCO, masks: Mapping[int, np.ndarray], seen_ids: Collection[int],
                     ann_ids: Collection[int] | None = None) -> dict[str, float]:
    """``{"seen", "unseen"}`` mean IoU of ``masks`` (annotation id -> HxW bool) with the true
    masks; an annotation without a mask counts as IoU 0, as a missed instance."""
    ious: dict[str, list[float]] = {"seen": [], "unseen": []}
    for ann_id in sorted(ann_ids if ann_ids is not None else coco.anns):
        ann = coco.anns[ann_id]
        truth = coco.annToMask(ann).astype(bool)
        mask = masks.get(ann_id)
        side = "seen" if ann["category_id"] in seen_ids else "unseen"
        ious[side].append(0.0 if mask is None else mask_iou(mask, truth))
    return {side: float(np.mean(v)) for side, v in ious.items() if v}


def box_as_mask_by_side(coco: COCO, seen_ids: Collection[int],
                        ann_ids: Collection[int] | None = None) -> dict[str, float]:
    """The baseline: each ground-truth box's rectangle taken as its mask."""
    rects = {}
    for ann_id in ann_ids if ann_ids is not None else coco.anns:
        ann = coco.anns[ann_id]
        image = coco.imgs[ann["image_id"]]
        rects[ann_id] = box_rectangle(ann["bbox"], image["height"], image["width"])
    return mean_iou_by_side(coco, rects, seen_ids, ann_ids)


def assert_matches_record(measured: Mapping[str, float], recorded: Mapping[str, float],
                          baseline: Mapping[str, float], recorded_baseline: Mapping[str, float],
                          tolerance: float, what: str) -> None:
    """Each side within ``tolerance`` of its recorded figure, and on the same side of the
    box-as-mask baseline (measured here) as the record says it is."""
    for side in ("seen", "unseen"):
        assert abs(measured[side] - recorded[side]) <= tolerance, (
            f"{what}: {side} mean IoU {measured[side]:.4f}, the model's evaluation.json says "
            f"{recorded[side]:.4f} (tolerance {tolerance})")
        assert abs(baseline[side] - recorded_baseline[side]) <= tolerance, (side, baseline)
        above = recorded[side] > recorded_baseline[side]
        assert (measured[side] > baseline[side]) == above, (
            f"{what}: {side} mean IoU {measured[side]:.4f} vs box as mask {baseline[side]:.4f}; "
            f"the record has it {'above' if above else 'below'}")
