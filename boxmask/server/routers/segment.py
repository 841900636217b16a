"""``POST /v1/segment`` (boxes to masks) and ``POST /v1/detect`` (masks for the whole image)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from boxmask.server import inference
from boxmask.server.auth import require_token
from boxmask.server.budget import CallerBudget, caller_of, image_plane, refuse_over_max
from boxmask.server.dependencies import (
    get_caller_budget,
    get_limiter,
    get_metrics,
    get_registry,
    get_settings,
)
from boxmask.server.errors import ApiError, ErrorResponse
from boxmask.server.limits import InferenceLimiter
from boxmask.server.metrics import ServerMetrics
from boxmask.server.openapi import json_or_form
from boxmask.server.payloads import read_image_request
from boxmask.server.registry import ModelRegistry
from boxmask.server.runner import run_inference
from boxmask.server.schemas import (
    DetectParams,
    DetectRequest,
    SegmentParams,
    SegmentRequest,
    SegmentResponse,
)
from boxmask.server.settings import ServerSettings

router = APIRouter(prefix="/v1", tags=["segment"], dependencies=[Depends(require_token)])

ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 415, 422, 429, 503)}
ACCEPTED = ["application/json", "multipart/form-data"]


@router.post("/segment", response_model=SegmentResponse, responses=ERRORS,
             openapi_extra=json_or_form(SegmentRequest, SegmentParams))
async def segment(
    request: Request,
    settings: ServerSettings = Depends(get_settings),
    registry: ModelRegistry = Depends(get_registry),
    limiter: InferenceLimiter = Depends(get_limiter),
    metrics: ServerMetrics = Depends(get_metrics),
    budget: CallerBudget = Depends(get_caller_budget),
) -> SegmentResponse:
    """Masks for boxes: one instance per box, in the order sent, all boxes decoded in one batch.

    The image comes as base64 (``image``), as the id of an uploaded one (``image_id``), or as
    a multipart ``image`` file with the other fields as form fields. Per box, ``labels`` gives a
    category name, id, or null; with null the model's predicted class is used and returned
    with its score. Masks come as COCO RLE (default), polygons, or PNG."""
    image, params = await read_image_request(request, SegmentRequest, SegmentParams, ACCEPTED)
    if len(params.boxes) > settings.max_boxes:
        metrics.rejected.labels("too_many_boxes").inc()
        raise ApiError(422, "too_many_boxes",
                       f"{len(params.boxes)} boxes in one request; the limit is "
                       f"{settings.max_boxes} (BOXMASK_MAX_BOXES)",
                       {"boxes": len(params.boxes), "max_boxes": settings.max_boxes})
    slot = registry.slot(params.model)
    # Sized and charged before the request queues: a refused request costs neither a queue
    # place nor a slot (the predictor checks the per-request budget again, as the last word).
    cost = 0
    size = image_plane(image, slot.predictor, settings.max_image_pixels)
    if size is not None:
        width, height = size
        n = len(params.boxes)
        refuse_over_max(n * width * height, settings.max_mask_pixels,
                        f"{n} boxes on a {width}x{height} image", metrics)
        cost = (n + (image.data is not None)) * width * height
    caller = caller_of(request)
    budget.take(caller, cost)
    metrics.boxes.observe(len(params.boxes))
    try:
        return await run_inference(limiter, registry, slot, inference.segment, slot.predictor,
                                   slot.name, image, params, settings.max_image_pixels)
    except BaseException:
        budget.refund(caller, cost)  # refused or failed: the work was not done
        raise


@router.post("/detect", response_model=SegmentResponse, responses=ERRORS,
             openapi_extra=json_or_form(DetectRequest, DetectParams))
async def detect(
    request: Request,
    settings: ServerSettings = Depends(get_settings),
    registry: ModelRegistry = Depends(get_registry),
    limiter: InferenceLimiter = Depends(get_limiter),
    budget: CallerBudget = Depends(get_caller_budget),
) -> SegmentResponse:
    """Automatic masks for the whole image (the detector): instances scoring at least
    ``score_threshold``, at most ``max_detections`` of them (capped by the server's
    BOXMASK_MAX_DETECTIONS), best first."""
    image, params = await read_image_request(request, DetectRequest, DetectParams, ACCEPTED)
    slot = registry.slot(params.model)
    # Charged up front for as many masks as the detector may return (the predictor keeps the
    # best that fit the per-request budget); what was not used is given back.
    plane, inline = 0, image.data is not None
    size = image_plane(image, slot.predictor, settings.max_image_pixels)
    if size is not None:
        plane = size[0] * size[1]
    most = min(params.max_detections, settings.max_detections, settings.max_boxes,
               settings.max_mask_pixels // max(plane, 1))
    cost = (most + inline) * plane
    caller = caller_of(request)
    budget.take(caller, cost)
    try:
        answer = await run_inference(limiter, registry, slot, inference.detect, slot.predictor,
                                     slot.name, image, params, settings.max_image_pixels,
                                     settings.max_detections)
    except BaseException:
        budget.refund(caller, cost)
        raise
    budget.refund(caller, cost - (len(answer.instances) + inline) * plane)
    return answer
