"""boxmask.runtime.prompted_masks: the one loop that prompts an exported model with a COCO
set's boxes, and its two scores."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
from pycocotools.coco import COCO

from boxmask.runtime.prompted_masks import box_rectangle, mask_iou, prompted_masks


class FakePredictor:
    """Records its calls; each mask is the box's rectangle on a 10 x 12 image."""

    def __init__(self) -> None:
        self.images: list[bytes] = []
        self.calls: list[tuple[list, list, str]] = []

    def set_image(self, image: bytes) -> str:
        self.images.append(image)
        return f"key{len(self.images)}"

    def predict(self, boxes, *, labels=None, key=None):
        self.calls.append((boxes, labels, key))
        masks = [box_rectangle([x0, y0, x1 - x0, y1 - y0], 10, 12) for x0, y0, x1, y1 in boxes]
        return SimpleNamespace(masks=np.stack(masks))


def _coco(tmp_path):
    data = {
        "images": [{"id": 2, "file_name": "b.png", "height": 10, "width": 12},
                   {"id": 1, "file_name": "a.png", "height": 10, "width": 12},
                   {"id": 3, "file_name": "c.png", "height": 10, "width": 12}],
        "categories": [{"id": 5, "name": "disc"}, {"id": 7, "name": "star"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 5, "bbox": [1, 2, 3, 4], "iscrowd": 0,
             "area": 12, "segmentation": [[1, 2, 4, 2, 4, 6, 1, 6]]},
            {"id": 11, "image_id": 1, "category_id": 7, "bbox": [5, 5, 2, 2], "iscrowd": 1,
             "area": 4, "segmentation": [[5, 5, 7, 5, 7, 7, 5, 7]]},
            {"id": 12, "image_id": 2, "category_id": 7, "bbox": [0, 0, 6, 5], "iscrowd": 0,
             "area": 30, "segmentation": [[0, 0, 6, 0, 6, 5, 0, 5]]},
            # Image 3 holds only a crowd region: nothing to prompt.
            {"id": 13, "image_id": 3, "category_id": 5, "bbox": [0, 0, 2, 2], "iscrowd": 1,
             "area": 4, "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]},
        ],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(name.encode())
    return COCO(str(path))


def test_each_image_is_set_once_and_prompted_with_its_non_crowd_boxes_as_xyxy(tmp_path):
    coco = _coco(tmp_path)
    predictor = FakePredictor()
    out = list(prompted_masks(predictor, coco, tmp_path))
    assert [info["id"] for info, _, _ in out] == [1, 2]  # id order; image 3 has no prompt
    assert predictor.images == [b"a.png", b"b.png"]
    assert predictor.calls == [([[1, 2, 4, 6]], [5], "key1"), ([[0, 0, 6, 5]], [7], "key2")]
    (_, anns, masks), _ = out
    assert [a["id"] for a in anns] == [10]
    assert masks[0].shape == (10, 12) and masks[0].dtype == bool


def test_scores():
    rect = box_rectangle([1, 2, 3, 4], 10, 12)
    assert rect.sum() == 12 and rect[2:6, 1:4].all()  # pixel centres inside the box
    assert mask_iou(rect, rect) == 1.0
    assert mask_iou(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == 1.0
    half = rect.copy()
    half[2:4] = False
    assert mask_iou(half, rect) == 0.5
