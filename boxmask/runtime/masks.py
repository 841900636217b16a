"""Masks in numpy: pasting the decoder's R x R probabilities into the image, and encodings.

`paste_masks` reproduces torchvision's `paste_masks_in_image` (roi_heads.py): the R x R mask is
padded by one pixel on each side, its box expanded by the same factor `(R + 2) / R` about its
centre (float32) and truncated to integers, the padded mask bilinearly resized
(`align_corners=False`, which is `cv2.INTER_LINEAR`) to the integer box's `(y1 - y0 + 1) x
(x1 - x0 + 1)` pixels and written where it overlaps the image. The padding is why masks reach
their box's border smoothly instead of ending in a step.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Literal

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils


def expand_boxes(boxes: np.ndarray, scale: float) -> np.ndarray:
    """`[N, 4]` xyxy scaled by `scale` about their centres, in float32 as torchvision."""
    boxes = boxes.astype(np.float32)
    scale32 = np.float32(scale)
    w_half = (boxes[:, 2] - boxes[:, 0]) * np.float32(0.5) * scale32
    h_half = (boxes[:, 3] - boxes[:, 1]) * np.float32(0.5) * scale32
    x_c = (boxes[:, 2] + boxes[:, 0]) * np.float32(0.5)
    y_c = (boxes[:, 3] + boxes[:, 1]) * np.float32(0.5)
    return np.stack([x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half], axis=1)


def _pasted_crops(
    probs: np.ndarray, boxes: np.ndarray, im_h: int, im_w: int, padding: int = 1
) -> Iterator[tuple[int, np.ndarray | None, tuple[int, int, int, int]]]:
    """Yield `(i, crop, (y0, y1, x0, x1))`: mask i's resized values over its part of the image.

    crop is None when the box does not overlap the image.
    """
    n, r, r2 = probs.shape
    if r != r2:
        raise ValueError(f"masks must be square [N, R, R], got {probs.shape}")
    padded = np.pad(
        probs.astype(np.float32, copy=False), ((0, 0), (padding, padding), (padding, padding))
    )
    scale = float(r + 2 * padding) / r
    # .to(torch.int64) truncates toward zero, as astype does.
    int_boxes = expand_boxes(boxes, scale).astype(np.int64)
    for i in range(n):
        bx0, by0, bx1, by1 = (int(v) for v in int_boxes[i])
        w = max(bx1 - bx0 + 1, 1)
        h = max(by1 - by0 + 1, 1)
        x0, x1 = max(bx0, 0), min(bx1 + 1, im_w)
        y0, y1 = max(by0, 0), min(by1 + 1, im_h)
        if x1 <= x0 or y1 <= y0:
            yield i, None, (y0, y1, x0, x1)
            continue
        resized = cv2.resize(padded[i], (w, h), interpolation=cv2.INTER_LINEAR)
        yield i, resized[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0], (y0, y1, x0, x1)


def _check(probs: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs)
    boxes = np.asarray(boxes, dtype=np.float32)
    if probs.ndim == 4 and probs.shape[1] == 1:  # accept torchvision's [N, 1, R, R]
        probs = probs[:, 0]
    if probs.ndim != 3 or boxes.shape != (probs.shape[0], 4):
        raise ValueError(
            f"expected probs [N, R, R] and boxes [N, 4], got {probs.shape} and {boxes.shape}"
        )
    return probs, boxes


def paste_mask_probs(probs: np.ndarray, boxes: np.ndarray, im_h: int, im_w: int) -> np.ndarray:
    """Probabilities `[N, R, R]` pasted into `[N, im_h, im_w]` float32 (torchvision's output).

    boxes: `[N, 4]` xyxy in the pixels of the `im_h x im_w` image. Memory is N*H*W*4 bytes: for
    many large masks prefer `paste_masks`, which thresholds each mask as it goes.
    """
    probs, boxes = _check(probs, boxes)
    out = np.zeros((probs.shape[0], im_h, im_w), dtype=np.float32)
    for i, crop, (y0, y1, x0, x1) in _pasted_crops(probs, boxes, im_h, im_w):
        if crop is not None:
            out[i, y0:y1, x0:x1] = crop
    return out


def paste_masks(
    probs: np.ndarray, boxes: np.ndarray, im_h: int, im_w: int, threshold: float = 0.5
) -> np.ndarray:
    """Probabilities `[N, R, R]` -> boolean masks `[N, im_h, im_w]`, `prob > threshold`.

    Equal to `torchvision.models.detection.roi_heads.paste_masks_in_image(...) > threshold`
    (the comparison torchvision's COCO evaluation uses).
    """
    probs, boxes = _check(probs, boxes)
    out = np.zeros((probs.shape[0], im_h, im_w), dtype=bool)
    for i, crop, (y0, y1, x0, x1) in _pasted_crops(probs, boxes, im_h, im_w):
        if crop is not None:
            out[i, y0:y1, x0:x1] = crop > threshold
    return out


def box_pixels(box: np.ndarray, im_h: int, im_w: int) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: the pixel rows and columns an xyxy box touches, inside the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    x0, y0 = max(int(np.floor(x1)), 0), max(int(np.floor(y1)), 0)
    xe, ye = min(int(np.ceil(x2)), im_w), min(int(np.ceil(y2)), im_h)
    return y0, max(ye, y0), x0, max(xe, x0)


def paste_mask(prob: np.ndarray, box: np.ndarray, im_h: int, im_w: int,
               threshold: float = 0.5) -> np.ndarray:
    """One `[R, R]` probability map -> an `[im_h, im_w]` bool mask, cropped to its box.

    The pasting is `paste_masks`' (torchvision's), which reaches up to a mask cell past the
    box; the crop clears what lies outside the pixels the box touches, so a mask never leaves
    its box. One plane at a time: callers that encode masks one by one never hold N planes.
    """
    prob = np.asarray(prob)
    box = np.asarray(box, dtype=np.float32).reshape(1, 4)
    out = np.zeros((im_h, im_w), dtype=bool)
    y0, y1, x0, x1 = box_pixels(box[0], im_h, im_w)
    for _, crop, (py0, py1, px0, px1) in _pasted_crops(prob[None], box, im_h, im_w):
        if crop is None:
            continue
        # The overlap of the pasted region and the box's own pixels.
        cy0, cy1, cx0, cx1 = max(py0, y0), min(py1, y1), max(px0, x0), min(px1, x1)
        if cy1 > cy0 and cx1 > cx0:
            out[cy0:cy1, cx0:cx1] = crop[cy0 - py0:cy1 - py0, cx0 - px0:cx1 - px0] > threshold
    return out


def _as_2d_bool(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected one mask [H, W], got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def to_rle(mask: np.ndarray) -> dict:
    """`[H, W]` bool -> COCO compressed RLE `{"size": [h, w], "counts": str}` (pycocotools)."""
    mask = _as_2d_bool(mask)
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def from_rle(rle: dict) -> np.ndarray:
    """COCO RLE (compressed `counts` as str/bytes, or uncompressed list) -> `[H, W]` bool."""
    h, w = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, list):
        rle = mask_utils.frPyObjects(rle, h, w)
    elif isinstance(counts, str):
        rle = {"size": [h, w], "counts": counts.encode("ascii")}
    return mask_utils.decode(rle).astype(bool)


def to_polygons(mask: np.ndarray, tolerance: float = 0.0) -> list[list[float]]:
    """`[H, W]` bool -> COCO polygons `[[x0, y0, x1, y1, ...], ...]`, one per outer contour.

    Coordinates are OpenCV's boundary pixel indices plus 0.5 (pixel centres in COCO's continuous
    coordinates, as Detectron2 does). Holes are not represented (COCO polygons cannot subtract);
    use RLE where holes matter. Contours of fewer than 3 points are dropped: they enclose no area
    and pycocotools rejects them. `tolerance > 0` simplifies with Douglas-Peucker (pixels).
    """
    mask = _as_2d_bool(mask)
    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    polygons: list[list[float]] = []
    for contour in contours:
        if tolerance > 0:
            contour = cv2.approxPolyDP(contour, tolerance, True)
        if len(contour) < 3:
            continue
        polygons.append([float(v) + 0.5 for v in contour.reshape(-1)])
    return polygons


def polygons_to_mask(polygons: list[list[float]], h: int, w: int) -> np.ndarray:
    """COCO polygons -> `[H, W]` bool via pycocotools (the way COCO tools read them back)."""
    if not polygons:
        return np.zeros((h, w), dtype=bool)
    rles = mask_utils.frPyObjects(polygons, h, w)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def to_png(mask: np.ndarray, bits: int = 1) -> bytes:
    """`[H, W]` bool -> PNG bytes: 1-bit (smallest) or 8-bit grayscale with 0 / 255."""
    mask = _as_2d_bool(mask)
    if bits == 1:
        image = Image.fromarray(mask).convert("1")
    elif bits == 8:
        image = Image.fromarray(mask.astype(np.uint8) * 255)  # uint8 -> mode "L"
    else:
        raise ValueError(f"bits must be 1 or 8, got {bits}")
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


MaskFormat = Literal["rle", "polygons", "png"]


def encode_mask(mask: np.ndarray, mask_format: MaskFormat, *, polygon_tolerance: float = 0.0,
                decimals: int | None = None, png_bits: int = 8) -> dict | list[list[float]] | bytes:
    """One `[H, W]` bool mask in a wire format: the one mask encoder of the server, the batch
    labeler and evaluation (each adds its own envelope).

    - ``"rle"``: COCO compressed RLE `{"size": [h, w], "counts": str}` (`to_rle`);
    - ``"polygons"``: COCO polygons (`to_polygons`), coordinates rounded to `decimals` when
      given; polygons that lose their area to rounding (fewer than 3 points) are dropped;
    - ``"png"``: PNG bytes, 8-bit 0/255 by default (`to_png`).
    """
    if mask_format == "rle":
        return to_rle(mask)
    if mask_format == "polygons":
        polygons = to_polygons(mask, tolerance=polygon_tolerance)
        if decimals is not None:
            polygons = [[round(v, decimals) for v in poly] for poly in polygons]
        return [p for p in polygons if len(p) >= 6]
    if mask_format == "png":
        return to_png(mask, bits=png_bits)
    raise ValueError(f"mask_format must be rle, polygons or png, got {mask_format!r}")


def from_png(data: bytes) -> np.ndarray:
    """PNG bytes written by `to_png` (or any grayscale mask PNG) -> `[H, W]` bool (nonzero)."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L")) > 0
