"""Preprocessing identical to torchvision's `GeneralizedRCNNTransform` at inference, in numpy.

torchvision resizes with `F.interpolate(image, scale_factor=s, mode="bilinear",
align_corners=False, recompute_scale_factor=True)` where `s = min(min_size / min(h, w),
max_size / max(h, w))`: the output size is `floor(h * s), floor(w * s)` computed in double
precision, and the interpolation then uses the recomputed ratio `in / out` per axis, which is
what `cv2.resize(..., dsize, interpolation=INTER_LINEAR)` does too (half-pixel centres, no
antialiasing). Resizing float32 0..255 pixels (not uint8, whose OpenCV path rounds to integers)
keeps the result within float rounding of torchvision's. torchvision normalises before resizing
and our graphs normalise after; both are affine per channel and bilinear weights sum to one, so
the order does not matter beyond rounding.

torchvision pads *after* normalising, with zeros, so padding is the mean colour; our graphs
normalise what they get, so the runtime pads with `mean * 255` (zero after normalisation), not
with black, or features near the bottom/right border would differ from torchvision's.

Boxes map between original and resized coordinates with torchvision's `resize_boxes` ratios
(`resized / original` per axis), which differ from `s` by under one resized pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class ResizeInfo:
    """Sizes (height, width) of one image through preprocessing."""

    original_size: tuple[int, int]
    resized_size: tuple[int, int]
    padded_size: tuple[int, int]

    @property
    def ratios(self) -> tuple[float, float]:
        """(ratio_h, ratio_w) = resized / original, as torchvision's `resize_boxes` uses them."""
        return (
            self.resized_size[0] / self.original_size[0],
            self.resized_size[1] / self.original_size[1],
        )


def resize_scale(h: int, w: int, min_size: int, max_size: int) -> float:
    """The scale torchvision applies to an image of `h x w` pixels."""
    return min(min_size / min(h, w), max_size / max(h, w))


def resized_size(h: int, w: int, min_size: int, max_size: int) -> tuple[int, int]:
    """(height, width) after torchvision's resize: floor of size times scale, in double precision."""
    s = resize_scale(h, w, min_size, max_size)
    return max(math.floor(h * s), 1), max(math.floor(w * s), 1)


def padded_size(h: int, w: int, size_divisible: int) -> tuple[int, int]:
    return (
        int(math.ceil(h / size_divisible) * size_divisible),
        int(math.ceil(w / size_divisible) * size_divisible),
    )


def resize_image(image: np.ndarray, min_size: int, max_size: int) -> np.ndarray:
    """`[H, W, 3]` uint8 or float RGB -> `[h, w, 3]` float32, bilinear as torchvision."""
    h, w = image.shape[:2]
    nh, nw = resized_size(h, w, min_size, max_size)
    image = image.astype(np.float32, copy=False)
    if (nh, nw) == (h, w):
        return image.copy()
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)


def preprocess(
    image: np.ndarray,
    min_size: int,
    max_size: int,
    size_divisible: int,
    mean: tuple[float, float, float] | None = None,
) -> tuple[np.ndarray, ResizeInfo]:
    """`[H, W, 3]` uint8 RGB -> the graphs' `image` input `[1, 3, Hp, Wp]` float32 0..255.

    The resized image sits top-left, padded bottom and right to multiples of `size_divisible`
    as torchvision's `batch_images` does, with the colour `mean * 255` (the normalisation mean,
    in 0..1 units) so that the padding is zero after the graph's normalisation, as in
    torchvision; `mean=None` pads with 0.
    """
    h, w = image.shape[:2]
    resized = resize_image(image, min_size, max_size)
    nh, nw = resized.shape[:2]
    ph, pw = padded_size(nh, nw, size_divisible)
    batch = np.zeros((1, 3, ph, pw), dtype=np.float32)
    if mean is not None:
        batch[0] = (np.asarray(mean, dtype=np.float32) * np.float32(255.0))[:, None, None]
    batch[0, :, :nh, :nw] = resized.transpose(2, 0, 1)
    return batch, ResizeInfo((h, w), (nh, nw), (ph, pw))


def _ratios(new: tuple[int, int], old: tuple[int, int]) -> np.ndarray:
    # torchvision's resize_boxes divides the sizes as float32 tensors.
    rh = np.float32(new[0]) / np.float32(old[0])
    rw = np.float32(new[1]) / np.float32(old[1])
    return np.array([rw, rh, rw, rh], dtype=np.float32)


def boxes_to_resized(boxes: np.ndarray, info: ResizeInfo) -> np.ndarray:
    """`[N, 4]` xyxy in original pixels -> resized-image pixels (float32)."""
    return boxes.astype(np.float32) * _ratios(info.resized_size, info.original_size)


def boxes_to_original(boxes: np.ndarray, info: ResizeInfo) -> np.ndarray:
    """`[N, 4]` xyxy in resized-image pixels -> original pixels (float32), as torchvision's
    `GeneralizedRCNNTransform.postprocess`."""
    return boxes.astype(np.float32) * _ratios(info.original_size, info.resized_size)
