"""OpenAPI request bodies for routes that read their body themselves.

FastAPI documents one pydantic body per route; ``/v1/segment`` takes JSON *or* multipart,
``/v1/images`` multipart *or* raw bytes, and the Label Studio routes check a JSON object's depth
before its schema. Those routes read the body themselves (``payloads.py``) and declare it here,
from the same pydantic models, so the schema stays the contract that schemathesis tests against.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

REF = "#/components/schemas/{model}"

# The image as a file part, or the id of an uploaded one.
_IMAGE_PARTS: dict[str, Any] = {
    "image": {"type": "string", "format": "binary", "description": "The image file."},
    "image_id": {"type": "string", "description": "An id from POST /v1/images, instead of a file."},
}
# Form fields that carry JSON text rather than a plain value.
_JSON_EXAMPLES = {"boxes": "[[10, 20, 120, 160]]", "labels": '["disc", null]'}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _form_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A multipart schema: the image parts, then each field of ``model`` as a text part (lists
    as JSON text)."""
    properties: dict[str, Any] = dict(_IMAGE_PARTS)
    for name, field in model.model_fields.items():
        text: dict[str, Any] = {"type": "string"}
        if field.description:
            text["description"] = field.description
        if name in _JSON_EXAMPLES:
            text["description"] = f"JSON text, e.g. {_JSON_EXAMPLES[name]}"
        properties[name] = text
    required = [n for n, f in model.model_fields.items() if f.is_required()]
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def json_or_form(json_model: type[BaseModel], form_fields: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route taking ``json_model`` as JSON or ``form_fields`` + an image
    as multipart/form-data."""
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": _ref(json_model)},
        "multipart/form-data": {"schema": _form_schema(form_fields)},
    }}}


def json_body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route reading a JSON `model` itself (`payloads.json_body`)."""
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": _ref(model)}}}}


def image_upload_body() -> dict[str, Any]:
    binary = {"type": "string", "format": "binary"}
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                           "properties": {"image": binary}}},
        "image/png": {"schema": binary},
        "image/jpeg": {"schema": binary},
        "application/octet-stream": {"schema": binary},
    }}}


def install_openapi(app: FastAPI, body_models: list[type[BaseModel]]) -> None:
    """Generate the schema once, adding ``body_models`` (and their sub-models) as components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description,
                             routes=app.routes)
        _, defs = models_json_schema([(m, "validation") for m in body_models], ref_template=REF)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, definition in defs.get("$defs", {}).items():
            components.setdefault(name, definition)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
