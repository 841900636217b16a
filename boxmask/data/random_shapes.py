"""Random shapes pasted into training images: objecthood for the class-agnostic teacher.

Not in the paper. Ghiasi et al.'s Simple Copy-Paste (CVPR 2021) pastes objects of one training
image into another; here the pasted objects are made up: procedural polygons and blobs, each
with a texture of its own, that belong to no category. The class-agnostic teacher learns their
masks, so that it learns to follow an object's boundary whatever the object is, rather than to
recognise the few seen shapes (docs/results.md, the transfer benchmark).

How a pasted shape travels: as one more instance of the target, in every per-instance tensor,
so that every later transform (the model's resize included) treats it like the others:

- ``labels``: :data:`TEACHER_ONLY_LABEL` (-1). torchvision's box sampler ignores a proposal
  whose matched ground truth has label -1 (neither foreground nor background), so the box
  classifier and regressor never learn from these shapes, and, never being foreground, they
  never reach the mask losses of the positive proposals (the student never sees them).
- ``teacher_only``: ``[N]`` bool, True for the pasted shapes; present (all False when nothing
  was pasted) in every target the transform returns, so a model can tell that the lever is on
  and keep its loss keys the same from one batch to the next.
- ``masks``: the exact pixels replaced; ``mask_valid`` True; ``iscrowd`` 0; ``area`` the pixel
  count; ``boxes`` the mask's tight box.

The pasted shapes lie on top: the parts of supervised masks they cover are removed from those
masks, and those instances' boxes (and areas) are re-fitted to what is left of them, as
Copy-Paste does. A placement that would leave an instance less than ``min_keep`` of the
pixels it had before any shape was pasted is not used (nothing is dropped, so no per-instance
tensor loses a row). An instance without a mask (an unseen category's: its mask is unknown, so
its visible part could not be kept right) is never touched: no pasted pixel falls inside its
box.

The region proposal network is class-agnostic and reads only ``boxes``: to it the pasted shapes
are objects, as Copy-Paste's are. What the mask branch must do with them is in
boxmask/model/objecthood.py.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

Target = dict[str, Any]

TEACHER_ONLY = "teacher_only"
TEACHER_ONLY_LABEL = -1
# The per-instance keys the transform extends; any other tensor with one row per instance
# would fall out of step, so it is refused.
_INSTANCE_KEYS = ("boxes", "labels", "masks", "mask_valid", "iscrowd", "area", TEACHER_ONLY)
_SHIFT = 4  # cv2.fillPoly fixed-point bits: vertices at 1/16 pixel
# The synthetic generator's sensor noise (boxmask.data.synthetic.render_scene): a pasted shape
# without it would be told apart by its clean pixels.
_NOISE = 2.0 / 255.0


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(1))


def _randint(low: int, high: int) -> int:
    """Uniform in [low, high]."""
    return int(torch.randint(low, high + 1, (1,)))


def shape_outline(radius: float) -> np.ndarray:
    """``[K, 2]`` vertices around the origin of one random shape, before rotation and stretch:
    a star-shaped polygon of 3 to 9 corners, or a smooth blob (a radius of a few low harmonics
    of the angle). Either may be concave."""
    if float(torch.rand(1)) < 0.5:
        n = _randint(3, 9)
        step = 2 * math.pi / n
        angles = step * torch.arange(n, dtype=torch.float64) + step * 0.8 * (torch.rand(n) - 0.5)
        radii = radius * (0.45 + 0.55 * torch.rand(n, dtype=torch.float64))
    else:
        angles = torch.linspace(0.0, 2 * math.pi, 49, dtype=torch.float64)[:-1]
        radii = torch.ones_like(angles)
        for k in (2, 3, 4, 5):
            amplitude = 0.3 * float(torch.rand(1)) / (k - 1)
            radii = radii + amplitude * torch.cos(k * angles + 2 * math.pi * float(torch.rand(1)))
        radii = radius * radii.clamp(min=0.3) / float(radii.max())
    return torch.stack([radii * torch.cos(angles), radii * torch.sin(angles)], 1).numpy()


def random_shape_mask(height: int, width: int, radius: float, hole: float = 0.25) -> Tensor:
    """``[height, width]`` bool mask of one random shape (:func:`shape_outline`, stretched and
    turned) at a random place; with probability ``hole`` a smaller random shape near its middle
    is cut out of it (background showing through, as in a ring)."""
    centre = np.array([_uniform(0.0, width), _uniform(0.0, height)])
    theta = _uniform(0.0, 2 * math.pi)
    c, s = math.cos(theta), math.sin(theta)
    turn = np.array([[c, -s], [s, c]]) @ np.diag([_uniform(0.6, 1.4), _uniform(0.6, 1.4)])

    def raster(points: np.ndarray) -> np.ndarray:
        canvas = np.zeros((height, width), dtype=np.uint8)
        pts = np.round((points @ turn.T + centre) * (1 << _SHIFT)).astype(np.int32)
        cv2.fillPoly(canvas, [pts], 1, lineType=cv2.LINE_8, shift=_SHIFT)
        return canvas.astype(bool)

    mask = raster(shape_outline(radius))
    if float(torch.rand(1)) < hole:
        offset = radius * 0.2 * (np.array([float(torch.rand(1)), float(torch.rand(1))]) - 0.5)
        mask &= ~raster(shape_outline(radius * _uniform(0.25, 0.45)) + offset)
    return torch.from_numpy(mask)


def random_texture(height: int, width: int) -> Tensor:
    """``[3, height, width]`` RGB in [0, 1]: a flat colour, a smooth field of a few random
    colours, or a soft grating between two, plus the generator's sensor noise. None of these
    is a texture kind of boxmask.data.synthetic (noise, stripes, checker, dots, gradient,
    speckle), so the shapes teach no category's texture."""
    kind = _randint(0, 2)
    if kind == 0:
        tex = torch.rand(3, 1, 1).expand(3, height, width)
    elif kind == 1:
        cells = _randint(3, 5)
        tex = F.interpolate(torch.rand(1, 3, cells, cells), size=(height, width), mode="bicubic",
                            align_corners=True)[0]
    else:
        first, second = torch.rand(3, 1, 1), torch.rand(3, 1, 1)
        angle = _uniform(0.0, math.pi)
        period = _uniform(4.0, 14.0)
        ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32),
                                torch.arange(width, dtype=torch.float32), indexing="ij")
        u = xs * math.cos(angle) + ys * math.sin(angle)
        mix = 0.5 + 0.5 * torch.sin(2 * math.pi * u / period + _uniform(0.0, 2 * math.pi))
        tex = first + mix[None] * (second - first)
    return (tex + _NOISE * torch.randn(3, height, width)).clamp(0.0, 1.0)


