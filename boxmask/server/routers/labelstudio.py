"""Label Studio's ML backend protocol at /labelstudio, over `integrations.labelstudio`'s backend.

Label Studio (read from its 1.23 `ml/api_connector.py` and the label-studio-ml-backend's
`api.py`) calls, relative to the backend URL a user enters (`http://HOST:PORT/labelstudio`):

- `GET /health` (1 s timeout) and `GET /`: `{"status": "UP", ...}`;
- `POST /setup` (3 s) `{project: "<id>.<ts>", schema, hostname, access_token, extra_params}`
  -> `{"model_version"}`; sent again on every `GET /api/ml/{id}`;
- `POST /predict` (100 s) `{tasks, project, label_config, params: {context}}`
  -> `{"results": [...]}` with one entry per task;
- `POST /webhook` for annotation events -> 201 (boxmask does not train from Label Studio).

The translation (tasks and regions to boxes, masks to brush/polygon results) is the backend's,
which knows nothing of this server; this module adds the transport: the server's one token
check (`auth.require_token_or_basic`: Label Studio's "Use authentication" sends the token as a
Basic password), the inference slots, and the mapping of errors to the server's JSON errors.
The backends are made in the app's lifespan (`LabelStudioBackends.start`).
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from boxmask.integrations.labels import UnmappedLabel
from boxmask.integrations.labelstudio.backend import (
    ANSWERABLE,
    BackendOptions,
    ImageEvicted,
    LabelStudioBackend,
    TaskError,
)
from boxmask.integrations.labelstudio.config import LabelConfigError
from boxmask.integrations.labelstudio.images import (
    ImageFetchError,
    LabelStudioAccess,
    parse_origins,
)
from boxmask.runtime.errors import RuntimeInputError
from boxmask.server.auth import require_token_or_basic
from boxmask.server.dependencies import get_limiter, get_registry
from boxmask.server.errors import ApiError, from_runtime_error
from boxmask.server.limits import InferenceLimiter
from boxmask.server.registry import ModelRegistry, ModelSlot
from boxmask.server.runner import run_inference
from boxmask.server.settings import LabelStudioSettings

log = logging.getLogger("boxmask.server.labelstudio")

router = APIRouter(prefix="/labelstudio", tags=["label studio"])


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI description of a route that reads its JSON body itself (`_json`): Label
    Studio's bodies, loosely, so that clients and the schema fuzzer see what is expected."""
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}}}


_SETUP_BODY = _json_body({"type": "object", "properties": {
    "project": {"type": "string", "description": "\"<id>.<created timestamp>\""},
    "schema": {"type": "string", "description": "the labelling config (XML)"},
    "hostname": {"type": "string"}, "access_token": {"type": "string"},
    "extra_params": {"type": "object"}}})
_REGION = {"type": "object", "properties": {
    "id": {"type": "string"}, "type": {"type": "string"}, "from_name": {"type": "string"},
    "to_name": {"type": "string"},
    "value": {"type": "object", "properties": {
        "x": {"type": "number"}, "y": {"type": "number"}, "width": {"type": "number"},
        "height": {"type": "number"}, "rotation": {"type": "number"},
        "rectanglelabels": {"type": "array", "items": {"type": "string"}}}}}}
_PREDICT_BODY = _json_body({"type": "object", "required": ["tasks"], "properties": {
    "tasks": {"type": "array", "items": {"type": "object", "properties": {
        "id": {"type": "integer"},
        "data": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "array", "items": {"type": "object", "properties": {
            "result": {"type": "array", "items": _REGION}}}}}}},
    "project": {"type": "string"}, "label_config": {"type": "string"},
    "params": {"type": "object", "properties": {"context": {"type": "object", "properties": {
        "result": {"type": "array", "items": _REGION}}}}}}})
_WEBHOOK_BODY = _json_body({"type": "object", "properties": {"action": {"type": "string"}}})


def backend_options(settings: LabelStudioSettings) -> BackendOptions:
    """The backend's options from the server's Label Studio settings."""
    return BackendOptions(
        label_map=settings.label_map,
        access=LabelStudioAccess(settings.url, settings.api_key,
                                 parse_origins(settings.allowed_origins)),
        trust_setup_hostname=settings.trust_setup_hostname,
        local_files_root=settings.local_files_root,
        score_threshold=settings.score_threshold, max_detections=settings.max_detections,
        polygon_tolerance=settings.polygon_tolerance, fetch_timeout_s=settings.fetch_timeout_s,
        read_timeout_s=settings.read_timeout_s, max_image_bytes=settings.max_image_bytes)


