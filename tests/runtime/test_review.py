"""The review score's terms (boxmask.runtime.review) on hand-made masks and images."""

from __future__ import annotations

import numpy as np
import pytest

from boxmask.runtime.review import (
    NO_BACKGROUND,
    WEIGHTS,
    WEIGHTS_BY_FINISH,
    ReviewWeights,
    colour_separation,
    combine_terms,
    edge_contrast,
    mask_confidence,
    review_score,
    sample_box_colours,
    weights_for,
)

R = 8


def _two_colour_box() -> np.ndarray:
    """A 16 x 16 image: red background, a green 8 x 8 square at rows/cols 4..11."""
    img = np.zeros((16, 16, 3), np.uint8)
    img[..., 0] = 200
    img[4:12, 4:12] = (0, 220, 0)
    return img


def test_colours_are_sampled_at_the_centres_of_each_boxs_cells() -> None:
    img = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    out = sample_box_colours(img, np.array([[0, 0, 16, 16], [4, 2, 8, 6]], np.float32), 4,
                             context=0)
    assert out.shape == (2, 4, 4, 3) and out.dtype == np.float32
    # Box 0: cells of 4 px, centres at 2, 6, 10, 14.
    np.testing.assert_array_equal(out[0, 1, 2], img[6, 10])
    # Box 1: cells of 1 px from (4, 2): centres at x 4.5.. and y 2.5..
    np.testing.assert_array_equal(out[1, 0, 0], img[2, 4])
    np.testing.assert_array_equal(out[1, 3, 3], img[5, 7])
    # Boxes past the image's edges read its last row and column.
    edge = sample_box_colours(img, np.array([[12, 12, 20, 20]], np.float32), 2, context=0)
    np.testing.assert_array_equal(edge[0, 1, 1], img[15, 15])
    assert sample_box_colours(img, np.zeros((0, 4), np.float32), 4).shape == (0, 8, 8, 3)


def test_a_ring_of_context_cells_frames_the_box_and_is_nan_outside_the_image() -> None:
    img = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)
    box = np.array([[8, 0, 24, 16]], np.float32)  # cells of 4 px on a 4 x 4 grid
    out = sample_box_colours(img, box, 4, context=2)
    assert out.shape == (1, 8, 8, 3)
    # The box's own cells are those of context=0, at [2:6, 2:6].
    np.testing.assert_array_equal(out[0, 2:6, 2:6], sample_box_colours(img, box, 4, context=0)[0])
    # Ring cells continue the grid: column 0 is two cells left of the box (x centre 2), row 7
    # two cells below it (y centre 22).
    np.testing.assert_array_equal(out[0, 7, 0], img[22, 2])
    # Above the box the ring leaves the image (y centres -6 and -2): NaN, and nothing else is.
    assert np.isnan(out[0, :2]).all() and np.isfinite(out[0, 2:]).all()


