"""Where false positives come from: background, a seen object, or an unseen object.

A false positive here is what COCO counts as one at IoU 0.5 (area range ``all``, COCO's
at most 100 detections per image and category): a detection that matches no instance of its
category and is not ignored (crowd). Each one is attributed to the ground-truth instance of
**any** category that it overlaps most (mask IoU for mask detections, box IoU for boxes);
if that IoU is at least ``min_iou`` (0.1) the false positive belongs to that instance's side,
``seen`` or ``unseen``, otherwise to ``background``. The instance it overlaps cannot be a correct
match: a false positive has none. So a detection that lands on an object of another class, a
duplicate on an already matched object, or a badly localised mask all count as hitting an
object; only detections that touch no object count as background.

Counts are given for detections with ``score >= score_threshold`` (0.5: what a user sees
by default) and for all detections the evaluation kept.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from boxmask.evaluation.subset_eval import SubsetCOCOeval

SOURCES: tuple[str, ...] = ("background", "seen", "unseen")


def false_positive_sources(ev: SubsetCOCOeval, seen_ids: Collection[int],
                           iou_threshold: float = 0.5, min_iou: float = 0.1) -> list[dict]:
    """One record per false positive of the plain COCO evaluation (all categories and instances).

    Returns:
        ``[{"id", "image_id", "category_id", "score", "predicted": "seen"|"unseen",
        "source": "background"|"seen"|"unseen", "iou": float}]``.
    """
    thresholds = np.asarray(ev.params.iouThrs)
    hit = np.flatnonzero(np.isclose(thresholds, iou_threshold))
    if hit.size == 0:
        raise ValueError(f"IoU {iou_threshold} is not one of the evaluation's thresholds {thresholds}")
    t = int(hit[0])
    if not ev.last_subset_is_plain or sorted(ev.params.catIds) != sorted(ev.cocoGt.getCatIds()):
        ev.evaluate_subset(ev.cocoGt.getCatIds())
    seen = {int(c) for c in seen_ids}
    coco_gt: COCO = ev.cocoGt
    coco_dt: COCO = ev.cocoDt
    segm = ev.params.iouType == "segm"
    records: list[dict] = []
    for e in ev.per_image_results():
        fp_ids = [d for d, m, ig in zip(e["dtIds"], e["dtMatches"][t], e["dtIgnore"][t],
                                        strict=True)
                  if m == 0 and not ig]
        if not fp_ids:
            continue
        anns = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=[e["image_id"]], iscrowd=None))
        dets = coco_dt.loadAnns(fp_ids)
        if anns:
            if segm:
                gt_regions = [coco_gt.annToRLE(a) for a in anns]
                dt_regions = [d["segmentation"] for d in dets]
            else:
                gt_regions = [a["bbox"] for a in anns]
                dt_regions = [d["bbox"] for d in dets]
            ious = np.asarray(mask_utils.iou(dt_regions, gt_regions, [0] * len(anns)))
            ious = ious.reshape(len(dets), len(anns))
        else:
            ious = np.zeros((len(dets), 0))
        for k, d in enumerate(dets):
            best = float(ious[k].max()) if ious.shape[1] else 0.0
            if best >= min_iou:
                cat = anns[int(ious[k].argmax())]["category_id"]
                source = "seen" if cat in seen else "unseen"
            else:
                source = "background"
            records.append({
                "id": int(d["id"]), "image_id": int(d["image_id"]),
                "category_id": int(d["category_id"]), "score": float(d["score"]),
                "predicted": "seen" if d["category_id"] in seen else "unseen",
                "source": source, "iou": best,
            })
    return records


def summarize_sources(records: Iterable[dict], score_threshold: float | None) -> dict:
    """Counts and shares of false-positive sources, overall and by predicted side.

    ``score_threshold=None`` keeps every record.
    """
    kept = [r for r in records if score_threshold is None or r["score"] >= score_threshold]

    def tally(rows: list[dict]) -> dict:
        counts = {s: sum(1 for r in rows if r["source"] == s) for s in SOURCES}
        total = len(rows)
        return {"total": total, "counts": counts,
                "shares": {s: (counts[s] / total if total else None) for s in SOURCES}}

    return {
        "score_threshold": score_threshold,
        **tally(kept),
        "by_predicted": {side: tally([r for r in kept if r["predicted"] == side])
                         for side in ("seen", "unseen")},
    }
