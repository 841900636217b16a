"""Freezing parts of a model for a fine-tune (``model.frozen``).

A fine-tune from a checkpoint that already knows what a mask is may keep parts as they are: the
trunk (so the teacher's pseudo-masks, read off the trunk's features, stay those of the
checkpoint), the teacher (nothing can teach it on box-only data), or the detector.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from boxmask.model.rcnn import BoxMaskRCNN

PARTS = ("backbone", "pixel_stem", "rpn", "box_head", "teacher", "student", "quality")


def part_modules(model: BoxMaskRCNN, part: str) -> list[nn.Module]:
    """The modules of one of :data:`PARTS` (empty when the model lacks it)."""
    branch = model.roi_heads.mask_branch
    found: dict[str, list[nn.Module | None]] = {
        "backbone": [model.backbone],
        "pixel_stem": [branch.pixel_stem],
        "rpn": [model.rpn],
        "box_head": [model.roi_heads.box_head, model.roi_heads.box_predictor],
        "teacher": [branch.teacher],
        "student": [branch.student],
        "quality": [branch.quality],
    }
    if part not in found:
        raise ValueError(f"unknown part {part!r}; choose from {', '.join(PARTS)}")
    return [m for m in found[part] if m is not None]


def freeze(model: BoxMaskRCNN, parts: Iterable[str]) -> int:
    """Stop gradients to ``parts``; returns the number of parameters frozen. Norm layers of
    frozen parts keep their statistics too: the models' batch norms are frozen already when
    they start from a checkpoint (``backbone_norm: auto``), and group norms have none."""
    count = 0
    for part in parts:
        for module in part_modules(model, part):
            for p in module.parameters():
                if p.requires_grad:
                    p.requires_grad_(False)
                    count += p.numel()
    return count
