"""``POST /v1/segment`` (boxes to masks) and ``POST /v1/detect`` (masks for the whole image).

A request is sized, checked and charged before it queues: a refused one costs neither a queue
place nor an inference slot. Its boxes meet the box policy (`boxmask.runtime.boxes`) here, on
arrival, against the model's limits and the image's size as its header or the cache tells it;
once the image is decoded (its EXIF orientation applied) they are fitted to it
(`inference.segment`), and the predictor decodes them as they are.

Both routes are `RequestRoute`s (``boxmask/server/routing.py``): served without FastAPI's
dependency solving and response validation, the largest single step of the server's own work
on a cached box; each checks the token itself, first.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from boxmask.runtime import Predictor
from boxmask.runtime.boxes import BoxRequest, prepare_boxes
from boxmask.runtime.errors import RuntimeInputError, TooManyBoxes, TooManyMaskPixels
from boxmask.server import inference
from boxmask.server.auth import require_token
from boxmask.server.budget import caller_of, image_plane
from boxmask.server.dependencies import services_of
from boxmask.server.errors import ErrorResponse, from_runtime_error
from boxmask.server.metrics import ServerMetrics
from boxmask.server.openapi import json_or_form
from boxmask.server.payloads import read_image_request
from boxmask.server.routing import RequestRoute, bearer_security, json_response
from boxmask.server.runner import run_inference
from boxmask.server.schemas import (
    DetectParams,
    DetectRequest,
    SegmentParams,
    SegmentRequest,
    SegmentResponse,
)

router = APIRouter(prefix="/v1", tags=["segment"], route_class=RequestRoute)

ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 415, 422, 429, 503)}
ACCEPTED = ["application/json", "multipart/form-data"]


@router.post("/segment", response_model=SegmentResponse, responses=ERRORS,
             openapi_extra={**json_or_form(SegmentRequest, SegmentParams), **bearer_security()})
async def segment(request: Request) -> Response:
    """Masks for boxes: one instance per box, in the order sent, all boxes decoded in one batch.

    The image comes as base64 (``image``), as the id of an uploaded one (``image_id``), or as
    a multipart ``image`` file with the other fields as form fields. Per box, ``labels`` gives a
    category name, id, or null; with null the model's predicted class is used and returned
    with its score. Masks come as COCO RLE (default), polygons, or PNG."""
    require_token.check(request)
    services = services_of(request)
    settings, registry, metrics, budget = (services.settings, services.registry,
                                           services.metrics, services.budget)
    image, params = await read_image_request(request, SegmentRequest, SegmentParams, ACCEPTED)
    slot = registry.slot(params.model)
    assert slot.predictor is not None  # a slot that serves has one
    size = image_plane(image, slot.predictor, settings.max_image_pixels)
    boxes = _arriving_boxes(params, slot.predictor, size, metrics)
    cost = 0
    if size is not None:
        width, height = size
        cost = (len(boxes) + (image.data is not None)) * width * height
    caller = caller_of(request)
    budget.take(caller, cost)
    metrics.boxes.observe(len(params.boxes))
    # A short request (cached image, few boxes, RLE) runs on the loop: no thread hand-off.
    inline = (image.data is None and len(boxes) <= settings.inline_boxes
              and params.mask_format == "rle")
    try:
        answer = await run_inference(services.limiter, registry, slot, inference.segment,
                                     slot.predictor, slot.name, image, boxes, params,
                                     settings.max_image_pixels, inline=inline)
    except BaseException:
        budget.refund(caller, cost)  # refused or failed: the work was not done
        raise
    return json_response(answer)


@router.post("/detect", response_model=SegmentResponse, responses=ERRORS,
             openapi_extra={**json_or_form(DetectRequest, DetectParams), **bearer_security()})
async def detect(request: Request) -> Response:
    """Automatic masks for the whole image (the detector): instances scoring at least
    ``score_threshold``, at most ``max_detections`` of them (capped by the server's
    BOXMASK_MAX_DETECTIONS), best first."""
    require_token.check(request)
    services = services_of(request)
    settings, registry, budget = services.settings, services.registry, services.budget
    image, params = await read_image_request(request, DetectRequest, DetectParams, ACCEPTED)
    slot = registry.slot(params.model)
    assert slot.predictor is not None
    # Charged up front for as many masks as the detector may return (the predictor keeps the
    # best that fit the model's limits); what was not used is given back.
    plane, inline = 0, image.data is not None
    size = image_plane(image, slot.predictor, settings.max_image_pixels)
    if size is not None:
        plane = size[0] * size[1]
    wanted = min(params.max_detections, settings.max_detections)
    cost = (slot.predictor.limits.masks_that_fit(wanted, plane) + inline) * plane
    caller = caller_of(request)
    budget.take(caller, cost)
    try:
        answer = await run_inference(services.limiter, registry, slot, inference.detect, slot.predictor,
                                     slot.name, image, params, settings.max_image_pixels,
                                     settings.max_detections)
    except BaseException:
        budget.refund(caller, cost)
        raise
    budget.refund(caller, cost - (len(answer.instances) + inline) * plane)
    return json_response(answer)


def _arriving_boxes(params: SegmentParams, predictor: Predictor, size: tuple[int, int] | None,
                    metrics: ServerMetrics) -> BoxRequest:
    """The box policy on arrival (all of it but the image's frame), with the model's limits
    (the server's settings) and the image's `(width, height)` where it is known."""
    try:
        return prepare_boxes(params.boxes, params.labels, card=predictor.card,
                             limits=predictor.limits, box_format=params.box_format,
                             image_size=None if size is None else (size[1], size[0]))
    except RuntimeInputError as exc:
        if isinstance(exc, TooManyBoxes):
            metrics.rejected.labels("too_many_boxes").inc()
        elif isinstance(exc, TooManyMaskPixels):
            metrics.rejected.labels("too_many_mask_pixels").inc()
        raise from_runtime_error(exc) from None