def _tight_box(mask: Tensor) -> Tensor:
    ys, xs = mask.nonzero(as_tuple=True)
    return torch.tensor([float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1])


class RandomShapes:
    """Paste random shapes over a training image as teacher-only instances (module docstring).

    With probability ``p`` an image gets ``count`` (drawn uniformly from ``[low, high]``)
    shapes, one after another, each with a radius of ``scale`` (a range) times the image's
    shorter side; a shape is placed where it covers no box of an instance without a mask and
    leaves every masked instance at least ``min_keep`` of the pixels it had before the first
    shape (an earlier shape: of its own); after ``tries`` placements that do not, it is left
    out. Every target returned
    carries ``teacher_only``. Randomness comes from torch's global generator.
    """

    def __init__(self, p: float = 0.5, count: tuple[int, int] = (1, 3),
                 scale: tuple[float, float] = (0.08, 0.24), min_keep: float = 0.35,
                 hole: float = 0.25, tries: int = 10) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"random shapes probability must lie in [0, 1], got {p}")
        if not 1 <= count[0] <= count[1]:
            raise ValueError(f"random shapes count must be 1 <= low <= high, got {count}")
        if not 0.0 < scale[0] <= scale[1]:
            raise ValueError(f"random shapes scale must be 0 < low <= high, got {scale}")
        self.p, self.count, self.scale = p, tuple(count), tuple(scale)
        self.min_keep, self.hole, self.tries = min_keep, hole, tries

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        boxes = target["boxes"]
        n = len(boxes)
        unknown = [k for k, v in target.items() if k not in _INSTANCE_KEYS
                   and isinstance(v, Tensor) and v.ndim >= 1 and len(v) == n]
        if unknown:
            raise ValueError(f"RandomShapes cannot extend the per-instance target keys {unknown}")
        target = dict(target)
        target.setdefault(TEACHER_ONLY, torch.zeros(n, dtype=torch.bool))
        if self.p == 0 or "masks" not in target or float(torch.rand(1)) >= self.p:
            return image, target

        height, width = image.shape[-2:]
        masks = target["masks"].bool()
        valid = target.get("mask_valid", torch.ones(n, dtype=torch.bool)).bool()
        forbidden = torch.zeros(height, width, dtype=torch.bool)
        for x1, y1, x2, y2 in boxes[~valid].tolist():
            forbidden[max(int(y1), 0):math.ceil(y2), max(int(x1), 0):math.ceil(x2)] = True
        side = min(height, width)
        min_pixels = max(16, int((0.03 * side) ** 2))
        image = image.clone()
        new_masks: list[Tensor] = []
        # What min_keep is a share of: each instance's pixels before anything was pasted (a
        # shape's own when it was pasted), so that several shapes cannot wear one down.
        whole = masks[valid].flatten(1).sum(1)
        for _ in range(_randint(*self.count)):
            for _attempt in range(self.tries):
                shape = random_shape_mask(height, width, side * _uniform(*self.scale), self.hole)
                if int(shape.sum()) < min_pixels or bool((shape & forbidden).any()):
                    continue
                held = torch.cat([masks[valid], torch.stack(new_masks)]) if new_masks else masks[valid]
                after = (held & ~shape).flatten(1).sum(1)
                if bool((after < self.min_keep * whole).any()):
                    continue
                ys, xs = shape.nonzero(as_tuple=True)
                y0, x0 = int(ys.min()), int(xs.min())
                tex = random_texture(int(ys.max()) - y0 + 1, int(xs.max()) - x0 + 1)
                image[:, ys, xs] = tex[:, ys - y0, xs - x0].to(image.dtype)
                masks = masks & ~shape
                new_masks = [m & ~shape for m in new_masks] + [shape]
                whole = torch.cat([whole, shape.sum().view(1)])
                break
        if not new_masks:
            return image, target
        return image, _with_shapes(target, masks, new_masks)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(p={self.p}, count={self.count}, scale={self.scale}, "
                f"min_keep={self.min_keep})")


