"""sigma and the cleaning rules on hand-made tensors."""

import numpy as np
import pytest
import torch

from boxmask.model.pseudo_masks import (
    apply_sigma,
    box_interior_on_rois,
    clean_pseudo_masks,
    project_masks_on_rois,
    resize_probs,
)


def test_threshold_sigma_is_teacher_at_least_half():
    t = torch.tensor([[[0.2, 0.5], [0.51, 0.9]]])
    assert apply_sigma("threshold", t).tolist() == [[[0.0, 1.0], [1.0, 1.0]]]


def test_interact_sigma_averages_teacher_and_detached_student():
    t = torch.tensor([[[0.2, 0.6], [0.9, 0.4]]])
    s = torch.tensor([[[0.9, 0.3], [0.0, 0.7]]], requires_grad=True)
    out = apply_sigma("interact", t, s)
    # (0.2+0.9)/2=0.55 -> 1; (0.6+0.3)/2=0.45 -> 0; 0.45 -> 0; 0.55 -> 1
    assert out.tolist() == [[[1.0, 0.0], [0.0, 1.0]]]
    assert not out.requires_grad


def test_box_sigma_ignores_the_teacher_and_cleans_to_the_box_minus_seen_masks():
    t = torch.tensor([[[0.0, 0.1], [0.2, 0.9]]], requires_grad=True)
    out = apply_sigma("box", t)
    assert out.tolist() == [[[1.0, 1.0], [1.0, 1.0]]] and not out.requires_grad
    # Through the cleaning: the RoI is the box; the seen mask covers the top-left cell.
    box = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    seen = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert clean_pseudo_masks(out, box, box, seen).tolist() == [[[0.0, 1.0], [1.0, 1.0]]]
    with pytest.raises(ValueError, match="unknown sigma"):
        apply_sigma("boxes", t)


