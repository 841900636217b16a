"""Fixtures for the evaluation tests."""

from __future__ import annotations

import numpy as np
import pytest

from tests.evaluation.coco_scenes import (
    CATEGORIES,
    ann_from_mask,
    det_from_mask,
    make_coco,
    rect_mask,
)


@pytest.fixture
def random_scene():
    """Ground truth of 6 images with 3 categories and noisy detections of it.

    Category 2 is unseen. Detections: jittered copies of most instances (some wrong class),
    duplicates, and boxes on background, with random scores; one crowd region.
    """
    rng = np.random.default_rng(0)
    h = w = 64
    images, anns, dets = [], [], []
    ann_id = 1
    for img_id in range(1, 7):
        images.append({"id": img_id, "height": h, "width": w, "file_name": f"{img_id}.png"})
        for _ in range(int(rng.integers(2, 6))):
            x1, y1 = (int(v) for v in rng.integers(0, 44, size=2))
            bw, bh = (int(v) for v in rng.integers(6, 20, size=2))
            cat = int(rng.integers(1, 4))
            mask = rect_mask(h, w, x1, y1, x1 + bw, y1 + bh)
            anns.append(ann_from_mask(ann_id, img_id, cat, mask))
            ann_id += 1
            for _ in range(int(rng.integers(0, 3))):
                jx, jy = (int(v) for v in rng.integers(-3, 4, size=2))
                dcat = cat if rng.random() < 0.8 else int(rng.integers(1, 4))
                dmask = rect_mask(h, w, max(x1 + jx, 0), max(y1 + jy, 0), x1 + jx + bw, y1 + jy + bh)
                dets.append(det_from_mask(img_id, dcat, dmask, rng.random()))
        x1, y1 = (int(v) for v in rng.integers(0, 50, size=2))
        dets.append(det_from_mask(img_id, int(rng.integers(1, 4)),
                                  rect_mask(h, w, x1, y1, x1 + 10, y1 + 10), rng.random()))
    anns.append(ann_from_mask(ann_id, 1, 1, rect_mask(h, w, 40, 40, 64, 64), iscrowd=1))
    return make_coco(images, anns, CATEGORIES), dets, {1, 3}
