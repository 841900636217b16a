"""Box-prompted evaluation: masks predicted from ground-truth boxes and labels.

This is what an annotator gets after drawing a box: the model is given every (non-crowd)
ground-truth box with its category and returns one mask for it. Two scores:

- **mean mask IoU** between each predicted mask and its instance's ground-truth mask, over
  unseen / seen / all instances, per overlap bin and per category;
- **mask AP** (COCO protocol) of the same masks taken as detections of the instance's category,
  each scored by the model's confidence in it (``score``; 1 when none is given). Boxes are
  given, so this AP measures mask quality alone: every instance has exactly one candidate.
  Overlap subsets ignore instances outside the subset, and an unmatched mask lies outside
  exactly when the instance it was prompted by does.

Every figure comes with the same figure for the **box as mask** (each prompt box's rectangle
taken as the mask, score 1) under ``box_baseline``, and the model's margin over it under
``margin_over_box``: a box-prompted mask is worth only what it adds to the box the annotator
already drew.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from boxmask.evaluation.instance_overlap import bin_ranges
from boxmask.evaluation.subset_eval import AP_NAMES, SubsetCOCOeval, coco_results, stats_to_dict

IOU_HISTOGRAM_EDGES: tuple[float, ...] = tuple(np.round(np.linspace(0.0, 1.0, 21), 2))


def _side_ids(cat_ids: Collection[int], seen_ids: Collection[int]) -> dict[str, list[int]]:
    seen = {int(c) for c in seen_ids}
    return {"all": sorted(cat_ids), "seen": sorted(c for c in cat_ids if c in seen),
            "unseen": sorted(c for c in cat_ids if c not in seen)}


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def box_as_mask_prompts(coco_gt: COCO, img_ids: Collection[int]) -> list[dict]:
    """The box baseline's prompted masks: each non-crowd instance's box rectangle (clipped to
    the image, as the prompts are) as a COCO RLE, score 1. Boxes with no area inside the image
    are left out (counted as missed, as the model's are)."""
    out = []
    for ann in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=sorted(img_ids), iscrowd=False)):
        info = coco_gt.imgs[ann["image_id"]]
        h, w = int(info["height"]), int(info["width"])
        x, y, bw, bh = (float(v) for v in ann["bbox"])
        x1, y1 = min(max(x, 0.0), w), min(max(y, 0.0), h)
        x2, y2 = min(max(x + bw, 0.0), w), min(max(y + bh, 0.0), h)
        if x2 <= x1 or y2 <= y1:
            continue
        xywh = np.array([[x1, y1, x2 - x1, y2 - y1]], dtype=np.float64)
        rle = mask_utils.frPyObjects(xywh, h, w)[0]
        out.append({"ann_id": int(ann["id"]), "segmentation": rle, "score": 1.0})
    return out


def _margin(model: dict, box: dict) -> dict:
    """Model minus box for the headline figures (mean IoU and mask AP, overall and on the
    overlapped subset); None where either side is undefined."""
    def diff(a, b):
        return None if a is None or b is None or a < 0 or b < 0 else a - b

    sides = ("all", "seen", "unseen")
    box_by_cat = {c["id"]: c for c in box.get("by_category", [])}
    return {
        "mean_iou": {s: diff(model["mean_iou"][s], box["mean_iou"][s]) for s in sides},
        "by_category": {c["name"]: diff(c["mean_iou"], box_by_cat.get(c["id"], {}).get("mean_iou"))
                        for c in model.get("by_category", [])},
        "mask_ap": {s: diff(model["mask_ap"][s]["AP"], box["mask_ap"][s]["AP"]) for s in sides},
        "overlapped": {
            "mean_iou": {s: diff(model["overlapped"]["mean_iou"][s],
                                 box["overlapped"]["mean_iou"][s]) for s in sides},
            "mask_ap": {s: diff(model["overlapped"]["mask_ap"][s]["AP"],
                                box["overlapped"]["mask_ap"][s]["AP"]) for s in sides}},
    }


def box_prompted_metrics(coco_gt: COCO, prompted: Sequence[Mapping], seen_ids: Collection[int],
                         gt_overlap: Mapping[int, float], overlap_bins: Sequence[float],
                         overlap_threshold: float = 0.3,
                         img_ids: Collection[int] | None = None,
                         box_baseline: bool = True) -> dict:
    """Mean IoU and mask AP of box-prompted masks, beside the box-as-mask baseline.

    Returns the figures of :func:`_prompted_metrics` for ``prompted``, plus (with
    ``box_baseline``) ``box_baseline`` (the same figures for the prompt boxes' rectangles) and
    ``margin_over_box`` (model minus box: mean IoU and mask AP, all and overlapped).
    """
    report = _prompted_metrics(coco_gt, prompted, seen_ids, gt_overlap, overlap_bins,
                               overlap_threshold, img_ids)
    if box_baseline:
        ids = report["img_ids"]
        box = _prompted_metrics(coco_gt, box_as_mask_prompts(coco_gt, ids), seen_ids, gt_overlap,
                                overlap_bins, overlap_threshold, ids)
        box.pop("img_ids")
        report["box_baseline"] = box
        report["margin_over_box"] = _margin(report, box)
    report.pop("img_ids")
    return report


