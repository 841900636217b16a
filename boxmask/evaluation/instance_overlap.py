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

import itertools
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

# _pixel_coverage is the definition of |b ∩ s| on the pixel grid; sharing it keeps detection
# and instance scores measured alike.
from boxmask.data.overlap import _pixel_coverage, overlap_scores


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
        out.update({a["id"]: float(s) for a, s in zip(anns, scores, strict=True)})
    return out


def _mask_areas_in_box(box: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """``[N]`` area of each mask inside ``box`` (xyxy), partial pixels counted as
    :func:`~boxmask.data.overlap.overlap_scores` counts them."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if x2 <= x1 or y2 <= y1 or len(masks) == 0:
        return np.zeros(len(masks))
    x0, wx = _pixel_coverage(x1, x2, masks.shape[2])
    y0, wy = _pixel_coverage(y1, y2, masks.shape[1])
    crop = masks[:, y0:y0 + wy.size, x0:x0 + wx.size].astype(np.float64)
    return np.einsum("nyx,y,x->n", crop, wy, wx)


def detection_overlaps(coco_gt: COCO, detections: Sequence[Mapping],
                       img_ids: Collection[int] | None = None) -> dict[int, float]:
    """``{detection id: O}`` for COCO results, ids numbered ``1..D`` in list order as
    ``COCO.loadRes`` numbers them. A detection's box is its ``bbox`` (the box around its mask
    when it has none)."""
    chosen = None if img_ids is None else {int(i) for i in img_ids}
    per_image: dict[int, list[tuple[int, list[float]]]] = defaultdict(list)
    for k, det in enumerate(detections):
        img_id = int(det["image_id"])
        if chosen is not None and img_id not in chosen:
            continue
        bbox = det.get("bbox")
        if bbox is None:
            bbox = mask_utils.toBbox(det["segmentation"]).tolist()
        per_image[img_id].append((k + 1, [float(v) for v in bbox]))
    out: dict[int, float] = {}
    for img_id, dets in per_image.items():
        anns = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=[img_id], iscrowd=None))
        if not anns:
            out.update({d: 0.0 for d, _ in dets})
            continue
        masks = _image_masks(coco_gt, anns)
        gt_xywh = [a["bbox"] for a in anns]
        dt_xywh = np.array([b for _, b in dets], dtype=np.float64)
        ious = np.asarray(mask_utils.iou(dt_xywh.tolist(), gt_xywh, [0] * len(anns)))
        ious = ious.reshape(len(dets), len(anns))
        crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns])
        ious[:, crowd] = 0.0
        dt_ids = [d for d, _ in dets]
        for k, (det_id, box) in enumerate(zip(dt_ids, xywh_to_xyxy(dt_xywh), strict=True)):
            area = (box[2] - box[0]) * (box[3] - box[1])
            if area <= 0:
                out[det_id] = 0.0
                continue
            inside = _mask_areas_in_box(box, masks)
            if ious[k].max() > 0:
                inside[int(ious[k].argmax())] = 0.0  # the instance it is about is not "other"
            out[det_id] = float(min(inside.max() / area, 1.0))
    return out


def bin_ranges(edges: Sequence[float]) -> list[tuple[float, float]]:
    """``[0, 0.1, 0.3, 1.0001]`` -> ``[(0, 0.1), (0.1, 0.3), (0.3, 1.0001)]`` (``lo <= O < hi``)."""
    edges = [float(e) for e in edges]
    if len(edges) < 2 or any(b <= a for a, b in itertools.pairwise(edges)):
        raise ValueError(f"overlap bins must be at least two increasing edges, got {edges}")
    return list(itertools.pairwise(edges))


def outside(scores: dict[int, float], lo: float, hi: float) -> set[int]:
    """Ids whose score is not in ``[lo, hi)``."""
    return {i for i, s in scores.items() if not lo <= s < hi}
