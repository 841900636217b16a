"""Reading request bodies: JSON (image as base64 or ``image_id``), multipart uploads, raw bytes,
and the JSON objects of the Label Studio routes.

The routes read the body themselves instead of declaring one pydantic body, because one route
accepts several content types, and because a JSON body is refused before pydantic sees it when
it nests too deep; their OpenAPI request bodies are declared in ``openapi.py`` from the same
models, so the schema still describes exactly what is parsed here.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import warnings
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Depends, Request
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from boxmask.server.errors import ApiError, from_validation_error
from boxmask.server.schemas import ImageRef

M = TypeVar("M", bound=BaseModel)
J = TypeVar("J", bound=ImageRef)  # a JSON body that names its image

_DATA_URL = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.ASCII)
# Form fields that hold JSON (lists) rather than plain strings.
_JSON_FORM_FIELDS = ("boxes", "labels")
#: JSON the server parses with Python's json (form fields, Label Studio's bodies) nests a few
#: levels; anything far deeper is refused before it reaches a recursive walk (pydantic's
#: validation, json's own parser: a RecursionError is a 500).
MAX_JSON_DEPTH = 32


@dataclass
class ImageInput:
    """Exactly one of the encoded bytes of an image or the id of a cached one."""

    data: bytes | None = None
    image_id: str | None = None


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def unsupported(request: Request, accepted: list[str]) -> ApiError:
    got = media_type(request) or "none"
    return ApiError(415, "unsupported_media_type",
                    f"content type {got!r} is not accepted here; send one of: "
                    f"{', '.join(accepted)}", {"accepted": accepted})


async def read_json(request: Request, model: type[M]) -> M:
    body = await request.body()
    if not body.strip():
        raise ApiError(400, "malformed_json", "empty body: expected a JSON object")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            first = exc.errors()[0]
            raise ApiError(400, "malformed_json",
                           f"body is not valid JSON: {first.get('msg', '')}") from None
        raise from_validation_error(exc) from None


async def read_image_request(request: Request, json_model: type[J], form_model: type[M],
                             accepted: list[str]) -> tuple[ImageInput, J | M]:
    """The image and parameters of an image route, sent as JSON (``json_model``, image as
    base64 or ``image_id``) or as multipart (``form_model``, image as a file part)."""
    kind = media_type(request)
    if kind == "application/json":
        body = await read_json(request, json_model)
        return image_from_ref(body), body
    if kind == "multipart/form-data":
        return await read_form(request, form_model)
    raise unsupported(request, accepted)


def decode_base64_image(text: str) -> bytes:
    """Base64 (standard alphabet, a ``data:image/...;base64,`` prefix allowed) to bytes."""
    text = _DATA_URL.sub("", text.strip(), count=1)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "bad_image", "'image' is not valid base64") from None
    if not data:
        raise ApiError(422, "bad_image", "'image' is empty")
    return data


def image_from_ref(ref: ImageRef) -> ImageInput:
    if ref.image is not None:
        return ImageInput(data=decode_base64_image(ref.image))
    return ImageInput(image_id=ref.image_id)


def max_part_size(request: Request) -> int:
    """Starlette caps a text part at 1 MiB; an ``image`` field of base64 text may be as large as
    the body limit allows."""
    settings = getattr(request.app.state, "settings", None)
    return int(getattr(settings, "max_body_bytes", 32 << 20))


async def read_form(request: Request, model: type[M], max_fields: int = 32
                    ) -> tuple[ImageInput, M]:
    """A multipart body: an ``image`` file part (or an ``image_id`` field), then the fields of
    ``model``; ``boxes`` and ``labels`` are JSON text (``boxes=[[10,10,50,50]]``)."""
    try:
        form = await request.form(max_files=1, max_fields=max_fields,
                                  max_part_size=max_part_size(request))
    except ApiError:
        raise
    except Exception as exc:  # noqa: BLE001 - python-multipart's parse errors have no common base
        raise ApiError(400, "malformed_multipart", f"could not parse the multipart body: {exc}") from None
    try:
        upload = form.get("image")
        fields: dict[str, Any] = {}
        for key, value in form.multi_items():
            if key == "image":
                continue
            if isinstance(value, UploadFile):
                raise ApiError(422, "invalid_request", f"form field {key!r} must be text, not a file")
            if key in _JSON_FORM_FIELDS:
                fields[key] = json_field(key, value)
            else:
                fields[key] = value
        image_id = fields.pop("image_id", None)
        if isinstance(upload, UploadFile):
            if image_id is not None:
                raise ApiError(422, "invalid_request", "give either an 'image' file or an 'image_id'")
            data = await upload.read()
            if not data:
                raise ApiError(422, "bad_image", "the uploaded 'image' file is empty")
            image = ImageInput(data=data)
        elif isinstance(upload, str):
            image = ImageInput(data=decode_base64_image(upload))
        elif image_id:
            image = ImageInput(image_id=image_id)
        else:
            raise ApiError(422, "invalid_request",
                           "multipart body needs an 'image' file part or an 'image_id' field")
        try:
            params = model.model_validate(fields)
        except ValidationError as exc:
            raise from_validation_error(exc) from None
        return image, params
    finally:
        await form.close()


def json_field(name: str, text: str) -> Any:
    """A form field of JSON text, parsed: 400 ``malformed_json`` when it is not JSON or nests
    deeper than `MAX_JSON_DEPTH`."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ApiError(400, "malformed_json", f"form field {name!r} is not valid JSON: {exc}") from None
    except RecursionError:
        value = None
    else:
        if json_depth(value) <= MAX_JSON_DEPTH:
            return value
    raise ApiError(400, "malformed_json",
                   f"form field {name!r} nests deeper than {MAX_JSON_DEPTH} levels")


