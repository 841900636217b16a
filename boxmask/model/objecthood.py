"""The random-shapes lever's loss: the class-agnostic teacher learns the teacher-only instances.

Not in the paper. boxmask.data.random_shapes pastes made-up shapes into training images as
instances with ``labels`` -1 and ``teacher_only`` True (its docstring says why that label). The
box sampler ignores the proposals they match, so none of them is a positive RoI and the mask
losses of :class:`~boxmask.model.mask_branch.TeacherStudentMaskBranch` never see them. This
module gives the teacher (F_t; the agnostic baseline's only head) its own loss on them,
``loss_mask_objecthood``, on RoIs made from their ground-truth boxes: each box as it is (as
torchvision adds the ground-truth boxes to the proposals) and ``copies`` jittered copies (each
side moved by up to ``jitter`` of the box's width or height, about what a positive proposal of
IoU >= 0.5 is off by). Its target is the shape's mask; with
``teacher_ignore_unseen_boxes`` the cells inside an unseen instance's box (other than the
shape's own) are left out, as for L_T.

A separate loss rather than more RoIs in L_T keeps the paper's L_T as it was (its mean over the
seen positives) and lets ``train.loss_weights`` weigh the lever (``mask_objecthood``).

Wiring (in ``TeacherStudentMaskBranch.losses``, after ``loss_mask_teacher``)::

    if self.teacher is not None and has_teacher_only(targets):
        losses[OBJECTHOOD_LOSS] = objecthood_loss(self, features, image_shapes, targets)

The targets are those the model's transform returns (boxes and masks in the resized frame);
``features`` holds the pixel stem's map when the heads fuse one (``run_teacher`` reads it).
Every target of a batch carries ``teacher_only`` when the lever is on (all False in an image
that got no shape), so the loss is there, zero or not, in every step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.nn import functional as F

from boxmask.model.pseudo_masks import box_interior_on_rois, project_masks_on_rois

if TYPE_CHECKING:
    from boxmask.model.mask_branch import TeacherStudentMaskBranch

OBJECTHOOD_LOSS = "loss_mask_objecthood"
# The target key of boxmask.data.random_shapes (the model does not import data: a key of the
# target dict is the contract, as ``mask_valid`` is; a test holds the two names equal).
TEACHER_ONLY = "teacher_only"


def has_teacher_only(targets: list[dict[str, torch.Tensor]]) -> bool:
    """True when the batch comes from the random-shapes transform (the lever is on)."""
    return any(TEACHER_ONLY in t for t in targets)


def jittered_rois(boxes: torch.Tensor, copies: int, jitter: float,
                  image_shape: tuple[int, int]) -> torch.Tensor:
    """``[(1 + copies) * K, 4]``: the ``K`` boxes as they are, then ``copies`` rounds of jittered
    copies (each side moved by a uniform fraction in ``[-jitter, jitter]`` of the box's width or
    height), clipped to the image and kept at least one pixel wide and high. Row ``r`` is of box
    ``r % K``."""
    if copies == 0 or len(boxes) == 0:
        return boxes.clone()
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2).repeat(copies, 1)
    shift = (torch.rand(size.shape, device=boxes.device) * 2 - 1) * jitter * size
    moved = boxes.repeat(copies, 1) + shift
    height, width = image_shape
    moved[:, 0::2] = moved[:, 0::2].clamp(0, width)
    moved[:, 1::2] = moved[:, 1::2].clamp(0, height)
    moved[:, 2:] = torch.maximum(moved[:, 2:], moved[:, :2] + 1)
    return torch.cat([boxes, moved])


def objecthood_loss(branch: TeacherStudentMaskBranch, features: dict[str, torch.Tensor],
                    image_shapes: list[tuple[int, int]], targets: list[dict[str, torch.Tensor]],
                    copies: int = 3, jitter: float = 0.1) -> torch.Tensor:
    """The teacher's per-pixel BCE on the teacher-only instances of a batch (module docstring).

    Args:
        branch: the mask branch; it must have a teacher.
        features: FPN levels (and ``pixels`` for pixel-fused heads) of the batch.
        image_shapes: resized (h, w) of each image.
        targets: per image ``boxes [K, 4]``, ``masks [K, H, W]``, ``teacher_only [K]`` (absent:
            no such instance) and ``mask_valid [K]`` (for ``teacher_ignore_unseen_boxes``).
    Returns:
        A scalar; a zero that still depends on every teacher weight when the batch has no
        teacher-only instance (the loss dict keeps its keys, DDP its gradients).
    """
    if branch.teacher is None:
        raise ValueError("the objecthood loss trains the class-agnostic teacher; this branch "
                         f"({branch.mode}) has none")
    rois, matched = [], []
    for t, shape in zip(targets, image_shapes, strict=True):
        index = (t[TEACHER_ONLY].nonzero().flatten() if TEACHER_ONLY in t
                 else torch.zeros(0, dtype=torch.int64, device=t["boxes"].device))
        rois.append(jittered_rois(t["boxes"][index].float(), copies, jitter, shape))
        matched.append(index.repeat(copies + 1) if copies else index)
    if sum(len(r) for r in rois) == 0:
        return sum(p.sum() for p in branch.teacher.parameters()) * 0.0
    x = branch.roi_pool(features, rois, image_shapes)
    logits = branch.run_teacher(x, features, rois)[:, 0]
    size = logits.shape[-1]
    truth = torch.cat([project_masks_on_rois(t["masks"], r, m, size, branch.mask_target_aligned)
                       for t, r, m in zip(targets, rois, matched, strict=True)])
    keep = torch.ones_like(truth, dtype=torch.bool)
    if branch.teacher_ignore_unseen_boxes:
        keep = _outside_boxes_without_masks(targets, rois, size) | (truth >= 0.5)
    weight = keep.to(logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits, truth.to(logits.dtype), weight=weight,
                                              reduction="sum")
    return loss / weight.sum().clamp(min=1.0)


def _outside_boxes_without_masks(targets: list[dict[str, torch.Tensor]],
                                 rois: list[torch.Tensor], size: int) -> torch.Tensor:
    """``[P, size, size]`` bool: RoI cells outside the box of every instance of the image that
    has no mask (``mask_valid`` False: an unseen category's)."""
    out = []
    for t, r in zip(targets, rois, strict=True):
        inside = torch.zeros((len(r), size, size), dtype=torch.bool, device=r.device)
        if "mask_valid" in t:
            for box in t["boxes"][~t["mask_valid"].bool()]:
                inside |= box_interior_on_rois(r, box.expand(len(r), 4), size)
        out.append(~inside)
    return torch.cat(out)
