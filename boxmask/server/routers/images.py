"""``POST /v1/images``: upload an image once, get its id, and have it encoded and cached."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from boxmask.server import inference
from boxmask.server.auth import require_token
from boxmask.server.budget import caller_of
from boxmask.server.dependencies import Services, get_services
from boxmask.server.errors import ApiError, ErrorResponse
from boxmask.server.openapi import image_upload_body
from boxmask.server.payloads import check_image_header, max_part_size, media_type, unsupported
from boxmask.server.runner import run_inference
from boxmask.server.schemas import ImageResponse

router = APIRouter(prefix="/v1", tags=["images"], dependencies=[Depends(require_token)])

ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 415, 422, 429, 503)}
_RAW_TYPES = ("image/", "application/octet-stream")


@router.post("/images", response_model=ImageResponse, responses=ERRORS,
             openapi_extra=image_upload_body())
async def upload_image(
    request: Request,
    model: str | None = Query(None, description="Model whose cache gets the image."),
    services: Services = Depends(get_services),
) -> ImageResponse:
    """Upload an image (a multipart ``image`` file, or the raw bytes with an ``image/*`` or
    ``application/octet-stream`` content type). The answer's ``image_id`` is the sha256 of the
    bytes; the image is encoded now, so later ``/v1/segment`` calls with that id only run the
    box decoder. Ids live in a bounded cache: after eviction, segment answers 404
    ``unknown_image`` and the image must be sent again."""
    settings, registry, budget = services.settings, services.registry, services.budget
    kind = media_type(request)
    slot = registry.slot(model)
    if kind == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=4,
                                      max_part_size=max_part_size(request))
        except ApiError:
            raise
        except Exception as exc:  # noqa: BLE001 - python-multipart parse errors
            raise ApiError(400, "malformed_multipart", f"could not parse the multipart body: {exc}") from None
        try:
            upload = form.get("image")
            if upload is None or isinstance(upload, str):
                raise ApiError(422, "invalid_request", "multipart body needs an 'image' file part")
            data = await upload.read()
        finally:
            await form.close()
    elif kind.startswith(_RAW_TYPES):
        data = await request.body()
    else:
        raise unsupported(request, ["multipart/form-data", "image/*", "application/octet-stream"])
    if not data:
        raise ApiError(422, "bad_image", "empty image body")
    # Decoding it costs one image plane of the caller's budget (a re-upload is a cache hit, but
    # charged alike: telling them apart would hash the bytes on the event loop).
    width, height = check_image_header(data, settings.max_image_pixels)
    caller = caller_of(request)
    budget.take(caller, width * height)
    try:
        return await run_inference(services.limiter, registry, slot, inference.upload, slot.predictor,
                                   slot.name, data, settings.max_image_pixels)
    except BaseException:
        budget.refund(caller, width * height)
        raise
