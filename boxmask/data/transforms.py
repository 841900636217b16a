"""Training transforms on ``(image, target)`` pairs, as in torchvision's detection references.

Every transform takes and returns ``image: Tensor[3, H, W]`` and a target dict with ``boxes``
``[N, 4]`` xyxy and ``masks`` ``[N, H, W]``; other target keys pass through. Randomness comes
from torch's global generator, which the trainer seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from boxmask.data.random_shapes import RandomShapes

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


def _offset(low: int, high: int, size: int, reach: float) -> int:
    """A random shift d with 0 <= low + d and high + d < size, |d| <= reach * size."""
    lo, hi = max(-low, -int(reach * size)), min(size - 1 - high, int(reach * size))
    return int(torch.randint(lo, hi + 1, (1,)).item()) if hi >= lo else 0


class BackgroundHoles:
    """Cut a random blob out of supervised masks and let the background show through it.

    Not in the paper. On the synthetic benchmark the class-agnostic teacher transfers by shape:
    it fills the ring's hole and the crescent's bite (the background inside an unseen object's
    box) because no seen shape ever showed background inside its outline (docs/results.md). This
    augmentation gives the seen shapes such holes and bites, read from the image rather than from
    a shape prior: for each instance with a mask (``mask_valid``), with probability ``p``, an
    ellipse centred on one of its pixels, of semi-axes ``scale`` x its box's sides, is cut out
    of its mask, and the image there is replaced by background copied from a place outside every
    box (seen or unseen: only boxes are used to find background, never an unseen mask),
    the nearest such place first. The
    instance's box is re-fitted to what is left of its mask (boxes are tight around the visible
    part, as in the synthetic data and COCO). A cut that would leave less than ``min_keep`` of
    the mask, or that finds no background to copy in ``tries`` offsets, is skipped.

    Only visible pixels of the instance itself are changed, so every other mask stays right;
    an unseen object lying under the cut-out part keeps its (unknown) mask, which now borders
    background instead of the seen object. Target keys: ``masks`` ``[N, H, W]`` uint8,
    ``mask_valid`` ``[N]`` bool, ``boxes`` ``[N, 4]``; ``area`` is updated when present.
    """

    def __init__(self, p: float = 0.5, scale: tuple[float, float] = (0.15, 0.45),
                 min_keep: float = 0.4, tries: int = 10) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"hole probability must lie in [0, 1], got {p}")
        if not 0.0 < scale[0] <= scale[1]:
            raise ValueError(f"hole scale must be 0 < low <= high, got {scale}")
        self.p, self.scale, self.min_keep, self.tries = p, scale, min_keep, tries

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        masks, valid = target.get("masks"), target.get("mask_valid")
        if self.p == 0 or masks is None or valid is None or not bool(valid.any()):
            return image, target
        height, width = image.shape[-2:]
        boxes = target["boxes"]
        outside = torch.ones(height, width, dtype=torch.bool)
        for x1, y1, x2, y2 in boxes.tolist():
            outside[max(int(y1), 0):math.ceil(y2), max(int(x1), 0):math.ceil(x2)] = False
        if not bool(outside.any()):
            return image, target
        ys_grid = torch.arange(height, dtype=torch.float32)[:, None]
        xs_grid = torch.arange(width, dtype=torch.float32)[None, :]
        image, masks, boxes = image.clone(), masks.clone(), boxes.clone()
        area = target["area"].clone() if "area" in target else None
        changed = False
        for k in valid.nonzero().flatten().tolist():
            if torch.rand(1).item() >= self.p:
                continue
            mask = masks[k].bool()
            ys, xs = mask.nonzero(as_tuple=True)
            if len(ys) == 0:
                continue
            pick = int(torch.randint(len(ys), (1,)).item())
            cy, cx = float(ys[pick]), float(xs[pick])
            low, high = self.scale
            ry, rx = (low + (high - low) * torch.rand(2)).tolist()
            ry *= float(ys.max() - ys.min() + 1)
            rx *= float(xs.max() - xs.min() + 1)
            theta = float(torch.rand(1)) * math.pi
            cos, sin = math.cos(theta), math.sin(theta)
            u = (xs_grid - cx) * cos + (ys_grid - cy) * sin
            v = -(xs_grid - cx) * sin + (ys_grid - cy) * cos
            hole = ((u / rx) ** 2 + (v / ry) ** 2 <= 1.0) & mask
            keep = mask & ~hole
            if int(keep.sum()) < self.min_keep * len(ys) or not bool(hole.any()):
                continue
            hy, hx = hole.nonzero(as_tuple=True)
            for attempt in range(self.tries):
                # Nearest first: the background's colour drifts across the image, so a patch
                # from close by matches the surroundings of the hole; the search widens to
                # the whole image by the last try.
                reach = (attempt + 1) / self.tries
                dy = _offset(int(hy.min()), int(hy.max()), height, reach)
                dx = _offset(int(hx.min()), int(hx.max()), width, reach)
                if bool(outside[hy + dy, hx + dx].all()):
                    image[:, hy, hx] = image[:, hy + dy, hx + dx]
                    masks[k] = keep.to(masks.dtype)
                    ky, kx = keep.nonzero(as_tuple=True)
                    boxes[k] = torch.tensor([float(kx.min()), float(ky.min()),
                                             float(kx.max()) + 1, float(ky.max()) + 1])
                    if area is not None:
                        area[k] = float(len(ky))
                    changed = True
                    break
        if not changed:
            return image, target
        target = dict(target, masks=masks, boxes=boxes)
        if area is not None:
            target["area"] = area
        return image, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p}, scale={self.scale}, min_keep={self.min_keep})"


def training_transforms(horizontal_flip: float = 0.5, background_holes: float = 0.0,
                        random_shapes: float = 0.0,
                        random_shapes_count: tuple[int, int] = (1, 3)) -> Compose:
    """The training augmentation: horizontal flips (the paper's schedule), then, if asked,
    :class:`BackgroundHoles` and boxmask.data.random_shapes' ``RandomShapes`` (neither is in
    the paper; both are off by default). The shapes come last: pasted on top of everything,
    their masks are exact, and no later transform cuts into them."""
    transforms: list[Transform] = []
    if horizontal_flip > 0:
        transforms.append(RandomHorizontalFlip(horizontal_flip))
    if background_holes > 0:
        transforms.append(BackgroundHoles(background_holes))
    if random_shapes > 0:
        transforms.append(RandomShapes(random_shapes, random_shapes_count))
    return Compose(transforms)
