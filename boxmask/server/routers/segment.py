"""``POST /v1/segment`` (boxes to masks) and ``POST /v1/detect`` (masks for the whole image)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from boxmask.server import inference
from boxmask.server.auth import require_token
from boxmask.server.dependencies import get_limiter, get_metrics, get_registry, get_settings
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

ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 415, 422, 503)}
ACCEPTED = ["application/json", "multipart/form-data"]


@router.post("/segment", response_model=SegmentResponse, responses=ERRORS,
             openapi_extra=json_or_form(SegmentRequest, SegmentParams))
async def segment(
    request: Request,
    settings: ServerSettings = Depends(get_settings),
    registry: ModelRegistry = Depends(get_registry),
    limiter: InferenceLimiter = Depends(get_limiter),
    metrics: ServerMetrics = Depends(get_metrics),
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
    metrics.boxes.observe(len(params.boxes))
    return await run_inference(limiter, registry, slot, inference.segment, slot.predictor,
                               slot.name, image, params, settings.max_image_pixels)


@router.post("/detect", response_model=SegmentResponse, responses=ERRORS,
             openapi_extra=json_or_form(DetectRequest, DetectParams))
async def detect(
    request: Request,
    settings: ServerSettings = Depends(get_settings),
    registry: ModelRegistry = Depends(get_registry),
    limiter: InferenceLimiter = Depends(get_limiter),
) -> SegmentResponse:
    """Automatic masks for the whole image (the detector): instances scoring at least
    ``score_threshold``, at most ``max_detections`` of them (capped by the server's
    BOXMASK_MAX_DETECTIONS), best first."""
    image, params = await read_image_request(request, DetectRequest, DetectParams, ACCEPTED)
    slot = registry.slot(params.model)
    return await run_inference(limiter, registry, slot, inference.detect, slot.predictor,
                               slot.name, image, params, settings.max_image_pixels,
                               settings.max_detections)
