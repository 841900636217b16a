"""The teacher-student mask branch: RoI pooling, F_t and F_s, their losses, their inference.

Kept out of ``RoIHeads.forward`` on purpose (torchvision's forward branches on every optional
head in one long method): the box branch stays torchvision's, and everything the paper adds
lives here.

Modes:
- ``agnostic``: the teacher alone, trained on seen masks; its single channel is the mask
  (the class-agnostic Mask R-CNN baseline).
- ``teacher_student``: the paper. L_T on seen instances; L_S on all instances, with the ground
  truth for seen and the cleaned sigma(M_t) for unseen; the student alone at inference.
- ``oracle``: the student alone, trained on every instance that has a real mask (run it with a
  split where every category is seen).

``pixel_channels`` (not in the paper) gives both heads the RoI crop of a full-resolution pixel
stem (boxmask/model/heads.py ``PixelStem``); its map travels with the FPN levels as
``features["pixels"]`` (``BoxMaskRCNN`` puts it there).

``data.random_shapes`` (not in the paper): instances the random-shapes transform pastes carry no
category (label -1, ``teacher_only``); they never become positives, and the teacher alone
learns their masks (``loss_mask_objecthood``, boxmask/model/objecthood.py).

``unseen_box_loss`` (not in the paper) adds BoxInst's box-only terms (boxmask/model/box_losses.py)
on the unseen positives of the head that serves masks: the student in ``teacher_student``, the
teacher in ``agnostic``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import MultiScaleRoIAlign, roi_align

from boxmask.model.box_losses import (
    PAIRWISE_DILATION,
    box_projection_loss,
    color_similarity,
    pairwise_loss,
)
from boxmask.model.heads import MaskHead, NormLayer, PixelStem, student_head, teacher_head
from boxmask.model.mask_quality import QUALITY_MASK_SIZE, MaskQualityHead, quality_loss
from boxmask.model.objecthood import OBJECTHOOD_LOSS, has_teacher_only, objecthood_loss
from boxmask.model.paste import paste_masks
from boxmask.model.pseudo_masks import (
    Sigma,
    apply_sigma,
    box_fit_logit_shift,
    box_interior_on_rois,
    clean_pseudo_masks,
    fit_then_crf,
    fit_to_box,
    project_masks_on_rois,
    resize_probs,
    seen_union_on_rois,
)

Mode = Literal["agnostic", "teacher_student", "oracle"]
# The key of the pixel stem's map in the features dict: not an FPN level, so the RPN and the
# RoI poolers (which read FPN_LEVELS by name) never see it.
PIXELS = "pixels"
BoxLoss = Literal["none", "projection", "boxinst"]

STUDENT_RESOLUTION = 28


def mask_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-pixel binary cross-entropy averaged over instances and pixels (Mask R-CNN's L_mask).

    An empty selection gives a zero that still depends on ``logits``, so every parameter keeps a
    gradient (DDP needs that) and the loss dict keeps a stable set of keys.
    """
    if logits.numel() == 0:
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits, targets)


