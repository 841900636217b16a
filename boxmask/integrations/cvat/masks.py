"""CVAT's two mask encodings, in numpy.

1. Mask shapes (`LabeledShape` of type "mask", and interactor replies since CVAT 2.60):
   `points = [r0, r1, ..., rk, x1, y1, x2, y2]`. The last four numbers are the mask's bounding
   box in image pixels, **inclusive** (`x2`, `y2` are the last column and row it covers). The
   numbers before them are run lengths over the box's pixels in row-major order, alternating
   background and foreground and **starting with background** (a mask whose first pixel is set
   begins with a run of 0). `cvat_sdk.masks.encode_mask` writes this format; `decode_mask` here
   reads it, written from that description (tests check it against `encode_mask`).
2. Detector replies of nuclio functions: `mask = crop.ravel() + [xtl, ytl, xbr, ybr]`, the 0/1
   pixels of the inclusive box around the mask followed by the box (`detector_mask`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def decode_mask(points: Sequence[float], width: int, height: int) -> np.ndarray:
    """CVAT mask-shape points -> `[height, width]` bool.

    Raises ValueError when the runs do not fill the box or the box leaves the image.
    """
    if len(points) < 5:
        raise ValueError(f"a CVAT mask needs run lengths and a box, got {len(points)} numbers")
    values = np.asarray(points, dtype=np.float64)
    if not np.all(values == np.round(values)):
        raise ValueError("CVAT mask points must be integers")
    ints = values.astype(np.int64)
    runs, (x1, y1, x2, y2) = ints[:-4], ints[-4:]
    if not (0 <= x1 <= x2 < width and 0 <= y1 <= y2 < height):
        raise ValueError(f"mask box [{x1}, {y1}, {x2}, {y2}] is not inside the {width}x{height} image")
    if np.any(runs < 0):
        raise ValueError("CVAT mask run lengths must not be negative")
    box_w, box_h = int(x2 - x1 + 1), int(y2 - y1 + 1)
    if int(runs.sum()) != box_w * box_h:
        raise ValueError(f"run lengths cover {int(runs.sum())} pixels, the box has {box_w * box_h}")
    # Run i is foreground when i is odd: the first run is background.
    flat = np.repeat((np.arange(runs.size) % 2).astype(bool), runs)
    mask = np.zeros((height, width), dtype=bool)
    mask[y1:y2 + 1, x1:x2 + 1] = flat.reshape(box_h, box_w)
    return mask


def mask_bounds(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Inclusive `(xtl, ytl, xbr, ybr)` of the set pixels, or None for an empty mask."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def detector_mask(mask: np.ndarray) -> list[int] | None:
    """`[H, W]` bool -> a nuclio detector reply's `mask`: crop 0/1 values + inclusive box."""
    bounds = mask_bounds(mask)
    if bounds is None:
        return None
    xtl, ytl, xbr, ybr = bounds
    crop = mask[ytl:ybr + 1, xtl:xbr + 1].astype(np.uint8)
    return [*crop.ravel().tolist(), xtl, ytl, xbr, ybr]


def decode_detector_mask(values: Sequence[int], width: int, height: int) -> np.ndarray:
    """Inverse of `detector_mask` (what CVAT's lambda manager does with a detector's mask)."""
    xtl, ytl, xbr, ybr = (int(v) for v in values[-4:])
    crop = np.asarray(values[:-4], dtype=np.uint8).reshape(ybr - ytl + 1, xbr - xtl + 1)
    mask = np.zeros((height, width), dtype=bool)
    mask[ytl:ybr + 1, xtl:xbr + 1] = crop.astype(bool)
    return mask
