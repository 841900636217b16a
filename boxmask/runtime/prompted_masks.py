"""Masks from an exported model, prompted by a COCO set's own boxes: the loop every figure of
"what does the annotator get after drawing this box" is made from, and the two scores it needs.

Torch-free (numpy and pycocotools): it drives any predictor with the runtime's ``set_image`` /
``predict`` interface (``boxmask.runtime.Predictor``), so the scripts and benchmarks that score
an exported model, and the tests that hold a serving path to its figures, share one loop instead
of copies.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pycocotools.coco import COCO


class _Prompted(Protocol):
    def set_image(self, image: bytes) -> str: ...

    def predict(self, boxes: list[list[float]], *, labels: list[int] | None = ...,
                key: str | None = ...) -> Any: ...


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks of one shape; 1 when both are empty."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def box_rectangle(bbox: list[float], height: int, width: int) -> np.ndarray:
    """A COCO ``[x, y, w, h]`` box as an ``(height, width)`` bool mask: the pixels whose centre
    lies inside it (the box-as-mask baseline)."""
    x, y, w, h = bbox
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    return (xs >= x) & (xs <= x + w) & (ys >= y) & (ys <= y + h)


def prompted_masks(predictor: _Prompted, coco: COCO, images: Path
                   ) -> Iterator[tuple[dict, list[dict], list[np.ndarray]]]:
    """Per image of ``coco`` (in id order) with non-crowd annotations: ``(image info, those
    annotations, one (H, W) bool mask each)``, each mask predicted from the annotation's box
    and category id, the image's features computed once (``set_image``) for all its boxes."""
    for img_id in sorted(coco.getImgIds()):
        info = coco.imgs[img_id]
        anns = [a for a in coco.imgToAnns[img_id] if not a.get("iscrowd")]
        if not anns:
            continue
        key = predictor.set_image((Path(images) / info["file_name"]).read_bytes())
        boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                  a["bbox"][1] + a["bbox"][3]] for a in anns]
        pred = predictor.predict(boxes, labels=[a["category_id"] for a in anns], key=key)
        yield info, anns, list(pred.masks)
