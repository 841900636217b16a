"""The box policy: what a box must be before the model sees it, written once.

Every entry point hands its boxes to the policy once, at its edge: the HTTP routes, Label
Studio's `/predict`, the CVAT functions and converter, `boxmask label`, and a library caller of
`Predictor.predict` with plain lists. `check_boxes` applies all of it; the predictor decodes
the `CheckedBoxes` it returns without checking them again. The server refuses a request before
it queues and before its image is decoded, so it applies the policy in its two halves:
`prepare_boxes` (everything but the image's frame) on arrival, `BoxRequest.fit` once the image
is decoded and its size, after EXIF orientation, is known.

The rules, in the order they are applied; the first broken one is the error, naming the box by
its index (``box_index``), so a caller with 50 boxes knows which one is wrong:

1. boxes are ``[N, 4]`` numbers (N = 0 is an empty answer);
2. at most ``max_boxes`` of them (`TooManyBoxes`);
3. every coordinate is finite;
4. ``xywh``: width and height are positive (the box becomes ``xyxy``, ``x2 = x + w``);
5. ``x2 > x1`` and ``y2 > y1``: an empty or inverted box is refused, as guessing which corner
   was meant would make a mask nobody asked for;
6. labels: none, or one per box, each a category id, a name, a `Category` of the model (a
   tool's label already mapped, `integrations.labels.LabelMapper`) or None ("predict it"),
   resolved here to the model's contiguous label, the only place they are (`UnknownLabel`);
7. boxes x image pixels at most ``max_mask_pixels`` (`TooManyMaskPixels`): every mask is a
   full-image plane to paste and encode;
8. a box reaching outside the image is clipped to it (``clip``) or refused (``clip=False``);
   one with nothing inside the image is refused, or set aside (``drop_outside``: a dataset's
   boxes, which `boxmask label` reports instead of failing the image).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from boxmask.runtime.card import Category, ModelCard
from boxmask.runtime.errors import BadBoxes, TooManyBoxes, TooManyMaskPixels

BoxFormat = Literal["xyxy", "xywh"]
LabelLike = int | str | Category | None


@dataclass(frozen=True)
class BoxLimits:
    """What one call may ask for (None: no limit): boxes, and boxes x image pixels."""

    max_boxes: int | None = None
    max_mask_pixels: int | None = None

    def masks_that_fit(self, wanted: int, image_pixels: int) -> int:
        """How many of `wanted` masks of an image of `image_pixels` pixels one call may make:
        detections are trimmed to this (the best kept), where boxes sent in are refused."""
        most = max(wanted, 0)
        if self.max_boxes is not None:
            most = min(most, self.max_boxes)
        if self.max_mask_pixels is not None and image_pixels > 0:
            most = min(most, self.max_mask_pixels // image_pixels)
        return most


@dataclass(frozen=True)
class CheckedBoxes:
    """Boxes that passed the policy for one image: what `Predictor.predict` decodes as is.

    xyxy: ``[N, 4]`` float32, original-image pixels, inside the image.
    labels: ``[N]`` int64 contiguous labels (0: predict the class).
    image_size: ``(height, width)`` of the image they were checked against.
    kept: positions in the boxes as sent of these N (all of them unless `drop_outside`).
    outside: positions set aside for having nothing inside the image (`drop_outside`).
    """

    xyxy: np.ndarray
    labels: np.ndarray
    image_size: tuple[int, int]
    kept: tuple[int, ...]
    outside: tuple[int, ...] = ()

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def take(self, rows: Sequence[int]) -> CheckedBoxes:
        """Rows `rows` of these boxes (e.g. a run of a decoder budget), still checked."""
        idx = np.asarray(rows, dtype=np.int64)
        return CheckedBoxes(self.xyxy[idx], self.labels[idx], self.image_size,
                            tuple(self.kept[i] for i in idx.tolist()))


@dataclass(frozen=True)
class BoxRequest:
    """Boxes past rules 1-7 (`prepare_boxes`), waiting for their image's frame (rule 8).

    xyxy: ``[N, 4]`` float64 as sent (xyxy), labels: ``[N]`` contiguous. `pixels_checked`:
    whether rule 7 was applied (the image's pixel count was known).
    """

    xyxy: np.ndarray
    labels: np.ndarray
    limits: BoxLimits
    pixels_checked: bool

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def fit(self, image_size: tuple[int, int], clip: bool = True,
            drop_outside: bool = False) -> CheckedBoxes:
        """Rule 8 for an image of ``(height, width)`` (and rule 7, if `prepare_boxes` did not
        know the image's size)."""
        h, w = image_size
        if not self.pixels_checked:
            _check_mask_pixels(len(self), h, w, self.limits)
        arr = self.xyxy
        if not clip:
            sticking = (arr[:, 0] < 0) | (arr[:, 1] < 0) | (arr[:, 2] > w) | (arr[:, 3] > h)
            if sticking.any():
                i = int(np.argmax(sticking))
                raise BadBoxes(f"box {i} {np.round(arr[i], 2).tolist()} sticks out of the "
                               f"{w}x{h} image (send clip_boxes=true to clip it)", box_index=i)
        clipped = arr.copy()
        clipped[:, 0::2] = clipped[:, 0::2].clip(0, w)
        clipped[:, 1::2] = clipped[:, 1::2].clip(0, h)
        clipped = clipped.astype(np.float32)
        # Decided on what the decoder gets: a box thinner than float32 can tell is empty too.
        nothing = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
        if nothing.any() and not drop_outside:
            i = int(np.argmax(nothing))
            raise BadBoxes(f"box {i} lies outside the {w}x{h} image: {arr[i].tolist()}",
                           box_index=i)
        keep = np.flatnonzero(~nothing)
        return CheckedBoxes(clipped[keep], self.labels[keep], (int(h), int(w)),
                            tuple(keep.tolist()), tuple(np.flatnonzero(nothing).tolist()))


def check_boxes(boxes: object, labels: Sequence[LabelLike] | np.ndarray | None = None, *,
                card: ModelCard, image_size: tuple[int, int],
                limits: BoxLimits | None = None, box_format: BoxFormat = "xyxy",
                clip: bool = True, drop_outside: bool = False) -> CheckedBoxes:
    """The whole policy for boxes on an image of ``(height, width)``: rules 1-8 above.

    Raises `BadBoxes` (`TooManyBoxes`), `TooManyMaskPixels` or `UnknownLabel`."""
    request = prepare_boxes(boxes, labels, card=card, limits=limits, box_format=box_format,
                            image_size=image_size)
    return request.fit(image_size, clip=clip, drop_outside=drop_outside)


def prepare_boxes(boxes: object, labels: Sequence[LabelLike] | np.ndarray | None = None, *,
                  card: ModelCard, limits: BoxLimits | None = None,
                  box_format: BoxFormat = "xyxy",
                  image_size: tuple[int, int] | None = None) -> BoxRequest:
    """Rules 1-7, before the image is decoded: `image_size` is what is known of it then (a
    header's size: only its pixel count is used), or None when nothing is (rule 7 then waits
    for `BoxRequest.fit`)."""
    limits = limits or BoxLimits()
    arr = _as_array(boxes)
    n = arr.shape[0]
    if limits.max_boxes is not None and n > limits.max_boxes:
        raise TooManyBoxes(f"{n} boxes in one request, more than the limit of "
                           f"{limits.max_boxes}", count=n, limit=limits.max_boxes)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise BadBoxes(f"box {i} has a NaN or infinite coordinate: {arr[i].tolist()}",
                       box_index=i)
    if box_format == "xywh":
        flat = (arr[:, 2] <= 0) | (arr[:, 3] <= 0)
        if flat.any():
            i = int(np.argmax(flat))
            raise BadBoxes(f"box {i} has width {arr[i, 2]} and height {arr[i, 3]}; both must "
                           "be positive", box_index=i)
        arr = np.concatenate([arr[:, :2], arr[:, :2] + arr[:, 2:]], axis=1)
    elif box_format != "xyxy":
        raise ValueError(f"box_format must be 'xyxy' or 'xywh', got {box_format!r}")
    inverted = (arr[:, 2] <= arr[:, 0]) | (arr[:, 3] <= arr[:, 1])
    if inverted.any():
        i = int(np.argmax(inverted))
        raise BadBoxes(f"box {i} is empty or inverted (needs x2 > x1 and y2 > y1): "
                       f"{arr[i].tolist()}", box_index=i)
    contiguous = _resolve_labels(labels, n, card)
    if image_size is not None:
        _check_mask_pixels(n, *image_size, limits)
    return BoxRequest(arr, contiguous, limits, pixels_checked=image_size is not None)


def _as_array(boxes: object) -> np.ndarray:
    try:
        arr = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadBoxes("boxes must be a list of [x1, y1, x2, y2] numbers") from None
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise BadBoxes(f"boxes must have shape [N, 4] (x1, y1, x2, y2), got {list(arr.shape)}")
    return arr


def _resolve_labels(labels: Sequence[LabelLike] | np.ndarray | None, n: int,
                    card: ModelCard) -> np.ndarray:
    """Per box: the contiguous label of a category id, name or `Category`; 0 for None."""
    out = np.zeros((n,), dtype=np.int64)
    if labels is None:
        return out
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence | np.ndarray):
        raise BadBoxes("labels must be a list with one entry (id, name or null) per box")
    if len(labels) != n:
        raise BadBoxes(f"{len(labels)} labels for {n} boxes: give one label (or null) per box")
    for i, label in enumerate(labels):
        if isinstance(label, Category):
            out[i] = label.label
        elif label is not None:
            value = label.item() if isinstance(label, np.generic) else label
            out[i] = card.resolve(value).label
    return out


def _check_mask_pixels(n: int, h: int, w: int, limits: BoxLimits) -> None:
    if limits.max_mask_pixels is not None and n * h * w > limits.max_mask_pixels:
        raise TooManyMaskPixels(
            f"{n} boxes on a {w}x{h} image make {n * h * w:,} mask pixels (boxes x image "
            f"pixels), more than the budget of {limits.max_mask_pixels:,} per request: send "
            "fewer boxes per request, or a smaller image",
            pixels=n * h * w, limit=limits.max_mask_pixels)
