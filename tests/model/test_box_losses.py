"""BoxInst's box-only mask losses on RoI grids, and where the mask branch applies them."""

import pytest
import torch

from boxmask.model import build_model
from boxmask.model.box_losses import (
    COLOR_TAU,
    box_projection_loss,
    color_similarity,
    neighbours,
    pairwise_loss,
    rgb_to_lab,
)
from tests.model.test_teacher_student import (
    NUM_CLASSES,
    H,
    W,
    _branch,
    _features,
    _target,
    _tiny_cfg,
)

torch.set_num_threads(1)


@pytest.mark.parametrize("rgb,lab", [
    ((1.0, 1.0, 1.0), (100.0, 0.0, 0.0)),
    ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    # Reference values of the sRGB primaries (D65, 2 degrees), as skimage.color.rgb2lab gives.
    ((1.0, 0.0, 0.0), (53.24, 80.09, 67.20)),
    ((0.0, 1.0, 0.0), (87.73, -86.18, 83.18)),
    ((0.0, 0.0, 1.0), (32.30, 79.19, -107.86)),
])
def test_rgb_to_lab_matches_reference_values(rgb, lab):
    got = rgb_to_lab(torch.tensor(rgb).view(1, 3, 1, 1))[0, :, 0, 0]
    assert torch.allclose(got, torch.tensor(lab), atol=0.05), got


def test_neighbours_leave_out_the_centre_and_look_dilation_cells_away():
    x = torch.arange(49.0).view(1, 1, 7, 7)
    n = neighbours(x, kernel=3, dilation=2)
    assert n.shape == (1, 1, 8, 7, 7)
    # Cell (3, 3) = 24: neighbours at (1,1) (1,3) (1,5) (3,1) (3,5) (5,1) (5,3) (5,5).
    assert n[0, 0, :, 3, 3].tolist() == [8, 10, 12, 22, 26, 36, 38, 40]
    assert n[0, 0, 0, 0, 0] == 0  # zero padding beyond the border


def _box_mask(m: int, x1: int, y1: int, x2: int, y2: int) -> torch.Tensor:
    b = torch.zeros(1, m, m)
    b[:, y1:y2, x1:x2] = 1
    return b


def test_projection_loss_is_zero_for_any_mask_that_spans_the_box():
    box = _box_mask(16, 4, 2, 12, 14)
    # A cross through the box touches every row and column of it: its projections are the box's.
    cross = torch.zeros(1, 16, 16)
    cross[:, 2:14, 7] = 1
    cross[:, 8, 4:12] = 1
    logits = (cross * 2 - 1) * 20
    assert box_projection_loss(logits, box) < 1e-3
    shrunk = torch.full((1, 16, 16), -20.0)
    shrunk[:, 6:10, 6:10] = 20.0
    assert box_projection_loss(shrunk, box) > 0.4
    assert box_projection_loss(torch.full((1, 16, 16), 20.0), box) > 0.3  # spills out of it


def test_projection_loss_keeps_a_graph_for_no_instances():
    logits = torch.zeros(0, 28, 28, requires_grad=True)
    loss = box_projection_loss(logits, torch.zeros(0, 28, 28))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_pairwise_loss_rewards_labels_that_follow_the_colours():
    m = 16
    crops = torch.zeros(1, 3, m, m)
    crops[:, 0] = 255.0  # red everywhere ...
    crops[:, :, :, 8:] = torch.tensor([0.0, 0.0, 255.0]).view(1, 3, 1, 1)  # ... blue on the right
    sim = color_similarity(crops)
    assert sim.shape == (1, 8, m, m)
    box = _box_mask(m, 0, 0, m, m)
    follows = torch.full((1, m, m), -20.0)
    follows[:, :, 8:] = 20.0  # one label per colour
    across = torch.full((1, m, m), -20.0)
    across[:, :8, :] = 20.0  # a cut that crosses the colour regions
    assert pairwise_loss(follows, sim, box) < 1e-3
    assert pairwise_loss(across, sim, box) > 1.0
    # Edges between the two colours are too dissimilar to count.
    assert (sim[0, :, 4, 6:10] < COLOR_TAU).any() and (sim[0, :, 4, 2] >= COLOR_TAU).all()


def test_pairwise_loss_ignores_cells_outside_the_box():
    m = 16
    crops = torch.full((1, 3, m, m), 128.0)
    sim = color_similarity(crops)
    box = _box_mask(m, 0, 0, 8, m)
    logits = torch.full((1, m, m), 20.0)
    logits[:, :, 12:] = -20.0  # a label change far outside the box
    assert pairwise_loss(logits, sim, box) < 1e-3
    assert pairwise_loss(logits, sim, _box_mask(m, 0, 0, m, m)) > 0.1


