"""One image's result: encode it once, decode its boxes (in runs the predictor's decoder
budget allows, `LabelSettings.batch_bytes`), encode the masks.

Both engines call `label_image`, so the local and the Ray engine give the same bytes. A result
is a plain JSON-able dict (Python ints, floats, strings, lists): what goes into the resume
journal is exactly what the output is built from.

Result record::

    {"index": 3, "image_id": 17, "status": "ok",
     "masks": [{"ann": 41, "segmentation": {...}, "score": 0.93, "area": 812,
                "quality": 0.88, "tight_bbox": [x, y, w, h]}],
     "dropped": [[42, "below_min_score"]],
     "detections": [{"category_id": 2, "bbox": [x, y, w, h], "segmentation": ..., "score": ...,
                     "area": ..., "quality": ..., "tight_bbox": ...}]}

or ``{"index", "image_id", "status": "skipped", "reason", "detail"}`` for an unusable image.
``ann`` is a position in the input's ``annotations`` list; ``category_id`` is the model's.
``quality``: the mask's review score (boxmask.runtime.review);
``tight_bbox`` (the box of the mask's pixels, COCO's ``[x, y, width, height]``) only with
``LabelSettings.tight_boxes``.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from boxmask.labeling.image_reader import ImageSkip
from boxmask.labeling.options import LabelSettings
from boxmask.labeling.plan import ImageTask
from boxmask.runtime.boxes import BoxLimits, CheckedBoxes, check_boxes
from boxmask.runtime.card import ModelCard
from boxmask.runtime.masks import MaskFormat, encode_mask

SCORE_DECIMALS = 5
COORD_DECIMALS = 2


class SegmentsBoxes(Protocol):
    """The part of `boxmask.runtime.Predictor` the labeler uses."""

    card: ModelCard
    limits: BoxLimits

    def set_image(self, image: np.ndarray) -> str: ...
    def predict(self, boxes: CheckedBoxes, labels: Any = None, key: str | None = None) -> Any: ...
    def detect(self, key: str | None = None, score_threshold: float = 0.5,
               max_detections: int = 100) -> Any: ...


def skipped_result(task: ImageTask, skip: ImageSkip) -> dict[str, Any]:
    return {"index": task.index, "image_id": task.image_id, "status": "skipped",
            "reason": skip.reason, "detail": skip.detail}


def segmentation_of(mask: np.ndarray, mask_format: str) -> Any | None:
    """COCO segmentation of a ``[H, W]`` bool mask (the runtime's `encode_mask`), or None if it
    has nothing a COCO reader can use: no pixel, or (polygons) no polygon of three points."""
    if not mask.any():
        return None
    # `boxmask label --mask-format polygon` names COCO's polygon segmentation.
    wire: MaskFormat = "rle" if mask_format == "rle" else "polygons"
    return encode_mask(mask, wire, decimals=COORD_DECIMALS) or None


def _mask_extras(pred: Any, j: int, mask: np.ndarray, settings: LabelSettings
                 ) -> dict[str, Any]:
    """What a mask record carries beyond its segmentation: its review score, the tight box
    (``--tight-boxes``)."""
    extras: dict[str, Any] = {}
    if not np.isnan(pred.quality[j]):
        extras["quality"] = round(float(pred.quality[j]), SCORE_DECIMALS)
    if settings.tight_boxes:
        x1, y1, x2, y2 = pred.tight_box(j, mask)  # never None: empty masks are dropped before
        extras["tight_bbox"] = [round(v, COORD_DECIMALS) for v in (x1, y1, x2 - x1, y2 - y1)]
    return extras


def label_image(predictor: SegmentsBoxes, image: np.ndarray | ImageSkip, task: ImageTask,
                settings: LabelSettings) -> dict[str, Any]:
    """Masks for every box of `task` (``image``: ``[H, W, 3]`` uint8 RGB), or the skip record."""
    if isinstance(image, ImageSkip):
        return skipped_result(task, image)
    h, w = image.shape[:2]
    result: dict[str, Any] = {"index": task.index, "image_id": task.image_id, "status": "ok",
                              "masks": [], "dropped": [], "detections": []}
    key = predictor.set_image(image)

    # The box policy, once for the image: boxes clipped to it (annotation tools leave boxes a
    # pixel out), those with nothing inside set aside, the model's category ids resolved.
    boxes = check_boxes(task.boxes, task.category_ids, card=predictor.card, image_size=(h, w),
                        limits=predictor.limits, drop_outside=True)
    for i in boxes.outside:
        result["dropped"].append([task.ann_indices[i], "outside_image"])

    step = settings.batch_boxes or max(len(boxes), 1)
    for start in range(0, len(boxes), step):
        chunk = boxes.take(range(start, min(start + step, len(boxes))))
        pred = predictor.predict(chunk, key=key)
        for j, i in enumerate(chunk.kept):
            ann = task.ann_indices[i]
            score = round(float(pred.scores[j]), SCORE_DECIMALS)
            if score < settings.min_score:
                result["dropped"].append([ann, "below_min_score"])
                continue
            mask = pred.mask(j)
            segmentation = segmentation_of(mask, settings.mask_format)
            if segmentation is None:
                result["dropped"].append([ann, "empty_mask"])
                continue
            result["masks"].append({"ann": ann, "segmentation": segmentation, "score": score,
                                    "area": int(mask.sum()),
                                    **_mask_extras(pred, j, mask, settings)})
    result["dropped"].sort()

    if task.pre_annotate:
        det = predictor.detect(key=key, score_threshold=settings.detect_threshold,
                               max_detections=settings.max_detections)
        for j in range(len(det.scores)):
            mask = det.mask(j)
            segmentation = segmentation_of(mask, settings.mask_format)
            if segmentation is None:
                continue
            x1, y1, x2, y2 = (float(v) for v in det.boxes[j])
            result["detections"].append({
                "category_id": int(det.labels[j]),
                "bbox": [round(v, COORD_DECIMALS) for v in (x1, y1, x2 - x1, y2 - y1)],
                "segmentation": segmentation,
                "score": round(float(det.scores[j]), SCORE_DECIMALS),
                "area": int(mask.sum()), **_mask_extras(det, j, mask, settings)})
    return result
