"""Hand-made COCO ground truth and results for the evaluation tests (a uniquely named module:
importing from ``conftest`` would be ambiguous beside other test folders' conftest files)."""

from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO


def rect_mask(h: int, w: int, x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    """``[h, w]`` bool mask with pixels ``x1 <= x < x2``, ``y1 <= y < y2`` set."""
    m = np.zeros((h, w), dtype=bool)
    m[y1:y2, x1:x2] = True
    return m


def rle(mask: np.ndarray) -> dict:
    """COCO RLE with ``counts`` as str (JSON-able), as detections are written."""
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")}


def ann_from_mask(ann_id: int, image_id: int, category_id: int, mask: np.ndarray,
                  iscrowd: int = 0) -> dict:
    r = rle(mask)
    return {"id": ann_id, "image_id": image_id, "category_id": category_id,
            "segmentation": r, "area": float(mask.sum()),
            "bbox": [float(v) for v in mask_utils.toBbox(r)], "iscrowd": iscrowd}


def det_from_mask(image_id: int, category_id: int, mask: np.ndarray, score: float) -> dict:
    r = rle(mask)
    return {"image_id": image_id, "category_id": category_id, "segmentation": r,
            "bbox": [float(v) for v in mask_utils.toBbox(r)], "score": float(score)}


def make_coco(images: list[dict], annotations: list[dict], categories: list[dict]) -> COCO:
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


CATEGORIES = [{"id": 1, "name": "disc"}, {"id": 2, "name": "star"}, {"id": 3, "name": "ring"}]
