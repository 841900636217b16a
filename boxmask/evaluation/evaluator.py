"""The whole evaluation report from predictions, without a model.

:func:`evaluate_predictions` takes COCO ground truth and COCO-format results (what
``boxmask eval`` writes to ``detections.json``, or what the benchmark produces) and returns the
report: box and mask AP on unseen / seen / all categories, on the overlapped subset and per
overlap bin, the sources of false positives and, when box-prompted masks are given, their IoU
and AP. Everything is COCO's protocol (pycocotools) with the subset rule of
:mod:`boxmask.evaluation.subset_eval`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np
from pycocotools.coco import COCO

from boxmask.evaluation.box_prompted import box_prompted_metrics
from boxmask.evaluation.false_positives import false_positive_sources, summarize_sources
from boxmask.evaluation.instance_overlap import bin_ranges, detection_overlaps, gt_overlaps, outside
from boxmask.evaluation.subset_eval import AP_NAMES, SubsetCOCOeval, coco_results, stats_to_dict

DEFAULT_OVERLAP_BINS: tuple[float, ...] = (0.0, 0.1, 0.3, 0.5, 0.7, 1.0001)
SIDES: tuple[str, ...] = ("all", "seen", "unseen")
BIN_AP_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75")
# What the numbers mean, stored in every report so a reader of report.json needs no source.
PROTOCOL: dict[str, str] = {
    "ap": "COCO protocol (pycocotools COCOeval): IoU 0.50:0.95, 101 recall points, 100 "
          "detections per image; seen/unseen/all = params.catIds restricted to those categories",
    "overlap": "O_i = max_j |b_i ∩ s_j| / |b_i|: b_i the instance's box, s_j the mask of another "
               "instance of the image",
    "subsets": "instances outside an overlap subset are ignored as COCO ignores crowd regions "
               "(a detection matched to one is neither TP nor FP); an unmatched detection is "
               "ignored when the overlap of its own box (its best-IoU instance left out) lies "
               "outside the subset, as COCO does with area ranges",
    "false_positives": "unmatched, non-ignored detections at IoU 0.5; attributed to the seen/"
                       "unseen side of the instance (any category) they overlap most when that "
                       "IoU is >= 0.1, else to background",
    "box_prompted": "one mask per non-crowd ground-truth box and label; mean mask IoU, and mask "
                    "AP with each mask scored by its mean probability over its pixels",
}


def _sides(cat_ids: Collection[int], seen_ids: Collection[int]) -> dict[str, list[int]]:
    seen = set(seen_ids)
    return {"all": sorted(cat_ids), "seen": sorted(c for c in cat_ids if c in seen),
            "unseen": sorted(c for c in cat_ids if c not in seen)}


def _instance_counts(coco_gt: COCO, ann_ids: Collection[int], seen_ids: Collection[int]) -> dict:
    seen = set(seen_ids)
    cats = [coco_gt.anns[a]["category_id"] for a in ann_ids]
    n_seen = sum(c in seen for c in cats)
    return {"all": len(cats), "seen": n_seen, "unseen": len(cats) - n_seen}


def evaluate_predictions(
    coco_gt: COCO,
    detections: Sequence[Mapping],
    seen_ids: Collection[int],
    *,
    img_ids: Collection[int] | None = None,
    overlap_threshold: float = 0.3,
    overlap_bins: Sequence[float] = DEFAULT_OVERLAP_BINS,
    fp_score_threshold: float = 0.5,
    iou_types: Sequence[str] = ("segm", "bbox"),
    box_prompted: Sequence[Mapping] | None = None,
) -> dict:
    """Evaluate COCO-format detections (and optionally box-prompted masks).

    Args:
        coco_gt: ground truth with every category (seen and unseen) and every mask.
        detections: COCO results: ``image_id``, ``category_id``, ``score``, ``bbox`` (xywh)
            and ``segmentation`` (RLE) for mask evaluation.
        seen_ids: COCO ids of the categories whose masks were used in training.
        img_ids: images to evaluate (default: all of ``coco_gt``); detections elsewhere are
            not counted.
        overlap_threshold: the overlapped subset is ``O >= overlap_threshold``.
        overlap_bins: edges of the overlap bins (``lo <= O < hi``).
        fp_score_threshold: score above which false positives are counted in the main
            attribution (all scores are reported too).
        iou_types: which of ``"segm"`` and ``"bbox"`` to evaluate; false positives are
            attributed on the first one.
        box_prompted: ``[{"ann_id", "segmentation", "score"}]`` masks predicted from the
            ground-truth boxes and labels (see :mod:`boxmask.evaluation.box_prompted`).

    Returns:
        The report dict (JSON-able); AP numbers in [0, 1], ``None`` where a subset is empty.
    """
    cat_ids = coco_gt.getCatIds()
    unknown_seen = {int(c) for c in seen_ids} - set(cat_ids)
    if unknown_seen:
        raise ValueError(f"seen category ids {sorted(unknown_seen)} are not in the ground truth")
    img_ids = sorted(coco_gt.getImgIds() if img_ids is None else {int(i) for i in img_ids})
    missing = set(img_ids) - set(coco_gt.getImgIds())
    if missing:
        raise ValueError(f"image ids {sorted(missing)[:5]} are not in the ground truth")
    chosen = set(img_ids)
    detections = [d for d in detections if int(d["image_id"]) in chosen]
    bins = bin_ranges(overlap_bins)
    sides = _sides(cat_ids, seen_ids)

    overlap = gt_overlaps(coco_gt, img_ids)
    instances = [a for a in coco_gt.getAnnIds(imgIds=img_ids, iscrowd=False)]
    overlapped = {a for a in instances if overlap[a] >= overlap_threshold}
    in_bin = [{a for a in instances if lo <= overlap[a] < hi} for lo, hi in bins]

    report: dict = {
        "protocol": PROTOCOL,
        "num_images": len(img_ids),
        "num_detections": len(detections),
        "categories": {"seen": sides["seen"], "unseen": sides["unseen"]},
        "overlap": {
            "threshold": overlap_threshold,
            "bins": [float(e) for e in overlap_bins],
            "num_instances": _instance_counts(coco_gt, instances, seen_ids),
            "num_overlapped": _instance_counts(coco_gt, overlapped, seen_ids),
            "num_per_bin": [_instance_counts(coco_gt, members, seen_ids) for members in in_bin],
            "mean": float(np.mean([overlap[a] for a in instances])) if instances else None,
        },
    }
    # Detection ids are 1..D in list order for every IoU type (COCO.loadRes numbers them so).
    dt_overlap = detection_overlaps(coco_gt, detections, img_ids)
    for k, iou_type in enumerate(iou_types):
        ev = SubsetCOCOeval(coco_gt, coco_results(coco_gt, detections, iou_type), iou_type,
                            img_ids=img_ids)
        section: dict = {side: stats_to_dict(stats, AP_NAMES)
                         for side, stats in ev.evaluate_subsets(sides).items()}
        if k == 0:
            # Read from the plain evaluation's matches, before any subset replaces them.
            records = false_positive_sources(ev, seen_ids, iou_threshold=0.5, min_iou=0.1)
            report["false_positives"] = {
                "iou_type": iou_type, "iou_threshold": 0.5, "min_overlap_iou": 0.1,
                "thresholded": summarize_sources(records, fp_score_threshold),
                "all_scores": summarize_sources(records, None),
            }
        stats = ev.evaluate_subsets(sides, overlapped, outside(dt_overlap, overlap_threshold, np.inf))
        section["overlapped"] = {side: stats_to_dict(v, AP_NAMES) for side, v in stats.items()}
        section["by_overlap_bin"] = []
        for (lo, hi), members in zip(bins, in_bin, strict=True):
            # Bins report AP, AP50, AP75 only: skipping COCO's size ranges quarters the cost.
            stats = ev.evaluate_subsets(sides, members, outside(dt_overlap, lo, hi),
                                        area_ranges=False)
            section["by_overlap_bin"].append(
                {"lo": lo, "hi": hi,
                 "ap": {side: stats_to_dict(v, BIN_AP_NAMES) for side, v in stats.items()}})
        report[iou_type] = section
    if box_prompted is not None:
        report["box_prompted"] = box_prompted_metrics(
            coco_gt, box_prompted, seen_ids, overlap, overlap_bins, overlap_threshold, img_ids)
    return report
