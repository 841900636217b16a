"""Training transforms on ``(image, target)`` pairs, as in torchvision's detection references.

Every transform takes and returns ``image: Tensor[3, H, W]`` and a target dict with ``boxes``
``[N, 4]`` xyxy and ``masks`` ``[N, H, W]``; other target keys pass through. Randomness comes
from torch's global generator, which the trainer seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

Target = dict[str, Any]
Transform = Callable[[Tensor, Target], tuple[Tensor, Target]]


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transforms!r})"


def hflip(image: Tensor, target: Target) -> tuple[Tensor, Target]:
    """Mirror the image, boxes and masks left-right.

    Box ``x1, x2`` become ``W - x2, W - x1``: boxes are continuous pixel coordinates, so a
    box touching the left edge touches the right edge after the flip.
    """
    width = image.shape[-1]
    image = image.flip(-1)
    target = dict(target)
    if "boxes" in target:
        boxes = target["boxes"].clone()
        boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
        target["boxes"] = boxes
    if "masks" in target:
        target["masks"] = target["masks"].flip(-1)
    return image, target


class RandomHorizontalFlip:
    """Flip with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"flip probability must lie in [0, 1], got {p}")
        self.p = p

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        if self.p > 0 and torch.rand(1).item() < self.p:
            return hflip(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


def training_transforms(horizontal_flip: float = 0.5) -> Compose:
    """The training augmentation of the paper's schedule: horizontal flips only."""
    return Compose([RandomHorizontalFlip(horizontal_flip)] if horizontal_flip > 0 else [])