class LabelStudioBackends:
    """The Label Studio backend of the model Label Studio is answered with.

    Made in the lifespan, once the models are loaded. A backend holds its predictor (and the
    projects' Label Studio URLs and the images it has encoded); when the registry reloads that
    model after a failure, the next request gets a backend over the new predictor.
    """

    def __init__(self, registry: ModelRegistry, settings: LabelStudioSettings | None,
                 problem: str | None = None) -> None:
        self.registry = registry
        self.settings = settings
        self.problem = problem  # why there is no backend at all (bad settings), if so
        self._lock = threading.Lock()
        self._backends: dict[str, LabelStudioBackend] = {}
        # Image fetches run in worker threads under their own limiter, never the default one
        # that inference and the sync routes (/readyz) share: slow URLs wait among themselves.
        self.fetch_limiter = anyio.CapacityLimiter(settings.fetch_concurrency if settings else 1)

    @classmethod
    def start(cls, registry: ModelRegistry,
              settings: LabelStudioSettings | None = None) -> LabelStudioBackends:
        """Read the settings (the environment's when None) and make the backend of the model
        Label Studio uses, if it is loaded; a problem is logged and answered per request."""
        try:
            settings = settings if settings is not None else LabelStudioSettings()
        except ValidationError as exc:
            problem = f"BOXMASK_LABELSTUDIO_* settings are invalid: {exc}"
            log.error("Label Studio backend disabled", extra={"reason": problem})
            return cls(registry, None, problem)
        backends = cls(registry, settings)
        try:
            backends.for_slot(registry.slot(settings.model))
        except ApiError as exc:  # model not loaded (yet) or a bad label map: said per request
            log.warning("Label Studio backend not ready", extra={"reason": exc.message})
        return backends

    def for_slot(self, slot: ModelSlot) -> LabelStudioBackend:
        if self.settings is None:
            raise ApiError(500, "bad_settings", self.problem or "no Label Studio settings")
        with self._lock:
            backend = self._backends.get(slot.name)
            if backend is None or backend.predictor is not slot.predictor:
                try:
                    backend = LabelStudioBackend(slot.predictor, backend_options(self.settings))
                except RuntimeInputError as exc:
                    raise ApiError(500, "bad_label_map",
                                   f"BOXMASK_LABELSTUDIO_LABEL_MAP: {exc}") from exc
                self._backends[slot.name] = backend
            return backend

    def slot(self) -> ModelSlot:
        return self.registry.slot(self.settings.model if self.settings else None)


def get_backends(request: Request) -> LabelStudioBackends:
    return request.app.state.labelstudio


def get_backend(backends: LabelStudioBackends = Depends(get_backends)) -> LabelStudioBackend:
    return backends.for_slot(backends.slot())


@router.get("/", summary="Label Studio health check")
@router.get("/health", summary="Label Studio health check")
def health(registry: ModelRegistry = Depends(get_registry)) -> dict[str, Any]:
    ready, message, _ = registry.readiness()
    return {"status": "UP" if ready else "DOWN", "model_class": "boxmask", "detail": message}


@router.post("/setup", dependencies=[Depends(require_token_or_basic)],
             summary="Label Studio project set-up", openapi_extra=_SETUP_BODY)
async def setup(request: Request, backend: LabelStudioBackend = Depends(get_backend)) -> dict[str, str]:
    return backend.setup(await _json(request))


@router.post("/predict", dependencies=[Depends(require_token_or_basic)],
             summary="Label Studio predictions", openapi_extra=_PREDICT_BODY)
async def predict(
    request: Request,
    backends: LabelStudioBackends = Depends(get_backends),
    limiter: InferenceLimiter = Depends(get_limiter),
    registry: ModelRegistry = Depends(get_registry),
) -> dict[str, Any]:
    """Per task: download its image in a plain worker thread, then take an inference slot only
    for the encoder and mask model, so slow image downloads never starve `/v1/segment`."""
    body = await _json(request)
    slot = backends.slot()
    backend = backends.for_slot(slot)
    try:
        parsed = backend.parse(body)
        results = []
        for task in parsed.tasks:
            try:
                image = await anyio.to_thread.run_sync(backend.fetch, parsed, task,
                                                       limiter=backends.fetch_limiter)
                try:
                    answer = await run_inference(limiter, registry, slot,
                                                 backend.answer, parsed, task, image)
                except ImageEvicted:  # the cached encoding went meanwhile: fetch, then answer
                    image = await anyio.to_thread.run_sync(backend.fetch, parsed, task, True,
                                                           limiter=backends.fetch_limiter)
                    answer = await run_inference(limiter, registry, slot,
                                                 backend.answer, parsed, task, image)
                results.append(answer)
            except (*ANSWERABLE, ApiError) as exc:
                if parsed.drawn or not _task_level(exc):
                    raise
                results.append(backend.task_error(task, exc))
        return {"results": results}
    except UnmappedLabel as exc:
        raise ApiError(422, "unknown_label", str(exc), {"label": exc.label, "known_names": exc.known_names}) from exc
    except (LabelConfigError, TaskError) as exc:
        raise ApiError(422, "cannot_annotate", str(exc)) from exc
    except ImageFetchError as exc:
        log.warning("image fetch failed", extra={"detail": exc.detail})
        raise ApiError(422, "image_fetch_failed", str(exc)) from exc
    except RuntimeInputError as exc:
        raise from_runtime_error(exc) from exc


def _task_level(exc: Exception) -> bool:
    """Whether a batch task's failure is its own (answered as an error, the others go on),
    not the server's (overloaded, model down: the whole request fails, Label Studio retries)."""
    return not isinstance(exc, ApiError) or exc.status < 500


@router.post("/webhook", status_code=201, dependencies=[Depends(require_token_or_basic)],
             summary="Label Studio annotation events", openapi_extra=_WEBHOOK_BODY)
async def webhook(request: Request) -> JSONResponse:
    body = await _json(request)
    return JSONResponse({"status": "ok", "action": body.get("action"),
                         "result": "boxmask does not train from Label Studio events"}, status_code=201)


#: Label Studio's bodies nest a few levels (tasks -> annotations -> result -> value -> labels);
#: anything far deeper is not Label Studio and must not reach a recursive walk.
MAX_JSON_DEPTH = 32


async def _json(request: Request) -> dict[str, Any]:
    """The body as a JSON object: JSON only (415 otherwise, so a web page cannot send it as a
    "simple" cross-origin request), at most `MAX_JSON_DEPTH` levels deep (400 otherwise)."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise ApiError(415, "unsupported_media_type",
                       f"send the body as application/json, not {media_type or 'no content type'}",
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


def json_depth(value: Any) -> int:
    """Nesting depth of parsed JSON (a scalar is 0), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
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
