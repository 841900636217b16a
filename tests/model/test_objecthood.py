"""Teacher-only instances (the random-shapes lever): ignored by the box head, never a positive
RoI of the mask losses, and the teacher's alone to learn through the objecthood loss."""

from collections import OrderedDict

import pytest
import torch
from torch.nn import functional as F
from torchvision.ops import MultiScaleRoIAlign, box_iou

from boxmask.config import ModelConfig
from boxmask.data import random_shapes
from boxmask.model import build_model
from boxmask.model.mask_branch import TeacherStudentMaskBranch
from boxmask.model.objecthood import (
    OBJECTHOOD_LOSS,
    TEACHER_ONLY,
    has_teacher_only,
    jittered_rois,
    objecthood_loss,
)
from boxmask.model.pseudo_masks import box_interior_on_rois, project_masks_on_rois

torch.set_num_threads(1)

H = W = 32


def _features() -> OrderedDict:
    g = torch.Generator().manual_seed(0)
    return OrderedDict((str(i), torch.randn(1, 8, H // 2 ** (i + 2), W // 2 ** (i + 2), generator=g))
                       for i in range(4))


def _target() -> dict:
    """A seen instance, an unseen one (no mask) and a pasted shape (teacher-only, label -1)
    whose box reaches into the unseen one's."""
    masks = torch.zeros(3, H, W, dtype=torch.uint8)
    masks[0, 2:12, 2:12] = 1
    masks[2, 16:26, 4:14] = 1
    return {"boxes": torch.tensor([[2.0, 2.0, 12.0, 12.0], [12.0, 20.0, 30.0, 30.0],
                                   [4.0, 16.0, 14.0, 26.0]]),
            "labels": torch.tensor([1, 2, random_shapes.TEACHER_ONLY_LABEL]),
            "masks": masks, "mask_valid": torch.tensor([True, False, True]),
            TEACHER_ONLY: torch.tensor([False, False, True])}


def _branch(mode: str = "teacher_student", **kw) -> TeacherStudentMaskBranch:
    torch.manual_seed(0)
    return TeacherStudentMaskBranch(MultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2), 8, 8, 2,
                                    mode=mode, **kw)


def test_the_model_and_the_transform_name_the_flag_alike():
    assert TEACHER_ONLY == random_shapes.TEACHER_ONLY
    assert random_shapes.TEACHER_ONLY_LABEL == -1


def test_the_objecthood_loss_is_the_teachers_bce_on_the_shape_mask_and_trains_it_alone():
    branch, features, target = _branch(), _features(), _target()
    loss = objecthood_loss(branch, features, [(H, W)], [target], copies=0)
    box = [target["boxes"][2:]]
    logits = branch.run_teacher(branch.roi_pool(features, box, [(H, W)]), features, box)[:, 0]
    truth = project_masks_on_rois(target["masks"], box[0], torch.tensor([2]), logits.shape[-1])
    assert torch.allclose(loss, F.binary_cross_entropy_with_logits(logits, truth))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in branch.teacher.parameters()
               if p.ndim > 1)
    assert all(p.grad is None for p in branch.student.parameters())


def test_with_the_teacher_fix_the_cells_in_unseen_boxes_are_left_out():
    branch, features, target = _branch(teacher_ignore_unseen_boxes=True), _features(), _target()
    loss = objecthood_loss(branch, features, [(H, W)], [target], copies=0)
    box = target["boxes"][2:]
    logits = branch.run_teacher(branch.roi_pool(features, [box], [(H, W)]), features, [box])[:, 0]
    size = logits.shape[-1]
    truth = project_masks_on_rois(target["masks"], box, torch.tensor([2]), size)
    keep = ~box_interior_on_rois(box, target["boxes"][1:2], size) | (truth >= 0.5)
    assert 0 < int(keep.sum()) < keep.numel()
    expected = F.binary_cross_entropy_with_logits(logits[keep], truth[keep])
    assert torch.allclose(loss, expected)