def mask_dice(logits: torch.Tensor, targets: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss of ``logits`` ``[N, R, R]`` against ``targets`` (same shape, in [0, 1]),
    one per instance, averaged: ``1 - (2 sum(p t) + eps) / (sum(p) + sum(t) + eps)``.

    Not in the paper (``model.mask_dice_weight``). Per instance, so a small object counts as
    much as a large one, as in the box-prompted mean IoU (BCE weighs every cell alike). ``eps``
    of one cell keeps an empty target from a 0/0. Empty selection: a zero that keeps the graph.
    """
    if logits.numel() == 0:
        return logits.sum() * 0.0
    p = logits.sigmoid().flatten(1)
    t = targets.to(p.dtype).flatten(1)
    dice = (2.0 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)
    return (1.0 - dice).mean()


def masked_mask_bce(logits: torch.Tensor, targets: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """:func:`mask_bce` averaged over the cells where ``keep`` (bool, same shape) is True."""
    if logits.numel() == 0:
        return logits.sum() * 0.0
    weight = keep.to(logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits, targets, weight=weight, reduction="sum")
    return loss / weight.sum().clamp(min=1.0)


def _outside_unseen_boxes(targets: list[dict[str, torch.Tensor]], rois: list[torch.Tensor],
                          size: int) -> torch.Tensor:
    """``[P, size, size]`` bool: RoI cells outside every unseen instance's box of the image."""
    out = []
    for t, r in zip(targets, rois, strict=True):
        inside = torch.zeros((len(r), size, size), dtype=torch.bool, device=r.device)
        for box in t["boxes"][~_mask_valid(t)]:
            inside |= box_interior_on_rois(r, box.expand(len(r), 4), size)
        out.append(~inside)
    return torch.cat(out) if out else torch.zeros((0, size, size), dtype=torch.bool)


#: The logit a box-guarded mask gets on its whole grid (sigmoid 1 - 6e-6): the box itself.
BOX_LOGIT = 12.0


def box_guard(logits: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
    """``model.served_box_guard: expected_iou``: each mask of ``logits`` ``[N, 1, R, R]`` (its
    RoI grid is its box) for which ``on`` ``[N]`` holds becomes its box (every cell
    :data:`BOX_LOGIT`) where the box's expected IoU with the object beats the mask's, reading
    the mask's probabilities p as the chance that each cell is the object's:

    - the box: E|box & object| / |box| = mean(p) (the object lies inside its box);
    - the mask M = {p >= 0.5}: sum(p over M) / (|M| + sum(p outside M)), the expected
      intersection over the expected union.

    Not in the paper. A mask confident where it is drawn and unsure about much of the rest of its
    box (an object the head half-recognises, that fills its box) loses to the box; a confident
    mask never does. Export-friendly (reductions and ``where``).
    """
    p = logits.sigmoid()
    inside = (p >= 0.5).to(p.dtype)
    expected_mask = (p * inside).sum(dim=(1, 2, 3)) / (
        inside.sum(dim=(1, 2, 3)) + (p * (1.0 - inside)).sum(dim=(1, 2, 3))).clamp(min=1e-6)
    expected_box = p.mean(dim=(1, 2, 3))
    use_box = on & (expected_box > expected_mask)
    return torch.where(use_box.view(-1, 1, 1, 1), torch.full_like(logits, BOX_LOGIT), logits)


class TeacherStudentMaskBranch(nn.Module):
    """RoI features -> teacher / student mask logits, losses and inference.

    Args:
        roi_pool: pools ``[P, D, S, S]`` RoI features from the FPN levels.
        in_channels: D, the FPN width.
        conv_channels: width of both heads' conv towers.
        num_classes: C, categories without background.
        mode: ``agnostic``, ``teacher_student`` or ``oracle``.
        sigma: post-processing of pseudo-masks (``teacher_student`` only).
        teacher_convs: depth of F_t (4 in the paper, 12 for the deeper teacher of Table 3).
        teacher_resolution: 28 or 56.
        norm_layer: norm after each conv of both towers (None: plain convs, torchvision's v1).
        mask_target_aligned: crop ground-truth masks onto RoIs pixel-aligned (True) or on
            torchvision's half-pixel-shifted grid (False); see ``ModelConfig``.
        unseen_box_loss: ``projection`` or ``boxinst`` (projection + pairwise) on the unseen
            positives' masks, from their boxes alone; ``none``: the paper's losses only.
        box_pairwise_warmup_iters: the pairwise term's weight rises linearly from 0 to 1 over
            this many training steps (BoxInst: 10k of 90k).
        box_pairwise_dilation: how many cells apart the pairwise term's neighbours are
            (BoxInst: 2; see ``ModelConfig``).
        pixel_channels: width of the pixel stem whose RoI crops both heads fuse before their
            logits; 0: the paper's heads (no stem).
        known_targets: ``checkpoint`` keeps a frozen copy of the student (the *anchor*, set by
            :meth:`anchor_known`) whose channel is the target of box-only instances of the
            categories it knows; ``teacher``: the paper's pseudo-masks for every box-only one.
        pseudo_mask_fit: ``box``: the teacher's pseudo-masks are thresholded as low as it takes
            to touch their box (:func:`~boxmask.model.pseudo_masks.fit_to_box`) instead of at
            sigma's 0.5 (``threshold``), or with ``sigma: crf`` shifted so that threshold
            falls at 0.5 before the CRF (:func:`~boxmask.model.pseudo_masks.fit_then_crf`);
            ``none``: the paper's.
        clean_with_known_masks: with the anchor, the pseudo-masks are also cleaned of the
            anchor's masks of the image's box-only instances of known categories (on their true
            boxes), as the paper cleans them of the seen masks: box-only data has none.
        teacher_box_loss: BoxInst's terms (as ``unseen_box_loss``) on the *teacher's* masks of
            the box-only positives (``teacher_student`` only), logged as
            ``loss_teacher_projection`` / ``loss_teacher_pairwise``: a teacher that learned the
            new categories as background learns from their boxes that they are objects.
        known_pseudo_targets: ``refit`` (with the anchor): box-only instances of the categories
            the anchor learned from pseudo-masks (:meth:`anchor_known`'s ``relearn``) take its
            mask made into a pseudo-mask (sigma, ``pseudo_mask_fit``, cleaning) instead of its
            soft probabilities: a second round of self-training. ``soft``: soft targets for all.
        known_distill: ``all`` (with the anchor): on every positive, whatever its category, the
            student's channels of the categories the anchor knows (less the relearned ones)
            also match the anchor's probabilities (``loss_mask_distill``: Learning without
            Forgetting's term on all new data, not only on the known categories' instances);
            ``instances``: the known instances' own channel only.
        self_train_every: every this many training steps the student is copied into a frozen
            *round head*, whose masks, made into pseudo-masks (sigma, ``pseudo_mask_fit``,
            cleaning), then teach the box-only instances in the teacher's place: rounds of
            self-training inside one run (``teacher_student`` only; 0: the teacher throughout).
        mask_quality: add the class-agnostic mask-quality head (boxmask/model/mask_quality.py):
            the predicted IoU of each served mask, trained on the instances with true masks
            (``loss_mask_quality``), on detached inputs (it never changes a mask).
        mask_quality_channels, mask_quality_fc: its conv width (0: ``conv_channels``) and its
            fully connected width.
        mask_dice_weight: weight of a Dice term (:func:`mask_dice`, ``loss_mask_dice``) on the
            student's masks beside its BCE, on the same instances and targets; 0: off.
    """

    def __init__(self, roi_pool: MultiScaleRoIAlign, in_channels: int, conv_channels: int,
                 num_classes: int, mode: Mode = "teacher_student", sigma: Sigma = "threshold",
                 teacher_convs: int = 4, teacher_resolution: int = 28,
                 interact_warmup_iters: int = 0,
                 teacher_ignore_unseen_boxes: bool = False,
                 norm_layer: NormLayer | None = None,
                 mask_target_aligned: bool = True,
                 unseen_box_loss: BoxLoss = "none",
                 box_pairwise_warmup_iters: int = 0,
                 box_pairwise_dilation: int = PAIRWISE_DILATION,
                 pixel_channels: int = 0,
                 known_targets: Literal["teacher", "checkpoint"] = "teacher",
                 mask_quality: bool = False, mask_quality_channels: int = 32,
                 mask_quality_fc: int = 128,
                 pseudo_mask_fit: Literal["none", "box"] = "none",
                 clean_with_known_masks: bool = False,
                 teacher_box_loss: BoxLoss = "none",
                 known_pseudo_targets: Literal["soft", "refit"] = "soft",
                 known_distill: Literal["instances", "all"] = "instances",
                 self_train_every: int = 0,
                 served_mask_fit_cover: float = 0.0, served_box_guard: bool = False,
                 mask_dice_weight: float = 0.0) -> None:
        super().__init__()
        self.mask_dice_weight = mask_dice_weight
        if mode not in ("agnostic", "teacher_student", "oracle"):
            raise ValueError(f"unknown mode {mode!r}")
        if unseen_box_loss not in ("none", "projection", "boxinst"):
            raise ValueError(f"unknown unseen_box_loss {unseen_box_loss!r}")
        self.roi_pool = roi_pool
        self.mode = mode
        self.sigma = sigma
        self.num_classes = num_classes
        roi_size = roi_pool.output_size[0]
        self.teacher: MaskHead | None = None
        self.student: MaskHead | None = None
        self.pixel_stem = PixelStem(pixel_channels, norm_layer) if pixel_channels else None
        if mode in ("agnostic", "teacher_student"):
            self.teacher = teacher_head(in_channels, conv_channels, teacher_convs,
                                        teacher_resolution, roi_size, norm_layer, pixel_channels)
        if mode in ("teacher_student", "oracle"):
            self.student = student_head(in_channels, conv_channels, num_classes, norm_layer,
                                        pixel_channels)
        self.interact_warmup_iters = interact_warmup_iters
        self.teacher_ignore_unseen_boxes = teacher_ignore_unseen_boxes
        self.mask_target_aligned = mask_target_aligned
        # The oracle has no unseen instances: nothing for a box loss to act on.
        self.unseen_box_loss: BoxLoss = unseen_box_loss if mode != "oracle" else "none"
        self.box_pairwise_warmup_iters = box_pairwise_warmup_iters
        self.box_pairwise_dilation = box_pairwise_dilation
        self.pseudo_mask_fit = pseudo_mask_fit
        self.clean_with_known_masks = clean_with_known_masks
        self.quality: MaskQualityHead | None = None
        if mask_quality:
            self.quality = MaskQualityHead(in_channels, mask_quality_channels or conv_channels,
                                           roi_size, fc_channels=mask_quality_fc,
                                           norm_layer=norm_layer)
        # The anchor: the init_from checkpoint's student, frozen, and which labels it knows.
        self.anchor: MaskHead | None = None
        if known_targets == "checkpoint" and mode == "teacher_student":
            self.anchor = student_head(in_channels, conv_channels, num_classes, norm_layer,
                                       pixel_channels)
            self.anchor.requires_grad_(False)
            self.register_buffer("known_labels", torch.zeros(num_classes + 1, dtype=torch.bool))
            # Which of them it learned from pseudo-masks (known_pseudo_targets: refit). Not
            # persistent: set from the checkpoint's categories each time the model is built, so
            # checkpoints from before this option load as they are.
            self.register_buffer("relearn_labels", torch.zeros(num_classes + 1, dtype=torch.bool),
                                 persistent=False)
        if known_pseudo_targets not in ("soft", "refit"):
            raise ValueError(f"unknown known_pseudo_targets {known_pseudo_targets!r}")
        self.known_pseudo_targets = known_pseudo_targets
        if known_distill not in ("instances", "all"):
            raise ValueError(f"unknown known_distill {known_distill!r}")
        self.known_distill = known_distill
        self.self_train_every = self_train_every if mode == "teacher_student" else 0
        self.round_head: MaskHead | None = None
        if self.self_train_every > 0:
            self.round_head = student_head(in_channels, conv_channels, num_classes, norm_layer,
                                           pixel_channels)
            self.round_head.requires_grad_(False)
            # Whether the round head holds a round's student yet (a resumed run keeps it).
            self.register_buffer("round_ready", torch.zeros((), dtype=torch.bool))
        # Served masks fitted to their box (model.served_mask_fit), for the labels in
        # ``served_fit_labels`` (set by :meth:`set_served_fit` from the checkpoint's categories;
        # not persistent, so checkpoints load as they are). 0: off.
        self.served_mask_fit_cover = served_mask_fit_cover
        self.register_buffer("served_fit_labels", torch.zeros(num_classes + 1, dtype=torch.bool),
                             persistent=False)
        # model.served_box_guard (expected_iou): those labels' masks become their box where the
        # box is the better bet (:func:`box_guard`).
        self.served_box_guard = served_box_guard
        if teacher_box_loss not in ("none", "projection", "boxinst"):
            raise ValueError(f"unknown teacher_box_loss {teacher_box_loss!r}")
        self.teacher_box_loss: BoxLoss = teacher_box_loss if mode == "teacher_student" else "none"
        if (mode == "teacher_student" and sigma == "interact") or "boxinst" in (
                self.unseen_box_loss, self.teacher_box_loss) or self.self_train_every > 0:
            # Training steps taken, in the state dict so that a resumed run continues the
            # warm-up where it stopped.
            self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def anchor_known(self, labels: set[int], relearn: set[int] | None = None) -> None:
        """Copy the student (as loaded from a checkpoint) into the frozen anchor, which then
        gives the targets of the box-only instances of ``labels`` (1..C); ``relearn`` (a subset:
        the categories the checkpoint learned without masks) get them as pseudo-masks under
        ``known_pseudo_targets='refit'``."""
        if self.anchor is None or self.student is None:
            raise ValueError("this branch has no anchor: build it with known_targets='checkpoint'")
        self.anchor.load_state_dict(self.student.state_dict())
        self.known_labels.zero_()
        for label in labels:
            self.known_labels[int(label)] = True
        self.relearn_labels.zero_()
        if self.known_pseudo_targets == "refit":
            for label in relearn or set():
                if int(label) not in labels:
                    raise ValueError(f"label {label} to relearn is not a known one")
                self.relearn_labels[int(label)] = True

    @property
    def needs_images(self) -> bool:
        """True when training needs the input images (the CRF and the pairwise term read RoI
        crops)."""
        return (self.mode == "teacher_student" and self.sigma == "crf") or \
            "boxinst" in (self.unseen_box_loss, self.teacher_box_loss)

    @property
    def current_sigma(self) -> Sigma:
        """sigma for this step: ``threshold`` during the interact warm-up."""
        if self.sigma == "interact" and int(self.train_steps) <= self.interact_warmup_iters:
            return "threshold"
        return self.sigma

    @property
    def output_resolution(self) -> int:
        """R of the inference masks: the student's, or the teacher's in agnostic mode."""
        if self.student is not None:
            return STUDENT_RESOLUTION
        assert self.teacher is not None
        return self.roi_pool.output_size[0] * 2 ** self.teacher.num_upsample

    # -- the heads on RoIs -------------------------------------------------------------------
    def run_teacher(self, x: torch.Tensor, features: dict[str, torch.Tensor],
                    rois: list[torch.Tensor]) -> torch.Tensor:
        """F_t on pooled RoI features ``x [P, D, S, S]`` -> logits ``[P, 1, R_t, R_t]``."""
        assert self.teacher is not None
        return self.teacher(x, self._pixel_crops(self.teacher, features, rois))

    def run_student(self, x: torch.Tensor, features: dict[str, torch.Tensor],
                    rois: list[torch.Tensor]) -> torch.Tensor:
        """F_s on pooled RoI features ``x [P, D, S, S]`` -> logits ``[P, C, 28, 28]``."""
        assert self.student is not None
        return self.student(x, self._pixel_crops(self.student, features, rois))

    def _pixel_crops(self, head: MaskHead, features: dict[str, torch.Tensor],
                     rois: list[torch.Tensor]) -> torch.Tensor | None:
        """The pixel map's RoI crops at ``head``'s output resolution, ``[P, pixel_channels, R,
        R]``; None without a stem. The map has the padded batch's own resolution (scale 1)."""
        if self.pixel_stem is None:
            return None
        if PIXELS not in features:
            raise ValueError(f"this model's mask heads fuse pixel features: features[{PIXELS!r}] "
                             "(BoxMaskRCNN computes it with mask_branch.pixel_stem) is missing")
        size = self.roi_pool.output_size[0] * 2 ** head.num_upsample
        return roi_align(features[PIXELS], rois, (size, size), 1.0, sampling_ratio=2,
                         aligned=True)

    @torch.no_grad()
    def set_served_fit(self, labels: set[int]) -> None:
        """Serve the masks of ``labels`` (1..C) fitted to their box (``model.served_mask_fit``)
        and/or guarded by their box (``model.served_box_guard``); a no-op unless the branch was
        built with either."""
        self.served_fit_labels.zero_()
        if self.served_mask_fit_cover > 0 or self.served_box_guard:
            for label in labels:
                self.served_fit_labels[label] = True

    # -- inference -------------------------------------------------------------------------
    def mask_logits(self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                    image_shapes: list[tuple[int, int]], labels: list[torch.Tensor]) -> torch.Tensor:
        """Logits of each box's own mask.

        Args:
            features: FPN levels ``'0'..'3'`` of a batch.
            boxes (list[Tensor[N_i, 4]]): xyxy in the resized-image frame.
            image_shapes: resized (h, w) of each image.
            labels (list[Tensor[N_i]]): contiguous labels 1..C (ignored in agnostic mode).
        Returns:
            Tensor[sum N_i, 1, R, R]: the student channel of each box's label, or the teacher.
        """
        return self._served_logits(self.roi_pool(features, boxes, image_shapes), features, boxes,
                                   labels)

    def _served_logits(self, x: torch.Tensor, features: dict[str, torch.Tensor],
                       boxes: list[torch.Tensor], labels: list[torch.Tensor]) -> torch.Tensor:
        flat_labels = torch.cat(labels) if labels else x.new_zeros((0,), dtype=torch.int64)
        if self.student is None:
            served = self.run_teacher(x, features, boxes)
        else:
            logits = self.run_student(x, features, boxes)
            # gather rather than advanced indexing: one ONNX GatherElements, valid for N = 0 too.
            channel = (flat_labels - 1).clamp(min=0).view(-1, 1, 1, 1)
            served = logits.gather(1, channel.expand(-1, 1, logits.shape[-2], logits.shape[-1]))
        if self.served_mask_fit_cover > 0 and self.student is not None:
            # model.served_mask_fit: the fitted threshold moved to 0.5 for the labels learned
            # from boxes alone; the others' shift is 0. (The agnostic teacher is served as it is.)
            shift = box_fit_logit_shift(served[:, 0].sigmoid(), self.served_mask_fit_cover)
            on = self.served_fit_labels[flat_labels].to(served.dtype)
            served = served - (shift * on).view(-1, 1, 1, 1)
        if self.served_box_guard:
            served = box_guard(served, self.served_fit_labels[flat_labels])
        return served

    def mask_logits_and_quality(self, features: dict[str, torch.Tensor],
                                boxes: list[torch.Tensor], image_shapes: list[tuple[int, int]],
                                labels: list[torch.Tensor]
                                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`mask_logits` and, with the mask-quality head, each mask's predicted IoU
        ``[sum N_i]`` (None without the head)."""
        x = self.roi_pool(features, boxes, image_shapes)
        logits = self._served_logits(x, features, boxes, labels)
        if self.quality is None:
            return logits, None
        probs = resize_probs(logits[:, 0].sigmoid(), QUALITY_MASK_SIZE)[:, None]
        return logits, self.quality(x, probs)

    def predict(self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                image_shapes: list[tuple[int, int]], labels: list[torch.Tensor]) -> list[torch.Tensor]:
        """Mask probabilities per image: ``list[Tensor[N_i, 1, R, R]]``."""
        probs = self.mask_logits(features, boxes, image_shapes, labels).sigmoid()
        if len(boxes) == 1:
            # No split for one image: a traced split would freeze N to the example's count.
            return [probs]
        return list(probs.split([len(b) for b in boxes], dim=0))

    # -- training --------------------------------------------------------------------------
    def losses(self, features: dict[str, torch.Tensor], rois: list[torch.Tensor],
               image_shapes: list[tuple[int, int]], matched_idxs: list[torch.Tensor],
               targets: list[dict[str, torch.Tensor]],
               images: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Mask losses on the positive proposals.

        Args:
            rois (list[Tensor[P_i, 4]]): positive proposals of each image.
            matched_idxs (list[Tensor[P_i]]): the ground-truth instance each one matched.
            targets: per image ``boxes [K,4]``, ``labels [K]``, ``masks [K,H,W]`` and
                ``mask_valid [K]`` (False: no usable mask, e.g. an unseen category; such a mask
                is never read, whatever it holds).
            images (Tensor[B, 3, H, W]): the padded batch as RGB 0..255 (``BoxMaskRCNN.pixels``),
                for ``sigma=crf`` and ``unseen_box_loss=boxinst`` only.
        Returns:
            ``loss_mask_teacher`` and/or ``loss_mask_student``; with ``unseen_box_loss`` also
            ``loss_mask_projection`` (and ``loss_mask_pairwise`` for ``boxinst``).
        """
        if hasattr(self, "train_steps"):
            self.train_steps += 1
            if self.round_head is not None and int(self.train_steps) % self.self_train_every == 0:
                assert self.student is not None
                with torch.no_grad():  # a round ends: its student teaches the next one
                    self.round_head.load_state_dict(self.student.state_dict())
                    self.round_ready.fill_(True)
        x = self.roi_pool(features, rois, image_shapes)
        labels = torch.cat([t["labels"][m] for t, m in zip(targets, matched_idxs, strict=True)])
        valid = torch.cat([_mask_valid(t)[m] for t, m in zip(targets, matched_idxs, strict=True)])
        losses: dict[str, torch.Tensor] = {}

        teacher_logits = None
        served = None  # [P, R, R]: the logits of the head that serves masks at inference
        if self.teacher is not None:
            teacher_logits = self.run_teacher(x, features, rois)[:, 0]
            size = teacher_logits.shape[-1]
            gt = self._project_valid(targets, rois, matched_idxs, size)
            if self.teacher_ignore_unseen_boxes:
                keep = _outside_unseen_boxes(targets, rois, size) | (gt >= 0.5)
                losses["loss_mask_teacher"] = masked_mask_bce(teacher_logits[valid], gt[valid],
                                                              keep[valid])
            else:
                losses["loss_mask_teacher"] = mask_bce(teacher_logits[valid], gt[valid])
            served = teacher_logits
            if has_teacher_only(targets):
                # data.random_shapes (not in the paper): pasted shapes of no category train the
                # class-agnostic teacher alone (boxmask/model/objecthood.py).
                losses[OBJECTHOOD_LOSS] = objecthood_loss(self, features, image_shapes, targets)

        all_logits = None
        anchor_logits: torch.Tensor | None = None  # [P, C, 28, 28] where the anchor is read
        if self.student is not None:
            all_logits = self.run_student(x, features, rois)
            index = torch.arange(all_logits.shape[0], device=all_logits.device)
            student_logits = all_logits[index, labels - 1]  # only the label's channel (Eq. 3)
            served = student_logits
            target = self._project_valid(targets, rois, matched_idxs, STUDENT_RESOLUTION)
            supervised = valid.clone()
            if self.mode == "teacher_student":
                unseen = ~valid
                known = torch.zeros_like(unseen)
                relearn = torch.zeros_like(unseen)
                if self.anchor is not None:
                    known = unseen & self.known_labels[labels]
                    relearn = known & self.relearn_labels[labels]
                    known = known & ~relearn
                    unseen = unseen & ~known & ~relearn
                    # The anchor runs once, on the positives that read it: every one for the
                    # distillation term, else the known and relearned ones.
                    need = known | relearn
                    if self.known_distill == "all":
                        need = torch.ones_like(need)
                    if need.any():
                        anchor_logits = x.new_zeros((len(need), self.num_classes,
                                                     STUDENT_RESOLUTION, STUDENT_RESOLUTION))
                        anchor_logits[need] = self._frozen_logits(self.anchor, x, features, rois,
                                                                  need)
                cleaning = targets
                if self.anchor is not None and self.clean_with_known_masks and (
                        unseen.any() or relearn.any()):
                    cleaning = self._with_known_masks(features, targets, image_shapes)
                if unseen.any():
                    assert teacher_logits is not None
                    source = teacher_logits[unseen]
                    if self.round_head is not None and bool(self.round_ready):
                        # The last round's student, in the teacher's place.
                        source = _own_channel(self._frozen_logits(
                            self.round_head, x, features, rois, unseen), labels[unseen])
                    target[unseen] = self._pseudo_masks(
                        source, student_logits[unseen], rois, matched_idxs,
                        cleaning, unseen, images, image_shapes)
                if known.any():
                    assert anchor_logits is not None
                    with torch.no_grad():
                        anchor = _own_channel(anchor_logits[known], labels[known])
                        # Soft targets (the anchor's probabilities, as in Learning without
                        # Forgetting), kept inside the instance's box: thresholding them would
                        # pull the student's own confident outputs towards 0/1 and move them.
                        inside = box_interior_on_rois(
                            torch.cat(rois)[known], _matched_boxes(targets, matched_idxs)[known],
                            STUDENT_RESOLUTION)
                        target[known] = anchor.sigmoid() * inside.to(anchor.dtype)
                if relearn.any():
                    # Round two: the anchor (round one's student) stands in for the teacher.
                    assert anchor_logits is not None
                    target[relearn] = self._pseudo_masks(
                        _own_channel(anchor_logits[relearn], labels[relearn]),
                        student_logits[relearn], rois, matched_idxs, cleaning, relearn,
                        images, image_shapes)
                supervised = torch.ones_like(valid)
            losses["loss_mask_student"] = mask_bce(student_logits[supervised], target[supervised])
            if self.mask_dice_weight > 0:
                losses["loss_mask_dice"] = self.mask_dice_weight * mask_dice(
                    student_logits[supervised], target[supervised])
            if self.anchor is not None and self.known_distill == "all":
                losses["loss_mask_distill"] = self._distill_loss(all_logits, anchor_logits)

        if self.quality is not None:
            losses["loss_mask_quality"] = self._quality_loss(
                x, valid, labels, targets, rois, matched_idxs, teacher_logits, all_logits)

        if self.unseen_box_loss != "none":
            assert served is not None
            losses.update(self._box_losses(served[~valid], rois, matched_idxs, targets, ~valid,
                                           images))
        if self.teacher_box_loss != "none" and teacher_logits is not None:
            terms = self._box_losses(teacher_logits[~valid], rois, matched_idxs, targets, ~valid,
                                     images, kind=self.teacher_box_loss)
            losses.update({k.replace("loss_mask_", "loss_teacher_"): v for k, v in terms.items()})
        return losses

    def _distill_loss(self, all_logits: torch.Tensor,
                      anchor_logits: torch.Tensor | None) -> torch.Tensor:
        """BCE of the student's logits ``[P, C, 28, 28]`` on the anchor's kept channels (known,
        not relearned) against the anchor's probabilities (``anchor_logits``, same shape, None
        without positives), on every positive."""
        keep = (self.known_labels & ~self.relearn_labels)[1:]
        if anchor_logits is None or not bool(keep.any()) or all_logits.shape[0] == 0:
            return all_logits.sum() * 0.0
        return F.binary_cross_entropy_with_logits(all_logits[:, keep],
                                                  anchor_logits[:, keep].sigmoid())

    @torch.no_grad()
    def _frozen_logits(self, head: MaskHead, x: torch.Tensor, features: dict[str, torch.Tensor],
                       rois: list[torch.Tensor], select: torch.Tensor) -> torch.Tensor:
        """A frozen student-shaped head (the anchor, the round head) on the ``select``-ed
        positives: logits ``[S, C, 28, 28]``."""
        crops = self._pixel_crops(head, features, rois)
        return head(x[select], crops[select] if crops is not None else None)

    @torch.no_grad()
    def _with_known_masks(self, features: dict[str, torch.Tensor],
                          targets: list[dict[str, torch.Tensor]],
                          image_shapes: list[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
        """``targets`` in which the box-only instances of the anchor's categories carry the
        anchor's mask on their true box (>= 0.5, pasted at the targets' resolution) as a valid
        mask: what the pseudo-masks' cleaning reads, never a supervision target."""
        assert self.anchor is not None
        # The relearned categories' masks are themselves pseudo-masks in the making: an
        # instance must not be cleaned of its own mask.
        cleaners = self.known_labels & ~self.relearn_labels
        known = [~_mask_valid(t) & cleaners[t["labels"].clamp(min=0)] for t in targets]
        if not any(k.any() for k in known):
            return targets
        boxes = [t["boxes"][k] for t, k in zip(targets, known, strict=True)]
        x = self.roi_pool(features, boxes, image_shapes)
        crops = self._pixel_crops(self.anchor, features, boxes)
        logits = self.anchor(x, crops)
        labels = torch.cat([t["labels"][k] for t, k in zip(targets, known, strict=True)])
        probs = logits[torch.arange(len(labels), device=labels.device), labels - 1].sigmoid()
        out, start = [], 0
        for t, k, b in zip(targets, known, boxes, strict=True):
            n = len(b)
            if n == 0:
                out.append(t)
                continue
            h, w = t["masks"].shape[-2:]
            pasted = paste_masks(probs[start:start + n, None], b, (h, w))[:, 0] >= 0.5
            start += n
            masks = t["masks"].clone()
            masks[k] = pasted.to(masks.dtype)
            out.append({**t, "masks": masks, "mask_valid": _mask_valid(t) | k})
        return out

    def _quality_loss(self, x: torch.Tensor, valid: torch.Tensor, labels: torch.Tensor,
                      targets: list[dict[str, torch.Tensor]], rois: list[torch.Tensor],
                      matched_idxs: list[torch.Tensor], teacher_logits: torch.Tensor | None,
                      student_logits: torch.Tensor | None) -> torch.Tensor:
        """The quality head's L2 on the supervised positives: the served mask, the teacher's
        mask and the student's mask of another category, each against the truth."""
        assert self.quality is not None
        truth = self._project_valid(targets, rois, matched_idxs, QUALITY_MASK_SIZE)[valid]
        candidates = []
        with torch.no_grad():
            if student_logits is not None:
                sel = student_logits[valid].sigmoid()
                own = labels[valid] - 1
                index = torch.arange(sel.shape[0], device=sel.device)
                candidates.append(sel[index, own])
                if self.num_classes > 1:
                    shift = torch.randint(1, self.num_classes, own.shape, device=own.device)
                    candidates.append(sel[index, (own + shift) % self.num_classes])
            if teacher_logits is not None:
                candidates.append(resize_probs(teacher_logits[valid].sigmoid(), QUALITY_MASK_SIZE))
        return quality_loss(self.quality, x[valid].detach(), candidates, truth)

    def _box_losses(self, logits: torch.Tensor, rois: list[torch.Tensor],
                    matched_idxs: list[torch.Tensor], targets: list[dict[str, torch.Tensor]],
                    unseen: torch.Tensor, images: torch.Tensor | None,
                    kind: BoxLoss | None = None) -> dict[str, torch.Tensor]:
        """BoxInst's terms (``kind``, else ``unseen_box_loss``) on the unseen positives' mask
        logits ``[U, R, R]``."""
        kind = kind or self.unseen_box_loss
        size = logits.shape[-1]
        box_masks = box_interior_on_rois(torch.cat(rois)[unseen],
                                         _matched_boxes(targets, matched_idxs)[unseen], size)
        out = {"loss_mask_projection": box_projection_loss(logits, box_masks)}
        if kind == "boxinst":
            if images is None:
                raise ValueError("BoxInst's pairwise term needs the input images")
            with torch.no_grad():
                similarity = color_similarity(_roi_crops(images, rois, unseen, size),
                                              self.box_pairwise_dilation)
            ramp = 1.0
            if self.box_pairwise_warmup_iters > 0:
                ramp = min(1.0, float(self.train_steps) / self.box_pairwise_warmup_iters)
            out["loss_mask_pairwise"] = ramp * pairwise_loss(logits, similarity, box_masks,
                                                             self.box_pairwise_dilation)
        return out

    def _project_valid(self, targets: list[dict[str, torch.Tensor]], rois: list[torch.Tensor],
                       matched_idxs: list[torch.Tensor], size: int) -> torch.Tensor:
        """Ground-truth masks on the RoIs, ``[P, size, size]``; rows of instances without a
        valid mask are zero and are never selected by the losses."""
        out = []
        for t, r, m in zip(targets, rois, matched_idxs, strict=True):
            masks = t["masks"] * _mask_valid(t)[:, None, None].to(t["masks"].dtype)
            out.append(project_masks_on_rois(masks, r, m, size, self.mask_target_aligned))
        return torch.cat(out) if out else rois[0].new_zeros((0, size, size))

    @torch.no_grad()
    def _pseudo_masks(self, teacher_logits: torch.Tensor, student_logits: torch.Tensor,
                      rois: list[torch.Tensor], matched_idxs: list[torch.Tensor],
                      targets: list[dict[str, torch.Tensor]], unseen: torch.Tensor,
                      images: torch.Tensor | None,
                      image_shapes: list[tuple[int, int]],
                      sigma: Sigma | None = None, fit: bool = True) -> torch.Tensor:
        """Cleaned sigma(M_t) for the unseen positives, ``[U, 28, 28]`` in {0, 1}.
        ``teacher_logits`` is ``[U, R_t, R_t]`` (the anchor's channel for known categories);
        ``sigma`` overrides the branch's; ``fit=False`` leaves ``pseudo_mask_fit`` out."""
        teacher_probs = resize_probs(teacher_logits.sigmoid(), STUDENT_RESOLUTION)
        student_probs = student_logits.sigmoid()
        # Per proposal: its box, its instance's box, and the union of the image's seen masks on it.
        seen_on = [seen_union_on_rois(t["masks"], _mask_valid(t), r, STUDENT_RESOLUTION,
                                      self.mask_target_aligned)
                   for t, r in zip(targets, rois, strict=True)]
        flat_rois_t = torch.cat(rois)[unseen]
        inst_boxes_t = _matched_boxes(targets, matched_idxs)[unseen]
        seen_on_t = torch.cat(seen_on)[unseen]
        crops = None
        if (sigma or self.sigma) == "crf":
            if images is None:
                raise ValueError("sigma=crf needs the input images")
            crops = _roi_crops(images, rois, unseen, STUDENT_RESOLUTION)
        kind = sigma or self.current_sigma
        if fit and self.pseudo_mask_fit == "box" and kind in ("threshold", "crf"):
            inside = box_interior_on_rois(flat_rois_t, inst_boxes_t, STUDENT_RESOLUTION)
            inside = inside & (seen_on_t < 0.5)
            if kind == "crf":  # fitted, then the CRF (pseudo_masks.fit_then_crf)
                assert crops is not None
                pseudo = fit_then_crf(teacher_probs, inside, crops)
            else:
                pseudo = fit_to_box(teacher_probs, inside)
        else:
            pseudo = apply_sigma(kind, teacher_probs, student_probs, crops)
        return clean_pseudo_masks(pseudo, flat_rois_t, inst_boxes_t, seen_on_t)


def _own_channel(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[N, C, R, R]`` logits -> ``[N, R, R]``: each row's channel of its label (1..C)."""
    return logits[torch.arange(len(logits), device=logits.device), labels - 1]


def _mask_valid(target: dict[str, torch.Tensor]) -> torch.Tensor:
    """``mask_valid`` of a target; a target without it has real masks for every instance."""
    if "mask_valid" in target:
        return target["mask_valid"].bool()
    return torch.ones(len(target["labels"]), dtype=torch.bool, device=target["labels"].device)


def _matched_boxes(targets: list[dict[str, torch.Tensor]],
                   matched_idxs: list[torch.Tensor]) -> torch.Tensor:
    """``[P, 4]``: the ground-truth box of the instance each positive proposal matched, xyxy."""
    return torch.cat([t["boxes"][m] for t, m in zip(targets, matched_idxs, strict=True)])


def _roi_crops(images: torch.Tensor, rois: list[torch.Tensor], select: torch.Tensor,
               size: int) -> torch.Tensor:
    """RGB 0..255 crops ``[U, 3, size, size]`` of the selected RoIs of ``images``
    (``[B, 3, H, W]`` RGB 0..255: the model un-normalises them with its transform's statistics)."""
    idx = torch.cat([torch.full((len(r),), i, dtype=r.dtype, device=r.device)
                     for i, r in enumerate(rois)])
    boxes = torch.cat([idx[:, None], torch.cat(rois)], dim=1)[select]
    return roi_align(images.float(), boxes, (size, size), 1.0, sampling_ratio=2, aligned=True)