def test_crf_sigma_follows_image_edges():
    pytest.importorskip("pydensecrf")
    m = 28
    image = np.zeros((m, m, 3), np.uint8)
    image[:, : m // 2] = 255  # left half bright: the object
    probs = np.full((m, m), 0.45, np.float32)
    probs[:, : m // 2] = 0.55
    probs[:, m // 2 - 3: m // 2] = 0.48  # a weak border the colour edge should fix
    crops = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    out = apply_sigma("crf", torch.from_numpy(probs)[None], image_crops=crops)[0]
    assert out[:, : m // 2].mean() > 0.9
    assert out[:, m // 2:].mean() < 0.1


def test_box_interior_marks_cells_whose_centre_is_inside_the_box():
    roi = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    box = torch.tensor([[0.0, 0.0, 2.0, 4.0]])
    inside = box_interior_on_rois(roi, box, 4)[0]
    assert inside[:, :2].all() and not inside[:, 2:].any()


def test_cleaning_removes_pixels_of_seen_masks_and_outside_the_box():
    pseudo = torch.ones(1, 4, 4)
    roi = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    box = torch.tensor([[0.0, 0.0, 4.0, 3.0]])  # the last row lies outside the instance's box
    seen = torch.zeros(1, 4, 4)
    seen[0, 0, 0] = 1.0  # a seen object covers the top-left cell
    out = clean_pseudo_masks(pseudo, roi, box, seen)[0]
    expected = torch.ones(4, 4)
    expected[3] = 0
    expected[0, 0] = 0
    assert torch.equal(out, expected)


def test_project_masks_reads_the_matched_mask_in_roi_coordinates():
    masks = torch.zeros(2, 8, 8, dtype=torch.uint8)
    masks[1, :, :4] = 1
    out = project_masks_on_rois(masks, torch.tensor([[0.0, 0.0, 8.0, 8.0]]), torch.tensor([1]), 4)
    assert out.shape == (1, 4, 4)
    # Pixel-aligned: the edge at x = 4 falls exactly between cells 1 and 2.
    assert torch.equal(out[0], torch.tensor([[1.0, 1.0, 0.0, 0.0]] * 4))
    # aligned=False is torchvision's Mask R-CNN target sampling, half a pixel up-left.
    from torchvision.models.detection.roi_heads import project_masks_on_boxes

    shifted = project_masks_on_rois(masks, torch.tensor([[0.0, 0.0, 8.0, 8.0]]),
                                    torch.tensor([1]), 4, aligned=False)
    ref = project_masks_on_boxes(masks, torch.tensor([[0.0, 0.0, 8.0, 8.0]]), torch.tensor([1]), 4)
    assert torch.equal(shifted, ref)
    assert not torch.equal(shifted, out)


def test_aligned_targets_survive_the_paste_that_inference_uses():
    """Crop a true mask onto its box and paste it back as inference does (model/paste.py): the
    aligned grid gives the mask back, torchvision's half-pixel grid moves it."""
    from boxmask.model.paste import paste_masks

    mask = torch.zeros(1, 64, 64, dtype=torch.uint8)
    mask[0, 10:38, 13:41] = 1
    box = torch.tensor([[13.0, 10.0, 41.0, 38.0]])

    def round_trip(aligned: bool) -> float:
        cells = project_masks_on_rois(mask, box, torch.tensor([0]), 28, aligned=aligned)
        back = paste_masks(cells[:, None], box, (64, 64))[0, 0] > 0.5
        inter = (back & mask[0].bool()).sum().item()
        return inter / (back | mask[0].bool()).sum().item()

    assert round_trip(True) == 1.0
    assert round_trip(False) < 0.97


def test_resize_probs_averages_a_high_resolution_teacher_down():
    p = torch.zeros(1, 56, 56)
    p[0, :, :28] = 1
    r = resize_probs(p, 28)
    assert r.shape == (1, 28, 28)
    assert torch.allclose(r[0, :, :14], torch.ones(28, 14))
    assert torch.allclose(r[0, :, 14:], torch.zeros(28, 14))


def test_fit_to_box_lowers_the_threshold_until_the_mask_reaches_the_box_sides() -> None:
    from boxmask.model.pseudo_masks import fit_to_box

    inside = torch.zeros(2, 8, 8, dtype=torch.bool)
    inside[:, 1:7, 1:7] = True
    probs = torch.zeros(2, 8, 8)
    # Instance 0: a confident object filling its box: kept at 0.5 as it is.
    probs[0, 1:7, 1:7] = 0.9
    # Instance 1: a faint object (0.3) with a confident core (0.8): 0.5 gives the core only.
    probs[1, 1:7, 1:7] = 0.3
    probs[1, 3:5, 3:5] = 0.8
    out = fit_to_box(probs, inside)
    assert torch.equal(out[0], (probs[0] >= 0.5).float())
    assert torch.equal(out[1].bool(), inside[1])
    # Outside the box nothing is ever foreground, however high the probability.
    probs[1, 0, 0] = 1.0
    assert fit_to_box(probs, inside)[1, 0, 0] == 0
    assert fit_to_box(torch.zeros(0, 8, 8), torch.zeros(0, 8, 8, dtype=torch.bool)).shape == (0, 8, 8)


def test_fit_then_crf_follows_the_image_edge_the_blurred_teacher_misses() -> None:
    """A teacher that scores a disc low and blurred (as a teacher pretrained where the category
    was background does): the fit reaches the box but its edge is the blur's; after the shift
    and the CRF the mask follows the disc's edge in the image, and nothing outside the box."""
    pytest.importorskip("pydensecrf")
    import torch.nn.functional as F

    from boxmask.model.pseudo_masks import fit_then_crf, fit_thresholds, fit_to_box

    m = 28
    yy, xx = torch.meshgrid(torch.arange(m), torch.arange(m), indexing="ij")
    disc = (((yy - 13.5) ** 2 + (xx - 13.5) ** 2).sqrt() < 9).float()
    inside = torch.zeros(1, m, m, dtype=torch.bool)
    inside[0, 4:24, 4:24] = True
    blurred = F.conv2d(disc[None, None], torch.ones(1, 1, 7, 7) / 49, padding=3)[0]
    probs = blurred * 0.25 + 0.01  # at most 0.26: nothing at the paper's 0.5
    image = torch.zeros(1, 3, m, m)
    image[0, 0] = 200.0  # red background, green disc
    image[0, 0][disc.bool()] = 0.0
    image[0, 1][disc.bool()] = 220.0

    def iou(mask: torch.Tensor) -> float:
        return float((mask * disc).sum() / ((mask + disc) > 0).sum())

    assert float(fit_thresholds(probs, inside)[0]) == pytest.approx(0.1)
    fitted = fit_to_box(probs, inside)[0]
    out = fit_then_crf(probs, inside, image)
    assert out.shape == (1, m, m)
    assert out[0][~inside[0]].sum() == 0
    assert iou(out[0]) > iou(fitted) + 0.03
    assert iou(out[0]) > 0.9