def test_without_teacher_only_instances_the_loss_is_a_zero_that_reaches_the_teacher():
    branch, features, target = _branch("agnostic"), _features(), _target()
    none = dict(target, teacher_only=torch.zeros(3, dtype=torch.bool))
    assert has_teacher_only([none]) and not has_teacher_only([{"boxes": target["boxes"]}])
    for t in (none, {k: v for k, v in target.items() if k != TEACHER_ONLY}):
        loss = objecthood_loss(branch, features, [(H, W)], [t])
        assert loss.item() == 0.0 and loss.requires_grad
    with pytest.raises(ValueError, match="has none"):
        objecthood_loss(_branch("oracle"), features, [(H, W)], [target])


def test_jittered_copies_stay_near_their_box_and_inside_the_image():
    torch.manual_seed(0)
    boxes = torch.tensor([[2.0, 2.0, 12.0, 12.0], [20.0, 10.0, 32.0, 30.0]])
    rois = jittered_rois(boxes, 4, 0.1, (H, W))
    assert rois.shape == (10, 4) and torch.equal(rois[:2], boxes)
    assert (rois[:, 2:] > rois[:, :2]).all() and (rois >= 0).all() and (rois <= 32).all()
    iou = box_iou(rois, boxes)[torch.arange(10), torch.arange(10) % 2]
    assert (iou > 0.6).all() and (iou[2:] < 1).any()


def _tiny_cfg(**kw) -> ModelConfig:
    base = {"backbone": "resnet18_fpn", "fpn_channels": 16, "mask_head_channels": 8,
            "representation_size": 32, "min_size": 64, "max_size": 64, "box_batch_size_per_image": 64,
            "rpn_batch_size_per_image": 16, "rpn_post_nms_top_n_test": 50,
            "box_detections_per_img": 10}
    base.update(kw)
    return ModelConfig(**base)


def test_the_box_sampler_treats_proposals_on_a_teacher_only_instance_as_neither_class():
    torch.manual_seed(0)
    heads = build_model(_tiny_cfg(), 2, {1}).roi_heads
    target = _target()
    # Proposals on all three instances (and the ground truth, which torchvision adds) and two
    # on the background.
    background = torch.tensor([[16.0, 0.0, 30.0, 8.0], [20.0, 2.0, 32.0, 12.0]])
    proposals = [torch.cat([background] + [target["boxes"] + d for d in (0.0, 0.5, -0.5, 1.0)])]
    sampled, _, labels, _ = heads.select_training_samples(proposals, [target])
    on_shape = box_iou(sampled[0], target["boxes"][2:]).flatten() >= 0.5
    assert not on_shape.any()  # never foreground, never background: not sampled at all
    assert (labels[0] >= 0).all()
    assert set(labels[0].tolist()) == {0, 1, 2}  # the others are, as before


@pytest.mark.parametrize("mode", ["agnostic", "teacher_student"])
def test_a_training_step_with_teacher_only_instances_adds_the_objecthood_loss(mode):
    """The mask branch adds loss_mask_objecthood for a batch with teacher-only instances, on
    resized targets and pixel-fused heads; a batch without them does not."""
    torch.manual_seed(0)
    model = build_model(_tiny_cfg(mode=mode, mask_pixel_channels=4, head_norm="gn",
                                  teacher_ignore_unseen_boxes=True), 2, {1}).train()
    target = _target()  # a 32 px image: the model's transform doubles it to 64
    image = torch.rand(3, H, W)
    plain = model([image], [{k: v for k, v in target.items() if k != TEACHER_ONLY}])
    assert OBJECTHOOD_LOSS not in plain

    losses = model([image], [target])
    assert set(losses) == set(plain) | {OBJECTHOOD_LOSS}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses[OBJECTHOOD_LOSS].item() > 0
    sum(losses.values()).backward()
    stem = model.roi_heads.mask_branch.pixel_stem
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in stem.parameters())
