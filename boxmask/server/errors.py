"""Errors as JSON with one stable shape, and the mapping from runtime errors to status codes.

Every error the service returns, whatever raised it, looks like::

    {"error": {"code": "bad_boxes", "message": "box 1 is inverted: x2 < x1", "details": {...}},
     "request_id": "5f0c..."}

``code`` is a short stable identifier a client can branch on; ``message`` is for people;
``details`` is optional structured context (the known labels, the validation errors, ...).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from boxmask.runtime.errors import (
    BackendUnavailable,
    BadBoxes,
    BadImage,
    ModelDirError,
    NoDetector,
    RuntimeInputError,
    TooManyBoxes,
    TooManyMaskPixels,
    UnknownImage,
    UnknownLabel,
)
from boxmask.server.redact import public_card, redact_paths


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any | None = None


class ErrorResponse(BaseModel):
    """The body of every 4xx/5xx answer."""

    error: ErrorBody
    request_id: str | None = None


class ApiError(Exception):
    """An error with its HTTP status, stable code and message; raised anywhere in a request."""

    def __init__(self, status: int, code: str, message: str, details: Any | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


def error_response(request: Request | None, status: int, code: str, message: str,
                   details: Any | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None) if request is not None else None
    if status >= 500:
        # The server's own failures (a model that would not load, bad settings) name its
        # files; the log has them in full, the answer keeps each path's last component.
        message, details = redact_paths(message), public_card(details)
    body = ErrorResponse(error=ErrorBody(code=code, message=message, details=details),
                         request_id=request_id)
    return JSONResponse(jsonable_encoder(body, exclude_none=True), status_code=status,
                        headers=headers)


# Status code -> code for errors raised by Starlette/FastAPI themselves (routing, methods).
_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
               429: "too_many_requests", 503: "unavailable"}


def validation_details(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic errors without the echoed input (it may be a megabyte of base64)."""
    return [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in errors]


def validation_message(errors: list[dict[str, Any]]) -> str:
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body",))
        parts.append(f"{loc}: {e.get('msg', '')}" if loc else str(e.get("msg", "")))
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "invalid request: " + "; ".join(parts) + more


def from_validation_error(exc: ValidationError | RequestValidationError) -> ApiError:
    errors = list(exc.errors())
    return ApiError(422, "invalid_request", validation_message(errors), validation_details(errors))


def from_runtime_error(exc: Exception) -> ApiError:
    """The status and code of an error raised by ``boxmask.runtime``."""
    if isinstance(exc, UnknownLabel):
        return ApiError(422, "unknown_label", str(exc),
                        {"label": exc.label, "known_names": exc.known_names,
                         "known_ids": exc.known_ids})
    if isinstance(exc, UnknownImage):
        return ApiError(404, "unknown_image",
                        f"{exc}; upload the image again (POST /v1/images) or send it inline")
    # The server's predictors take their limits from its settings: the message names them.
    if isinstance(exc, TooManyBoxes):
        return ApiError(422, "too_many_boxes", f"{exc} (BOXMASK_MAX_BOXES)",
                        {"boxes": exc.count, "max_boxes": exc.limit})
    if isinstance(exc, BadBoxes):
        return ApiError(422, "bad_boxes", str(exc),
                        None if exc.box_index is None else {"box_index": exc.box_index})
    if isinstance(exc, TooManyMaskPixels):
        details = None if exc.pixels is None else {"mask_pixels": exc.pixels,
                                                   "max_mask_pixels": exc.limit}
        return ApiError(422, "too_many_mask_pixels", f"{exc} (BOXMASK_MAX_MASK_PIXELS)", details)
    if isinstance(exc, BadImage):
        return ApiError(422, "bad_image", str(exc))
    if isinstance(exc, NoDetector):
        return ApiError(422, "no_detector", str(exc))
    if isinstance(exc, (BackendUnavailable, ModelDirError)):
        return ApiError(503, "backend_unavailable", str(exc), headers={"Retry-After": "5"})
    if isinstance(exc, RuntimeInputError):  # a newer kind of bad input: still the caller's
        return ApiError(422, "invalid_request", str(exc))
    raise TypeError(f"not a runtime error: {exc!r}")


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception to the stable JSON shape; unexpected ones become a logged 500."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = from_validation_error(exc)
        return error_response(request, err.status, err.code, err.message, err.details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        return error_response(request, exc.status_code, code, str(exc.detail),
                              headers=getattr(exc, "headers", None))

    # Unexpected exceptions: RequestContextMiddleware answers them (500 with X-Request-ID).