def _with_shapes(target: Target, masks: Tensor, shapes: list[Tensor]) -> Target:
    """``target`` with its masks occluded (``masks``, bool) and the ``shapes`` appended."""
    old = target["masks"]
    changed = (masks != old.bool()).flatten(1).any(1)
    boxes = target["boxes"].clone()
    area = target["area"].clone() if "area" in target else None
    for k in changed.nonzero().flatten().tolist():
        boxes[k] = _tight_box(masks[k])
        if area is not None:
            area[k] = float(masks[k].sum())
    extra = torch.stack(shapes)
    m = len(shapes)
    out = dict(target)
    out["boxes"] = torch.cat([boxes, torch.stack([_tight_box(s) for s in shapes]).to(boxes.dtype)])
    out["labels"] = torch.cat([target["labels"],
                               torch.full((m,), TEACHER_ONLY_LABEL, dtype=target["labels"].dtype)])
    out["masks"] = torch.cat([masks, extra]).to(old.dtype)
    out[TEACHER_ONLY] = torch.cat([target[TEACHER_ONLY], torch.ones(m, dtype=torch.bool)])
    if "mask_valid" in target:
        out["mask_valid"] = torch.cat([target["mask_valid"], torch.ones(m, dtype=torch.bool)])
    if "iscrowd" in target:
        out["iscrowd"] = torch.cat([target["iscrowd"],
                                    torch.zeros(m, dtype=target["iscrowd"].dtype)])
    if area is not None:
        out["area"] = torch.cat([area, extra.flatten(1).sum(1).to(area.dtype)])
    return out
