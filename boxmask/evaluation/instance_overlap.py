"""Overlap scores of ground-truth instances and of detections, for the overlap subsets.

The measure itself, ``O_i = max_{j != i} |b_i ∩ s_j| / |b_i|``, is
:func:`boxmask.data.overlap.overlap_scores`; this module only applies it to a COCO dataset:

- a ground-truth instance's score uses every other annotation of its image (crowd regions
  included: they are objects covering the box too);
- a detection's score is what its box would score as an instance: the detection is taken to
  be *about* the non-crowd instance its box overlaps most (box IoU > 0), that instance is left
  out as its own mask, and every other mask of the image counts. A detection that overlaps no
  instance is about nothing, so every mask counts.

The detection scores decide which *unmatched* detections a subset ignores (see
:mod:`boxmask.evaluation.subset_eval`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from boxmask.data.overlap import overlap_scores


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """``[N, 4]`` COCO ``x, y, w, h`` -> ``x1, y1, x2, y2``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def _image_masks(coco: COCO, anns: Sequence[dict]) -> np.ndarray:
    """``[N, H, W]`` bool masks of ``anns`` (polygons, RLE or uncompressed RLE)."""
    if not anns:
        return np.zeros((0, 0, 0), dtype=bool)
    return np.stack([coco.annToMask(a).astype(bool) for a in anns])


def gt_overlaps(coco_gt: COCO, img_ids: Collection[int] | None = None) -> dict[int, float]:
    """``{annotation id: O}`` for every annotation of ``img_ids`` (default: all images)."""
    ids = coco_gt.getImgIds() if img_ids is None else list(img_ids)
    out: dict[int, float] = {}
    for img_id in ids:
        anns = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=[img_id], iscrowd=None))
        if not anns:
            continue
        boxes = xywh_to_xyxy(np.array([a["bbox"] for a in anns]))
        scores = overlap_scores(boxes, _image_masks(coco_gt, anns))
        out.update({a["id"]: float(s) for a, s in zip(anns, scores)})
    return out


def detection_overlaps(coco_gt: COCO, coco_dt: COCO,
                       img_ids: Collection[int] | None = None) -> dict[int, float]:
    """``{detection id: O}`` for the detections of ``coco_dt`` (boxes from their ``bbox``)."""
    ids = coco_gt.getImgIds() if img_ids is None else list(img_ids)
    out: dict[int, float] = {}
    for img_id in ids:
        dets = coco_dt.loadAnns(coco_dt.getAnnIds(imgIds=[img_id]))
        if not dets:
            continue
        anns = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=[img_id], iscrowd=None))
        if not anns:
            out.update({d["id"]: 0.0 for d in dets})
            continue
        info = coco_gt.imgs[img_id]
        masks = _image_masks(coco_gt, anns)
        gt_xywh = np.array([a["bbox"] for a in anns], dtype=np.float64)
        gt_boxes = xywh_to_xyxy(gt_xywh)
        dt_xywh = np.array([d["bbox"] for d in dets], dtype=np.float64)
        dt_boxes = xywh_to_xyxy(dt_xywh)
        ious = np.asarray(mask_utils.iou(dt_xywh.tolist(), gt_xywh.tolist(), [0] * len(anns)))
        ious = ious.reshape(len(dets), len(anns))
        crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns])
        ious[:, crowd] = 0.0
        own = np.where(ious.max(axis=1) > 0, ious.argmax(axis=1), -1)
        groups: dict[int, list[int]] = defaultdict(list)
        for k, j in enumerate(own):
            groups[int(j)].append(k)
        h, w = int(info["height"]), int(info["width"])
        for j, members in groups.items():
            others = [i for i in range(len(anns)) if i != j]
            # overlap_scores leaves out each box's own row; the detections get empty masks
            # so that they never count as each other's neighbours.
            boxes = np.concatenate([dt_boxes[members], gt_boxes[others]])
            stack = np.concatenate([np.zeros((len(members), h, w), dtype=bool), masks[others]])
            scores = overlap_scores(boxes, stack)[: len(members)]
            out.update({dets[k]["id"]: float(s) for k, s in zip(members, scores)})
    return out


def bin_ranges(edges: Sequence[float]) -> list[tuple[float, float]]:
    """``[0, 0.1, 0.3, 1.0001]`` -> ``[(0, 0.1), (0.1, 0.3), (0.3, 1.0001)]`` (``lo <= O < hi``)."""
    edges = [float(e) for e in edges]
    if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"overlap bins must be at least two increasing edges, got {edges}")
    return list(zip(edges[:-1], edges[1:]))


def outside(scores: dict[int, float], lo: float, hi: float) -> set[int]:
    """Ids whose score is not in ``[lo, hi)``."""
    return {i for i, s in scores.items() if not lo <= s < hi}
