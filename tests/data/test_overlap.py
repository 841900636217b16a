"""O_i = max_j |b_i ∩ s_j| / |b_i| on hand-made boxes and masks."""

import numpy as np
import pytest

from boxmask.data.overlap import overlap_scores


def _masks(h: int, w: int, *rects: tuple[int, int, int, int]) -> np.ndarray:
    out = np.zeros((len(rects), h, w), dtype=bool)
    for k, (x1, y1, x2, y2) in enumerate(rects):
        out[k, y1:y2, x1:x2] = True
    return out


def test_neighbour_filling_half_the_box_scores_one_half():
    # i: box 0..10 x 0..10; j's visible mask covers its left half (x 0..5).
    masks = _masks(20, 20, (5, 0, 10, 10), (0, 0, 5, 10))
    boxes = np.array([[0, 0, 10, 10], [0, 0, 5, 10]], dtype=float)
    o = overlap_scores(boxes, masks)
    assert o[0] == pytest.approx(0.5)
    assert o[1] == pytest.approx(0.0)  # j's box holds none of i's mask


def test_score_is_the_largest_single_neighbour_not_the_sum():
    masks = _masks(10, 10, (0, 0, 2, 2), (0, 0, 5, 10), (5, 0, 7, 10))
    boxes = np.array([[0, 0, 10, 10], [0, 0, 5, 10], [5, 0, 10, 10]], dtype=float)
    o = overlap_scores(boxes, masks)
    assert o[0] == pytest.approx(0.5)  # 50 of 100 pixels, not 50 + 20


def test_fractional_box_counts_partial_pixels():
    # Box 0..2.5 x 0..2 over a mask filling column 2: half of that column lies in the box.
    masks = _masks(4, 4, (0, 0, 1, 1), (2, 0, 3, 4))
    boxes = np.array([[0, 0, 2.5, 2], [2, 0, 3, 4]], dtype=float)
    o = overlap_scores(boxes, masks)
    assert o[0] == pytest.approx((0.5 * 2) / (2.5 * 2))


def test_single_instance_and_empty_box_score_zero():
    assert overlap_scores(np.array([[0, 0, 4, 4.0]]), _masks(4, 4, (0, 0, 4, 4))).tolist() == [0.0]
    masks = _masks(4, 4, (0, 0, 4, 4), (0, 0, 4, 4))
    o = overlap_scores(np.array([[2, 2, 2, 3], [0, 0, 4, 4.0]]), masks)
    assert o[0] == 0.0 and o[1] == pytest.approx(1.0)


def test_bad_shapes_are_refused_with_a_message():
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        overlap_scores(np.zeros((2, 3)), np.zeros((2, 4, 4), bool))
    with pytest.raises(ValueError, match="N = 2"):
        overlap_scores(np.zeros((2, 4)), np.zeros((3, 4, 4), bool))
    with pytest.raises(ValueError, match="NaN"):
        overlap_scores(np.array([[0, 0, np.nan, 1]]), np.zeros((1, 4, 4), bool))
