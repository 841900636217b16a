"""Masks in numpy: pasting the decoder's R x R probabilities into the image, and encodings.

`paste_masks` is `boxmask.model.paste.paste_masks` (the torch model's) in numpy: cell `i` of a
box's R x R grid is centred where the training targets sampled it (`roi_align(aligned=True)`),
and pixel `x` reads the grid bilinearly at cell coordinate `u = (x + 0.5 - x1) / w * R - 0.5`,
zeros beyond the grid (Detectron2's paste: `grid_sample(align_corners=False)`). It replaced a
copy of torchvision's `paste_masks_in_image`, whose integer box growth moved masks by up to a
pixel: 0.933 -> 0.991 mean IoU for true masks cropped and pasted back on the synthetic set
(boxmask/model/paste.py says more).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, overload

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils


def grid_offset(aligned: bool, original: tuple[int, int], resized: tuple[int, int]
                ) -> tuple[float, float]:
    """``(dx, dy)`` in original pixels to add to a box before pasting its mask: 0 for a model of
    the aligned grid, half a resized pixel for one of torchvision's grid (whose cells sit that
    much down and right; `boxmask.model.paste` says more). The torch model and the runtime both
    call this.

    Args:
        aligned: whether the model trained on the aligned grid (``model.mask_target_aligned``,
            the card's ``mask_grid == "aligned"``).
        original, resized: the image's (H, W) before and after the model's resize.
    """
    if aligned:
        return 0.0, 0.0
    return 0.5 * original[1] / resized[1], 0.5 * original[0] / resized[0]


def _axis_taps(lo: float, hi: float, size: int, first: int, stop: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Pixels `first..stop-1` of one axis on a box's grid: `(index, frac)`, each `[stop - first]`.

    Pixel p reads cells `index` and `index + 1` of the grid padded by a zero cell on each side
    (`[R + 2, R + 2]`) with weights `1 - frac` and `frac`; taps that fall off the grid are
    clipped into the padding, so they read zeros. `boxmask.model.paste.paste_weights` in gather
    form.
    """
    lo32, hi32 = np.float32(lo), np.float32(hi)
    extent = max(hi32 - lo32, np.float32(1e-6))
    centres = np.arange(first, stop, dtype=np.float32) + np.float32(0.5)
    u = (centres - lo32) / extent * np.float32(size) - np.float32(0.5)
    i0 = np.floor(u)
    frac = (u - i0).astype(np.float32)
    # Cell c of the grid is cell c + 1 of the padded one. A pixel whose left tap lies before
    # the padding or whose right tap lies past it reads only zeros: point it at the left
    # padding cell with weight 1.
    index = i0.astype(np.int64) + 1
    outside = (index < 0) | (index > size)
    index[outside] = 0
    frac[outside] = 0
    return index, frac


def _interpolated(grid: np.ndarray, box: tuple[float, float, float, float], y0: int, y1: int,
                  x0: int, x1: int) -> np.ndarray:
    """A box's grid, padded with a zero cell (`[R + 2, R + 2]`), read at the image's pixels of
    rows `y0..y1-1` and columns `x0..x1-1`: `[y1 - y0, x1 - x0]` float32. A pixel's value does
    not depend on the window it is read in."""
    r = grid.shape[0] - 2
    bx1, by1, bx2, by2 = box
    iy, fy = _axis_taps(by1, by2, r, y0, y1)
    ix, fx = _axis_taps(bx1, bx2, r, x0, x1)
    # Along x, then along y: [R + 2, nx] -> [ny, nx].
    cols = grid[:, ix] * (1 - fx) + grid[:, ix + 1] * fx
    # The full-size pass in place: two row gathers, three in-place operations.
    crop = np.take(cols, iy, axis=0)
    crop *= (1 - fy)[:, None]
    lower = np.take(cols, iy + 1, axis=0)
    lower *= fy[:, None]
    crop += lower
    return crop


def _pasted_crops(
    probs: np.ndarray, boxes: np.ndarray, im_h: int, im_w: int
) -> Iterator[tuple[int, np.ndarray | None, tuple[int, int, int, int]]]:
    """Yield `(i, crop, (y0, y1, x0, x1))`: mask i's pasted values over the window of the image
    its grid reaches (its box and half a cell around it); crop is None when that window misses
    the image or the box is empty. Outside the window the pasted values are 0.
    """
    n, r, r2 = probs.shape
    if r != r2:
        raise ValueError(f"masks must be square [N, R, R], got {probs.shape}")
    # A zero cell around each grid; the interpolation is two gathers (no BLAS: a matrix product
    # of this size took 70 ms under OpenBLAS's threads on a busy 2-core machine). Zeros and a
    # copy in, not np.pad, which costs 25 times as much for one mask.
    padded = np.zeros((n, r + 2, r + 2), dtype=np.float32)
    padded[:, 1:-1, 1:-1] = probs
    boxes = boxes.astype(np.float32, copy=False)
    for i in range(n):
        bx1, by1, bx2, by2 = (float(v) for v in boxes[i])
        # The last taps fade to zero half a cell past each edge: a window of a whole cell
        # around the box holds every pixel they reach.
        cw, ch = (bx2 - bx1) / r, (by2 - by1) / r
        x0, x1 = max(int(np.floor(bx1 - cw)), 0), min(int(np.ceil(bx2 + cw)), im_w)
        y0, y1 = max(int(np.floor(by1 - ch)), 0), min(int(np.ceil(by2 + ch)), im_h)
        if x1 <= x0 or y1 <= y0 or bx2 <= bx1 or by2 <= by1:
            yield i, None, (y0, max(y1, y0), x0, max(x1, x0))
            continue
        crop = _interpolated(padded[i], (bx1, by1, bx2, by2), y0, y1, x0, x1)
        yield i, crop, (y0, y1, x0, x1)


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
    """Probabilities `[N, R, R]` pasted into `[N, im_h, im_w]` float32 (the torch model's).

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

    Equal to `boxmask.model.paste.paste_masks(...) > threshold` up to float rounding at the
    threshold (the comparison torchvision's COCO evaluation uses).
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


@dataclass(frozen=True)
class CroppedMask:
    """An ``[H, W]`` bool mask held as the window of it its box touches: `pixels`
    ``[y1 - y0, x1 - x0]`` at rows ``y0..`` and columns ``x0..`` of an image of `size`
    ``(H, W)``, every pixel outside it 0 (`paste_mask` never sets one there). What `to_rle` and
    `mask_box` read without making the full plane; `full()` makes it."""

    pixels: np.ndarray
    y0: int
    x0: int
    size: tuple[int, int]

    @property
    def shape(self) -> tuple[int, int]:
        return self.size

    def full(self) -> np.ndarray:
        """The ``[H, W]`` bool plane."""
        out = np.zeros(self.size, dtype=bool)
        ny, nx = self.pixels.shape
        out[self.y0:self.y0 + ny, self.x0:self.x0 + nx] = self.pixels
        return out


def paste_cropped_mask(prob: np.ndarray, box: np.ndarray, im_h: int, im_w: int,
                       threshold: float = 0.5, offset: tuple[float, float] = (0.0, 0.0)
                       ) -> CroppedMask:
    """`paste_mask` without the full plane: the mask over the pixels its box touches
    (`box_pixels`), as a `CroppedMask`. The encoders read it as the plane it stands for."""
    prob = np.asarray(prob, dtype=np.float32)
    r = prob.shape[-1]
    if prob.shape != (r, r):
        raise ValueError(f"expected one square mask [R, R], got {prob.shape}")
    box = np.asarray(box, dtype=np.float32).reshape(4)
    y0, y1, x0, x1 = box_pixels(box, im_h, im_w)
    dx, dy = offset
    at = box + np.array([dx, dy, dx, dy], dtype=np.float32) if (dx or dy) else box
    bx1, by1, bx2, by2 = (float(v) for v in at)
    if y1 <= y0 or x1 <= x0 or bx2 <= bx1 or by2 <= by1:
        out: np.ndarray = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    else:
        # The box's own pixels read straight off the grid (the values `_pasted_crops` gives
        # them; those past the grid's reach read its zero padding): no window around the box
        # to paste and cut again.
        grid = np.zeros((r + 2, r + 2), dtype=np.float32)
        grid[1:-1, 1:-1] = prob
        out = _interpolated(grid, (bx1, by1, bx2, by2), y0, y1, x0, x1) > threshold
    return CroppedMask(out, y0, x0, (int(im_h), int(im_w)))


def paste_mask(prob: np.ndarray, box: np.ndarray, im_h: int, im_w: int,
               threshold: float = 0.5, offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """One `[R, R]` probability map -> an `[im_h, im_w]` bool mask, cropped to its box.

    The pasting is `paste_masks`', whose values fade to zero within half a cell past the box;
    the crop clears what lies outside the pixels the box touches, so a mask never leaves its
    box. One plane at a time: callers that encode masks one by one never hold N planes.
    `offset` `(dx, dy)` moves the grid off the box before pasting (a torchvision-grid model,
    `grid_offset`); the crop stays the box's own pixels. `paste_cropped_mask` gives the same
    mask without the plane.
    """
    return paste_cropped_mask(prob, box, im_h, im_w, threshold, offset).full()


def mask_box(mask: np.ndarray | CroppedMask, box: np.ndarray | None = None
             ) -> tuple[float, float, float, float] | None:
    """The tight box of a ``[H, W]`` mask: xyxy in image pixels around its foreground pixels
    (pixel ``(x, y)`` covers ``[x, x + 1) x [y, y + 1)``, so a mask of one pixel at (3, 5) has
    the box ``(3, 5, 4, 6)``, as COCO's ``bbox`` of that mask is ``[3, 5, 1, 1]``); None for an
    empty mask.

    ``box``: the xyxy box the mask was cropped to (`paste_mask`), so only its pixels are read.
    A `CroppedMask` is read in its window alone (`box` is then not needed: it is that window).
    """
    y0, x0 = 0, 0
    if isinstance(mask, CroppedMask):
        y0, x0, mask = mask.y0, mask.x0, mask.pixels
    else:
        mask = _as_2d_bool(mask)
        if box is not None:
            y0, y1, x0, x1 = box_pixels(np.asarray(box), *mask.shape)
            mask = mask[y0:y1, x0:x1]
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return (float(x0 + cols[0]), float(y0 + rows[0]), float(x0 + cols[-1] + 1),
            float(y0 + rows[-1] + 1))


def _as_2d_bool(mask: np.ndarray | CroppedMask) -> np.ndarray:
    if isinstance(mask, CroppedMask):
        return mask.full()
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected one mask [H, W], got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def to_rle(mask: np.ndarray | CroppedMask) -> dict:
    """`[H, W]` bool -> COCO compressed RLE `{"size": [h, w], "counts": str}` (pycocotools).

    A `CroppedMask` is encoded from its window alone, to the same string: the cost follows the
    box's pixels, not the image's (a 512 x 512 plane took 0.4 ms to copy and scan)."""
    if isinstance(mask, CroppedMask):
        return _window_rle(mask)
    mask = _as_2d_bool(mask)
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _window_rle(mask: CroppedMask) -> dict:
    """COCO RLE of the plane a `CroppedMask` stands for: its runs are where the column-major
    scan of the plane changes value, and every change lies inside the window or on its edge."""
    h, w = mask.size
    ny, nx = mask.pixels.shape
    # Each window column between a zero above and a zero below (the plane's pixels around it,
    # or, at the image's edge, a stand-in that the pairing below cancels), scanned column-major.
    cols = np.zeros((nx, ny + 2), dtype=np.int8)
    cols[:, 1:-1] = mask.pixels.T
    flat = cols.reshape(-1)
    q = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    # Position q of the scan is row q % (ny + 2) - 1 + y0 of column q // (ny + 2) + x0: the
    # plane's column-major index, in two passes over the changes.
    changes = q + (q // (ny + 2)) * (h - ny - 2) + (mask.x0 * h + mask.y0 - 1)
    if ny == h and changes.size > 1:
        # A window the image's height: a column ending in 1 followed by one starting with 1
        # gives an end and a start at the same index, which is no change at all.
        same = np.flatnonzero(changes[1:] == changes[:-1])
        if same.size:
            changes = np.delete(changes, np.concatenate([same, same + 1]))
    # A run reaching the plane's end ends there, not at a change.
    end = changes.size - 1 if changes.size and changes[-1] >= h * w else changes.size
    bounds = np.empty(end + 2, dtype=np.int64)
    bounds[0], bounds[1:-1], bounds[-1] = 0, changes[:end], h * w
    counts = bounds[1:] - bounds[:-1]
    # pycocotools compresses the counts (its C string coder, as `encode` would); an array,
    # not a list: it converts a list element by element (8x the cost for a noisy mask).
    rle = mask_utils.frPyObjects({"counts": counts, "size": [h, w]}, h, w)
    return {"size": [int(h), int(w)], "counts": rle["counts"].decode("ascii")}


def from_rle(rle: dict) -> np.ndarray:
    """COCO RLE (compressed `counts` as str/bytes, or uncompressed list) -> `[H, W]` bool."""
    h, w = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, list):
        rle = mask_utils.frPyObjects(rle, h, w)
    elif isinstance(counts, str):
        rle = {"size": [h, w], "counts": counts.encode("ascii")}
    return mask_utils.decode(rle).astype(bool)


def to_polygons(mask: np.ndarray | CroppedMask, tolerance: float = 0.0) -> list[list[float]]:
    """`[H, W]` bool -> COCO polygons `[[x0, y0, x1, y1, ...], ...]`, one per outer contour.

    Coordinates are OpenCV's boundary pixel indices plus 0.5 (pixel centres in COCO's continuous
    coordinates, as Detectron2 does). Holes are not represented (COCO polygons cannot subtract);
    use RLE where holes matter. Contours that enclose no area are dropped: fewer than 3 points
    (pycocotools rejects them) or a one-pixel-wide line, whose contour runs out and back along
    the same pixel centres (pycocotools decodes it to nothing). `tolerance > 0` simplifies with
    Douglas-Peucker (pixels).
    """
    mask = _as_2d_bool(mask)
    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    polygons: list[list[float]] = []
    for contour in contours:
        if tolerance > 0:
            contour = cv2.approxPolyDP(contour, tolerance, True)
        if len(contour) < 3 or cv2.contourArea(contour) <= 0:
            continue
        polygons.append([float(v) + 0.5 for v in contour.reshape(-1)])
    return polygons


def polygons_to_mask(polygons: list[list[float]], h: int, w: int) -> np.ndarray:
    """COCO polygons -> `[H, W]` bool via pycocotools (the way COCO tools read them back)."""
    if not polygons:
        return np.zeros((h, w), dtype=bool)
    rles = mask_utils.frPyObjects(polygons, h, w)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def to_png(mask: np.ndarray | CroppedMask, bits: int = 1) -> bytes:
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


# The wire type follows the format, for a caller that names it.
@overload
def encode_mask(mask: np.ndarray | CroppedMask, mask_format: Literal["rle"], *,
                polygon_tolerance: float = ..., decimals: int | None = ...,
                png_bits: int = ...) -> dict: ...
@overload
def encode_mask(mask: np.ndarray | CroppedMask, mask_format: Literal["polygons"], *,
                polygon_tolerance: float = ..., decimals: int | None = ...,
                png_bits: int = ...) -> list[list[float]]: ...
@overload
def encode_mask(mask: np.ndarray | CroppedMask, mask_format: Literal["png"], *,
                polygon_tolerance: float = ..., decimals: int | None = ...,
                png_bits: int = ...) -> bytes: ...
@overload
def encode_mask(mask: np.ndarray | CroppedMask, mask_format: MaskFormat, *,
                polygon_tolerance: float = ..., decimals: int | None = ...,
                png_bits: int = ...) -> dict | list[list[float]] | bytes: ...
def encode_mask(mask: np.ndarray | CroppedMask, mask_format: MaskFormat, *,
                polygon_tolerance: float = 0.0, decimals: int | None = None,
                png_bits: int = 8) -> dict | list[list[float]] | bytes:
    """One `[H, W]` bool mask (or a `CroppedMask`) in a wire format: the one mask encoder of
    the server, the batch labeler and evaluation (each adds its own envelope).

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