def json_depth(value: Any) -> int:
    """Nesting depth of parsed JSON (a scalar is 0), without recursion; stops counting once
    past `MAX_JSON_DEPTH`."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            return deepest  # deep enough to refuse: no need to walk the rest
        stack.extend((child, depth + 1) for child in children)
    return deepest


async def json_object(request: Request) -> dict[str, Any]:
    """A dependency: the body as a JSON object. JSON only (415 otherwise, so a web page cannot
    send it as a "simple" cross-origin request), at most `MAX_JSON_DEPTH` levels deep (400
    otherwise: Label Studio's bodies nest a few levels, tasks -> annotations -> result ->
    value -> labels, and anything far deeper is not Label Studio)."""
    kind = media_type(request)
    if kind != "application/json" and not kind.endswith("+json"):
        raise ApiError(415, "unsupported_media_type",
                       f"send the body as application/json, not {kind or 'no content type'}",
                       {"accepted": ["application/json"]})
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_request", f"body is not JSON: {exc}") from exc
    except RecursionError:
        raise ApiError(400, "bad_request", f"body nests deeper than {MAX_JSON_DEPTH} levels") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "body must be a JSON object")
    if json_depth(body) > MAX_JSON_DEPTH:
        raise ApiError(400, "bad_request", f"body nests deeper than {MAX_JSON_DEPTH} levels")
    return body


def validated(model: type[M], body: dict[str, Any]) -> M:
    """`body` checked against its schema: 422 naming each bad field."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise from_validation_error(exc) from None


def json_body(model: type[M]) -> Callable[..., Awaitable[M]]:
    """A dependency: the `json_object` body checked against `model` (the object is read once
    per request, however many dependencies ask for it)."""

    async def read(body: dict[str, Any] = Depends(json_object)) -> M:
        return validated(model, body)

    return read


def check_image_header(data: bytes, max_pixels: int) -> tuple[int, int]:
    """``(width, height)`` from the header, before any pixel is decoded: a 1 KB PNG that claims
    50 000 x 50 000 pixels (a decompression bomb) is refused here with 413."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
    except UnidentifiedImageError:
        raise ApiError(422, "bad_image", "not an image: the bytes are in no format the server "
                       "can read (PNG, JPEG, WebP, TIFF, BMP, GIF, ...)") from None
    except Image.DecompressionBombError as exc:
        raise ApiError(413, "image_too_large", f"image has too many pixels: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ApiError(422, "bad_image", f"image header could not be read: {exc}") from None
    if width * height > max_pixels:
        raise ApiError(413, "image_too_large",
                       f"image has {width}x{height} = {width * height} pixels, more than the "
                       f"limit of {max_pixels} (BOXMASK_MAX_IMAGE_PIXELS)",
                       {"width": width, "height": height, "max_pixels": max_pixels})
    if width <= 0 or height <= 0:
        raise ApiError(422, "bad_image", f"image has no pixels ({width}x{height})")
    return width, height