def _prompted_metrics(coco_gt: COCO, prompted: Sequence[Mapping], seen_ids: Collection[int],
                      gt_overlap: Mapping[int, float], overlap_bins: Sequence[float],
                      overlap_threshold: float = 0.3,
                      img_ids: Collection[int] | None = None) -> dict:
    """Mean IoU and mask AP of box-prompted masks.

    Args:
        coco_gt: ground truth.
        prompted: one ``{"ann_id", "segmentation" (COCO RLE), "score" (optional)}`` per prompted
            instance; instances of the evaluated images without one count as missed.
        seen_ids: seen COCO category ids.
        gt_overlap: ``{annotation id: O}`` (see :func:`instance_overlap.gt_overlaps`).
        overlap_bins: bin edges for O.
        overlap_threshold: the overlapped subset is ``O >= overlap_threshold``.
        img_ids: the evaluated images (default: those of the prompted instances).
    """
    by_ann = {int(p["ann_id"]): p for p in prompted}
    unknown = [a for a in by_ann if a not in coco_gt.anns]
    if unknown:
        raise ValueError(f"box-prompted masks refer to unknown annotation ids {unknown[:5]}")
    if img_ids is None:
        img_ids = {coco_gt.anns[a]["image_id"] for a in by_ann}
    img_ids = sorted(int(i) for i in img_ids)
    stray = sorted({coco_gt.anns[a]["image_id"] for a in by_ann} - set(img_ids))
    if stray:
        raise ValueError(f"box-prompted masks on images {stray[:5]} outside the evaluated images")
    instances = [a for a in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=img_ids, iscrowd=False))]
    seen = {int(c) for c in seen_ids}

    ious: dict[int, float] = {}
    for ann in instances:
        p = by_ann.get(ann["id"])
        if p is None:
            ious[ann["id"]] = 0.0
            continue
        iou = mask_utils.iou([p["segmentation"]], [coco_gt.annToRLE(ann)], [0])
        ious[ann["id"]] = float(np.asarray(iou).reshape(-1)[0])

    def side_of(ann: dict) -> str:
        return "seen" if ann["category_id"] in seen else "unseen"

    def mean_iou(anns: Sequence[dict]) -> dict[str, float | None]:
        return {"all": _mean([ious[a["id"]] for a in anns]),
                "seen": _mean([ious[a["id"]] for a in anns if side_of(a) == "seen"]),
                "unseen": _mean([ious[a["id"]] for a in anns if side_of(a) == "unseen"])}

    def count(anns: Sequence[dict]) -> dict[str, int]:
        return {"all": len(anns), "seen": sum(side_of(a) == "seen" for a in anns),
                "unseen": sum(side_of(a) == "unseen" for a in anns)}

    # Mask AP of the same masks, as detections of the prompting instance's category.
    dets, source = [], []
    for ann in instances:
        p = by_ann.get(ann["id"])
        if p is None:
            continue
        dets.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                     "segmentation": p["segmentation"], "score": float(p.get("score", 1.0))})
        source.append(ann["id"])
    coco_dt = coco_results(coco_gt, dets, "segm")
    # loadRes numbers results 1..D in the order given.
    dt_source = {k + 1: ann_id for k, ann_id in enumerate(source)}
    ev = SubsetCOCOeval(coco_gt, coco_dt, "segm", img_ids=img_ids)
    sides = _side_ids(coco_gt.getCatIds(), seen)

    def ap(keep: set[int] | None, lo: float, hi: float, names: Sequence[str] = AP_NAMES
           ) -> dict[str, dict]:
        out_dt = None if keep is None else {d for d, a in dt_source.items()
                                            if not lo <= gt_overlap.get(a, 0.0) < hi}
        stats = ev.evaluate_subsets(sides, keep, out_dt, area_ranges=names == AP_NAMES)
        return {side: stats_to_dict(v, names) for side, v in stats.items()}

    def subset(lo: float, hi: float) -> list[dict]:
        return [a for a in instances if lo <= gt_overlap.get(a["id"], 0.0) < hi]

    overlapped = subset(overlap_threshold, np.inf)
    by_bin = []
    for lo, hi in bin_ranges(overlap_bins):
        members = subset(lo, hi)
        by_bin.append({"lo": lo, "hi": hi, "num_instances": count(members),
                       "mean_iou": mean_iou(members),
                       "mask_ap": ap({a["id"] for a in members}, lo, hi, AP_NAMES[:3])})

    # Per category: where a method's mean hides one shape that fails (below the box, say).
    by_category = []
    for cat_id in sorted(coco_gt.getCatIds()):
        members = [a for a in instances if a["category_id"] == cat_id]
        crowded = [a for a in members if gt_overlap.get(a["id"], 0.0) >= overlap_threshold]
        by_category.append({
            "id": int(cat_id), "name": coco_gt.cats[cat_id]["name"], "seen": cat_id in seen,
            "num_instances": len(members), "num_overlapped": len(crowded),
            "mean_iou": _mean([ious[a["id"]] for a in members]),
            "overlapped_mean_iou": _mean([ious[a["id"]] for a in crowded])})

    hist = {}
    for side in ("seen", "unseen"):
        values = [ious[a["id"]] for a in instances if side_of(a) == side]
        hist[side] = np.histogram(values, bins=IOU_HISTOGRAM_EDGES)[0].tolist()
    return {
        "img_ids": img_ids,
        "num_instances": count(instances),
        "num_prompted": len(dets),
        "mean_iou": mean_iou(instances),
        "mask_ap": ap(None, 0.0, np.inf),
        "overlapped": {"threshold": overlap_threshold, "num_instances": count(overlapped),
                       "mean_iou": mean_iou(overlapped),
                       "mask_ap": ap({a["id"] for a in overlapped}, overlap_threshold, np.inf)},
        "by_overlap_bin": by_bin,
        "by_category": by_category,
        "iou_histogram": {"edges": list(IOU_HISTOGRAM_EDGES), **hist},
    }