def test_the_ring_lets_the_colour_term_judge_a_mask_that_fills_its_box() -> None:
    """An object that fills its box: with the box alone every full mask is neutral (no
    background cell); with the ring the right mask separates the colours, and one that misses
    half of the object ranks well below it."""
    img = _two_colour_box()  # the green square is rows/cols 4..11: its tight box is [4, 4, 12, 12]
    box = np.array([[4, 4, 12, 12]] * 2, np.float32)
    full = np.ones((R, R), np.float32)
    half = full.copy()
    half[:, R // 2:] = 0.0
    probs = np.stack([full, half])
    alone = colour_separation(probs, sample_box_colours(img, box, R, context=0))
    assert alone[0] == NO_BACKGROUND
    ringed = colour_separation(probs, sample_box_colours(img, box, R))
    assert ringed[0] > 0.99
    assert ringed[1] < ringed[0] - 0.2  # half the object left in the "outside"


def test_colours_that_do_not_frame_the_masks_are_refused() -> None:
    img = _two_colour_box()
    colours = sample_box_colours(img, np.array([[0, 0, 16, 16]], np.float32), R + 1, context=0)
    with pytest.raises(ValueError, match="do not frame"):
        colour_separation(np.zeros((1, R, R), np.float32), colours)


def test_confidence_is_the_foregrounds_mean_probability_rescaled() -> None:
    probs = np.full((3, R, R), 0.1, np.float32)
    probs[0, :4] = 1.0  # certain foreground
    probs[1, :4] = 0.75  # half-way between the threshold and 1
    # probs[2]: empty
    np.testing.assert_allclose(mask_confidence(probs), [1.0, 0.5, 0.0])
    np.testing.assert_allclose(mask_confidence(probs, threshold=0.7)[1], (0.75 - 0.7) / 0.3)


def test_a_mask_on_the_objects_colours_separates_them_and_a_wrong_one_does_not() -> None:
    img = _two_colour_box()
    colours = sample_box_colours(img, np.array([[0, 0, 16, 16]] * 4, np.float32), R)
    # The box is the whole image: its ring lies outside it, so only the box's cells count.
    right = np.zeros((R, R), np.float32)
    right[2:6, 2:6] = 1.0  # the green square on the 8 x 8 grid
    shifted = np.roll(right, 2, axis=1)  # half on the background
    full = np.ones((R, R), np.float32)
    empty = np.zeros((R, R), np.float32)
    sep = colour_separation(np.stack([right, shifted, full, empty]), colours)
    assert sep[0] > 0.99  # the colours split exactly: F is huge
    assert sep[1] < 0.5 < sep[0]
    assert sep[2] == NO_BACKGROUND and sep[3] == 0.0


def test_the_review_score_is_the_weighted_mean_of_the_terms_the_model_has() -> None:
    img = _two_colour_box()
    colours = sample_box_colours(img, np.array([[0, 0, 16, 16]] * 2, np.float32), R)
    probs = np.zeros((2, R, R), np.float32)
    probs[:, 2:6, 2:6] = 0.9
    conf, sep = mask_confidence(probs), colour_separation(probs, colours)
    edge = edge_contrast(probs, colours)
    w = WEIGHTS
    assert w == weights_for("none")
    assert w.confidence > w.edge > w.separation > w.head > 0
    np.testing.assert_allclose(review_score(probs, colours),
                               (w.confidence * conf + w.separation * sep + w.edge * edge)
                               / (w.confidence + w.separation + w.edge), rtol=1e-6)
    head = np.array([0.3, np.nan], np.float32)  # a head's IoU; NaN: no head for that mask
    got = review_score(probs, colours, head)
    assert got.dtype == np.float32
    total = w.confidence + w.separation + w.edge + w.head
    assert got[0] == pytest.approx((w.confidence * conf[0] + w.separation * sep[0]
                                    + w.edge * edge[0] + w.head * 0.3) / total, rel=1e-6)
    assert got[1] == pytest.approx((w.confidence * conf[1] + w.separation * sep[1]
                                    + w.edge * edge[1]) / (total - w.head), rel=1e-6)
    # Equal weights without the edge term: the plain mean (the score before any fit).
    equal = review_score(probs, colours, head, weights=ReviewWeights(1.0, 1.0, 1.0, edge=0.0))
    assert equal[0] == pytest.approx((conf[0] + sep[0] + 0.3) / 3, rel=1e-6)
    # combine_terms leaves the edge term out where it is not given, whatever its weight.
    np.testing.assert_allclose(combine_terms(conf, sep, None, w),
                               (w.confidence * conf + w.separation * sep)
                               / (w.confidence + w.separation))


def test_each_finish_has_its_own_fitted_weights() -> None:
    assert set(WEIGHTS_BY_FINISH) == {"none", "crf", "crf_wide"}
    for name, w in WEIGHTS_BY_FINISH.items():
        assert weights_for(name) is w
        assert sum((w.confidence, w.separation, w.head, w.edge)) == pytest.approx(1.0, abs=0.02)
    # The CRF pulls the served mask onto the image's edges: the edge term weighs more there.
    assert weights_for("crf").edge > weights_for("none").edge
    with pytest.raises(ValueError, match="no review weights"):
        weights_for("bilateral")


def test_an_outline_on_the_objects_edge_has_a_high_edge_contrast_and_a_wrong_one_not() -> None:
    img = _two_colour_box()
    # A box with a ring inside the image: the 8 x 8 green square at 4..11 in a 12-px box.
    colours = sample_box_colours(img, np.array([[2, 2, 14, 14]] * 5, np.float32), 12)
    cells = (np.arange(12) + 0.5) + 2  # the grid's cell centres in pixels
    on = (cells >= 4) & (cells < 12)
    right = (on[:, None] & on[None]).astype(np.float32)
    shifted = np.roll(right, 3, axis=1)  # its outline half through the background
    inside = np.zeros((12, 12), np.float32)
    inside[4:8, 4:8] = 1.0  # all in the green: its outline crosses no colour step
    full = np.ones((12, 12), np.float32)  # the box: its outline on the flat red ring
    empty = np.zeros((12, 12), np.float32)
    edge = edge_contrast(np.stack([right, shifted, inside, full, empty]), colours)
    assert edge[0] > 0.9  # the outline crosses the box's only colour steps
    assert edge[2] == 0.0 and edge[3] == 0.0  # outlines on flat colour
    assert edge[2] < edge[1] < edge[0]
    assert edge[4] == 0.0  # empty
    # Scale-free: the same image at a tenth of its contrast scores the same.
    dim = (_two_colour_box() // 10).astype(np.uint8)
    np.testing.assert_allclose(
        edge_contrast(np.stack([right, shifted]),
                      sample_box_colours(dim, np.array([[2, 2, 14, 14]] * 2, np.float32), 12)),
        edge[:2], atol=0.02)
    # A flat box tells nothing: neutral.
    flat = sample_box_colours(np.full((16, 16, 3), 90, np.uint8),
                              np.array([[2, 2, 14, 14]], np.float32), 12)
    assert edge_contrast(right[None], flat)[0] == NO_BACKGROUND
    with pytest.raises(ValueError, match="do not frame"):
        edge_contrast(right[None], colours[:1, :5, :5])


def test_the_colour_term_reads_the_served_mask_and_the_confidence_the_decoders() -> None:
    """Where the CRF refines what is served, the score's separation is the refined mask's (the
    one the annotator sees) and its confidence the decoder's (the refined mask's is high
    wherever the CRF snapped it to an edge, right or wrong)."""
    img = _two_colour_box()
    colours = sample_box_colours(img, np.array([[0, 0, 16, 16]], np.float32), R)
    decoded = np.zeros((1, R, R), np.float32)
    decoded[0, 2:6, 4:8] = 0.7  # half on the background: a poor split of the colours
    refined = np.zeros((1, R, R), np.float32)
    refined[0, 2:6, 2:6] = 0.99  # the square exactly, sure of itself
    got = review_score(decoded, colours, served=refined)
    w = WEIGHTS
    want = (w.confidence * mask_confidence(decoded) + w.separation * colour_separation(
        refined, colours) + w.edge * edge_contrast(refined, colours)) / (
        w.confidence + w.separation + w.edge)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got[0] > review_score(decoded, colours)[0]  # the served mask splits the colours
    assert got[0] < review_score(refined, colours)[0]  # but not the refined mask's confidence
    with pytest.raises(ValueError, match="served masks"):
        review_score(decoded, colours, served=refined[:, :4, :4])