def test_neighbours_two_apart_never_tie_the_grids_parities_together():
    """A checkerboard of holes in a box of one colour (what a stride-2 transposed conv makes
    easily): BoxInst's dilation 2 joins only cells of the same parity and sees nothing wrong;
    adjacent neighbours (dilation 1) do."""
    m = 16
    crops = torch.full((1, 3, m, m), 128.0)
    box = _box_mask(m, 0, 0, m, m)
    checker = torch.full((1, m, m), 20.0)
    checker[:, 1::2, 1::2] = -20.0  # one of the four sublattices off
    two = pairwise_loss(checker, color_similarity(crops, 2), box, dilation=2)
    one = pairwise_loss(checker, color_similarity(crops, 1), box, dilation=1)
    assert two < 0.1 * one and one > 1.0


def test_pairwise_dilation_is_a_model_setting():
    model = build_model(_tiny_cfg(mode="teacher_student", unseen_box_loss="boxinst",
                                  box_pairwise_dilation=1), NUM_CLASSES, {1})
    assert model.roi_heads.mask_branch.box_pairwise_dilation == 1
    assert build_model(_tiny_cfg(mode="teacher_student", unseen_box_loss="boxinst"), NUM_CLASSES,
                       {1}).roi_heads.mask_branch.box_pairwise_dilation == 2


def test_pairwise_loss_is_stable_for_large_logits():
    logits = torch.tensor([[[80.0, -80.0], [80.0, -80.0]]], requires_grad=True)
    sim = torch.ones(1, 8, 2, 2)
    loss = pairwise_loss(logits, sim, torch.ones(1, 2, 2))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def _losses(branch, target, images=None):
    rois = [target["boxes"].clone()]
    return branch.losses(_features(), rois, [(H, W)], [torch.tensor([0, 1])], [target], images)


@pytest.mark.parametrize("mode", ["agnostic", "teacher_student"])
def test_box_losses_act_on_the_unseen_masks_of_the_serving_head(mode):
    images = torch.rand(1, 3, H, W) * 255
    plain = _losses(_branch(mode), _target())
    branch = _branch(mode)
    branch.unseen_box_loss = "boxinst"
    branch.register_buffer("train_steps", torch.zeros((), dtype=torch.long))
    got = _losses(branch, _target(), images)
    assert set(got) == set(plain) | {"loss_mask_projection", "loss_mask_pairwise"}
    for k in plain:  # the paper's losses are untouched
        assert torch.allclose(got[k], plain[k]), k
    serving = branch.student if mode == "teacher_student" else branch.teacher
    other = branch.teacher if mode == "teacher_student" else None
    serving.zero_grad()
    (got["loss_mask_projection"] + got["loss_mask_pairwise"]).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in serving.parameters())
    if other is not None:
        assert all(p.grad is None or p.grad.abs().sum() == 0 for p in other.parameters())


def test_box_losses_read_the_box_not_the_unseen_mask():
    images = torch.rand(1, 3, H, W) * 255
    out = []
    for value in (0, 1):
        branch = _branch("teacher_student")
        branch.unseen_box_loss = "boxinst"
        branch.register_buffer("train_steps", torch.zeros((), dtype=torch.long))
        out.append(_losses(branch, _target(unseen_mask_value=value), images))
    for k in ("loss_mask_projection", "loss_mask_pairwise"):
        assert torch.equal(out[0][k], out[1][k])


def test_pairwise_weight_ramps_up_over_its_warmup():
    images = torch.rand(1, 3, H, W) * 255
    branch = _branch("teacher_student")
    branch.unseen_box_loss = "boxinst"
    branch.box_pairwise_warmup_iters = 4
    branch.register_buffer("train_steps", torch.zeros((), dtype=torch.long))
    first = _losses(branch, _target(), images)["loss_mask_pairwise"]  # step 1 of 4
    for _ in range(4):
        full = _losses(branch, _target(), images)["loss_mask_pairwise"]
    assert torch.allclose(first * 4, full, rtol=1e-5)


def test_box_loss_is_a_model_setting_and_trains_end_to_end():
    torch.manual_seed(0)
    model = build_model(_tiny_cfg(mode="teacher_student", unseen_box_loss="boxinst",
                                  box_pairwise_warmup_iters=10), NUM_CLASSES, {1})
    branch = model.roi_heads.mask_branch
    assert branch.needs_images and "train_steps" in dict(branch.named_buffers())
    model.train()
    t = _target()
    t["masks"] = torch.nn.functional.pad(t["masks"], (0, 32, 0, 32))
    losses = model([torch.rand(3, 64, 64)], [t])
    assert {"loss_mask_projection", "loss_mask_pairwise"} <= set(losses)
    sum(losses.values()).backward()
    # The oracle has no unseen instance: the option is a no-op there.
    oracle = build_model(_tiny_cfg(mode="oracle", unseen_box_loss="boxinst"), NUM_CLASSES, {1})
    assert oracle.roi_heads.mask_branch.unseen_box_loss == "none"
    assert not oracle.roi_heads.mask_branch.needs_images
