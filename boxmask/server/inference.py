"""The blocking work of a request: set the image, decode boxes, encode masks.

These functions run in a worker thread (``InferenceLimiter.run``): the encoder takes a CPU for
hundreds of milliseconds, and even a cached decode plus RLE encoding is a few milliseconds that
stall every other connection while they run on the event loop. The one exception is
``ServerSettings.inline_boxes`` (1 by default, 0 turns it off): a cached ``segment`` of that
many boxes or fewer, with RLE masks, runs on the loop, where the hand-off to a thread costs as much as the server's other
work of the request (docs/benchmarks.md).
"""

from __future__ import annotations

import base64

import numpy as np

from boxmask.runtime import Prediction, Predictor
from boxmask.runtime.boxes import BoxRequest
from boxmask.runtime.masks import CroppedMask, encode_mask
from boxmask.server.payloads import ImageInput, check_image_header
from boxmask.server.schemas import (
    DetectParams,
    ImageResponse,
    Instance,
    MaskFormat,
    PngMask,
    PolygonMask,
    RleMask,
    SegmentParams,
    SegmentResponse,
)


def wire_mask(mask: np.ndarray | CroppedMask, mask_format: MaskFormat
              ) -> RleMask | PolygonMask | PngMask:
    """One ``[H, W]`` bool mask (or the runtime's `CroppedMask` of one) in the requested wire
    format (the runtime's `encode_mask`, wrapped in the response's schema)."""
    size = [int(mask.shape[0]), int(mask.shape[1])]
    if mask_format == "rle":
        return RleMask(size=size, counts=encode_mask(mask, "rle")["counts"])
    if mask_format == "polygons":
        return PolygonMask(size=size, polygons=encode_mask(mask, "polygons"))
    if mask_format == "png":
        return PngMask(size=size, data=base64.b64encode(encode_mask(mask, "png")).decode("ascii"))
    raise ValueError(f"mask_format must be rle, polygons or png, got {mask_format!r}")


def _number(value: float) -> float | None:
    # NaN: not computed (a labelled box's class score on the fast path). JSON has no NaN: null.
    return None if np.isnan(value) else round(float(value), 5)


def instances(pred: Prediction, mask_format: MaskFormat, tight_box: bool = False
              ) -> list[Instance]:
    """One instance per mask, each pasted and encoded in turn (one plane at a time; for RLE
    not even that: the pixels of its box alone, `Prediction.cropped_mask`, encode to the same
    string). `tight_box`: add the box of each mask's pixels, read from the same pixels."""
    out = []
    fallback = pred.box_fallback
    for i in range(len(pred)):
        cropped = pred.cropped_mask(i)
        mask = cropped if mask_format == "rle" else cropped.full()
        tight = pred.tight_box(i, cropped) if tight_box else None
        assert pred.quality is not None
        out.append(Instance(
            box=[round(float(v), 2) for v in pred.boxes[i]], category_id=int(pred.labels[i]),
            label=pred.names[i], score=_number(pred.scores[i]), quality=_number(pred.quality[i]),
            tight_box=None if tight is None else list(tight),
            box_fallback=bool(fallback[i]), mask=wire_mask(mask, mask_format)))
    return out


def set_image(predictor: Predictor, image: ImageInput, max_pixels: int) -> str:
    """The image's key, encoding it unless the cache has it already."""
    if image.data is None:
        assert image.image_id is not None
        # Counted as a cache hit (or 404), and held for this request's thread from here on.
        return predictor.select_image(image.image_id)
    check_image_header(image.data, max_pixels)
    return predictor.set_image(image.data)


def upload(predictor: Predictor, model: str, data: bytes, max_pixels: int) -> ImageResponse:
    key = set_image(predictor, ImageInput(data=data), max_pixels)
    height, width = predictor.image_size(key)
    return ImageResponse(model=model, image_id=key, width=width, height=height)


def segment(predictor: Predictor, model: str, image: ImageInput, boxes: BoxRequest,
            params: SegmentParams, max_pixels: int) -> SegmentResponse:
    """`boxes`: the request's boxes past the policy's checks on arrival (labels resolved
    there, before any encode); fitted here to the decoded image, clipped or refused."""
    key = set_image(predictor, image, max_pixels)
    checked = boxes.fit(predictor.image_size(key), clip=params.clip_boxes)
    # All boxes of the call go through the decoder in one batch; labelled boxes through the
    # labelled decoder (no box head) unless the client wants their class scores.
    pred = predictor.predict(checked, key=key, class_scores=params.class_scores)
    height, width = pred.image_size
    return SegmentResponse(model=model, image_id=key, width=width, height=height,
                           instances=instances(pred, params.mask_format, params.tight_box))


def detect(predictor: Predictor, model: str, image: ImageInput, params: DetectParams,
           max_pixels: int, max_detections: int) -> SegmentResponse:
    key = set_image(predictor, image, max_pixels)
    pred = predictor.detect(key=key, score_threshold=params.score_threshold,
                            max_detections=min(params.max_detections, max_detections))
    height, width = pred.image_size
    return SegmentResponse(model=model, image_id=key, width=width, height=height,
                           instances=instances(pred, params.mask_format))
