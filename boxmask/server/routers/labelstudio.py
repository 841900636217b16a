"""Label Studio's ML backend protocol at /labelstudio, over `integrations.labelstudio`'s backend.

Label Studio (read from its 1.23 `ml/api_connector.py` and the label-studio-ml-backend's
`api.py`) calls, relative to the backend URL a user enters (`http://HOST:PORT/labelstudio`):

- `GET /health` (1 s timeout) and `GET /`: `{"status": "UP", ...}`; with the Basic
  credentials of the model's "Use authentication" when both its user and password are set;
- `POST /setup` (3 s) `{project: "<id>.<ts>", schema, hostname, access_token, extra_params}`
  -> `{"model_version"}`; sent again on every `GET /api/ml/{id}`;
- `POST /predict` (100 s) `{tasks, project, label_config, params: {context}}`
  -> `{"results": [...]}` with one entry per task;
- `POST /webhook` for project events and "Start training" -> 201: the training loop's
  (`routers/labelstudio_training.py`, with `GET /jobs` and `POST /rollback`).

The bodies are checked against `integrations.labelstudio.protocol`'s schemas (422 naming the
field otherwise), which are also the OpenAPI schema's. The translation (tasks and regions to
boxes, masks to brush/polygon results) is the backend's, which knows nothing of this server;
this module adds the transport: the server's one token check (`auth.require_token_or_basic`:
Label Studio's "Use authentication" sends the token as a Basic password), the work budgets
(tasks per call, the caller's mask pixels, log lines per call), the inference slots, and the
mapping of errors to the server's JSON errors. The health check is public and says only "UP"
or "DOWN": it is what a probe, and Label Studio before its credentials are set, may ask.
The backends are made in the app's lifespan (`LabelStudioBackends.start`). A project that
the training loop has promoted a version for is answered by that version (`/setup` and
`/predict` name their project); the others by the model `BOXMASK_LABELSTUDIO_MODEL` names.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import anyio
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ValidationError

from boxmask.integrations.labels import UnmappedLabel
from boxmask.integrations.labelstudio.backend import (
    ANSWERABLE,
    BackendOptions,
    ImageEvicted,
    LabelStudioBackend,
    TaskError,
)
from boxmask.integrations.labelstudio.config import LabelConfigError
from boxmask.integrations.labelstudio.events import WebhookError, project_id
from boxmask.integrations.labelstudio.images import (
    ImageFetchError,
    LabelStudioAccess,
    parse_origins,
)
from boxmask.integrations.labelstudio.protocol import (
    SCHEMAS,
    Id,
    PredictBody,
    SetupBody,
)
from boxmask.runtime.errors import RuntimeInputError
from boxmask.server.auth import require_token_or_basic
from boxmask.server.budget import CallerBudget, caller_of
from boxmask.server.dependencies import get_caller_budget, get_limiter, get_registry
from boxmask.server.errors import ApiError, ErrorResponse, from_runtime_error, from_validation_error
from boxmask.server.limits import InferenceLimiter
from boxmask.server.payloads import MAX_JSON_DEPTH, json_depth
from boxmask.server.registry import ModelRegistry, ModelSlot
from boxmask.server.runner import run_inference
from boxmask.server.settings import LabelStudioSettings

log = logging.getLogger("boxmask.server.labelstudio")

router = APIRouter(prefix="/labelstudio", tags=["label studio"])

#: The body schemas, for the app's OpenAPI components.
BODY_SCHEMAS = SCHEMAS
ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 415, 422, 429, 503)}
M = TypeVar("M", bound=BaseModel)


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads its JSON itself (`_json`, then `model`)."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def backend_options(settings: LabelStudioSettings,
                    label_map: dict[str, str | int] | None = None) -> BackendOptions:
    """The backend's options from the server's Label Studio settings."""
    return BackendOptions(
        label_map=settings.label_map if label_map is None else label_map,
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
        # What each project's /setup sent, shared by every model version's backend.
        self._access: dict[str, LabelStudioAccess] = {}
        # project -> the name of the version it is served (None: the base model); set by the
        # training loop when there is one.
        self.version_of: Callable[[str], str | None] | None = None
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
                label_map = None
                if slot.version_of is not None:
                    # A version knows the categories its project's annotations had: map entries
                    # that name others are left out, not a reason to refuse the version.
                    label_map = {k: v for k, v in self.settings.label_map.items()
                                 if _names_a_category(slot.card, v)}
                try:
                    backend = LabelStudioBackend(slot.predictor,
                                                 backend_options(self.settings, label_map),
                                                 project_access=self._access)
                except RuntimeInputError as exc:
                    raise ApiError(500, "bad_label_map",
                                   f"BOXMASK_LABELSTUDIO_LABEL_MAP: {exc}") from exc
                self._backends[slot.name] = backend
            return backend

    def forget(self, name: str) -> None:
        """Drop the backend of a model version no longer served (its predictor goes with the
        last request that holds it)."""
        with self._lock:
            self._backends.pop(name, None)

    def slot(self, project: str | None = None) -> ModelSlot:
        """The model that answers `project`: its promoted version, else the base model."""
        if project is not None and self.version_of is not None:
            name = self.version_of(project)
            if name is not None and name in self.registry.slots:
                return self.registry.slot(name)
        return self.registry.slot(self.settings.model if self.settings else None)

    def for_project(self, project: str | None) -> LabelStudioBackend:
        return self.for_slot(self.slot(project))


def _names_a_category(card: dict[str, Any], target: str | int) -> bool:
    return any(c.get("name") == target or c.get("id") == target
               for c in card.get("categories", []) if isinstance(c, dict))


def project_of(value: Id | None) -> str | None:
    """The project a body names (`"<id>.<timestamp>"`), or None when it names none."""
    if value is None or value == "":
        return None
    try:
        return project_id(value)
    except WebhookError:
        return None


def get_backends(request: Request) -> LabelStudioBackends:
    return request.app.state.labelstudio


def get_backend(backends: LabelStudioBackends = Depends(get_backends)) -> LabelStudioBackend:
    return backends.for_slot(backends.slot())


@router.get("/", summary="Label Studio health check")
@router.get("/health", summary="Label Studio health check")
def health(registry: ModelRegistry = Depends(get_registry)) -> dict[str, str]:
    """Public, so it says nothing but "UP" or "DOWN": why a model is down (which may name
    files) is for `/readyz` with the token, and the server log."""
    ready, _, _ = registry.readiness()
    return {"status": "UP" if ready else "DOWN", "model_class": "boxmask"}


@router.post("/setup", dependencies=[Depends(require_token_or_basic)], responses=ERRORS,
             summary="Label Studio project set-up", openapi_extra=_json_body(SetupBody))
async def setup(request: Request,
                backends: LabelStudioBackends = Depends(get_backends)) -> dict[str, str]:
    body = _validated(SetupBody, await _json(request))
    return backends.for_project(project_of(body.project)).setup(body)


@router.post("/predict", dependencies=[Depends(require_token_or_basic)], responses=ERRORS,
             summary="Label Studio predictions", openapi_extra=_json_body(PredictBody))
async def predict(
    request: Request,
    backends: LabelStudioBackends = Depends(get_backends),
    limiter: InferenceLimiter = Depends(get_limiter),
    registry: ModelRegistry = Depends(get_registry),
    budget: CallerBudget = Depends(get_caller_budget),
) -> dict[str, Any]:
    """Per task: download its image in a plain worker thread, then take an inference slot only
    for the encoder and mask model, so slow image downloads never starve `/v1/segment`.

    Bounded per call (`BOXMASK_LABELSTUDIO_MAX_TASKS` tasks, `MAX_TASK_LOG_LINES` log lines for
    failed tasks) and per caller (its mask-pixel budget: checked before each task, each task's
    cost charged once its image size and boxes are known)."""
    body = _validated(PredictBody, await _json(request))
    # The model is chosen once: a version swapped in meanwhile answers the next request.
    slot = backends.slot(project_of(body.project))
    backend = backends.for_slot(slot)
    settings = backends.settings
    assert settings is not None  # for_slot answered 500 otherwise
    if len(body.tasks) > settings.max_tasks:
        raise ApiError(422, "too_many_tasks",
                       f"{len(body.tasks)} tasks in one call; the limit is {settings.max_tasks} "
                       "(BOXMASK_LABELSTUDIO_MAX_TASKS): select fewer tasks for \"Retrieve "
                       "Predictions\"", {"tasks": len(body.tasks), "max_tasks": settings.max_tasks})
    caller = caller_of(request)
    budget.check(caller)
    charge = partial(budget.charge, caller)
    log_lines = _LogLines(settings.max_task_log_lines)
    try:
        parsed = backend.parse(body)
        results = []
        for item in parsed.tasks:
            try:
                if results:  # the first task passed the check above
                    budget.check(caller)
                task = backend.task(item)
                image = await anyio.to_thread.run_sync(backend.fetch, parsed, task,
                                                       limiter=backends.fetch_limiter)
                try:
                    answer = await run_inference(limiter, registry, slot, backend.answer,
                                                 parsed, task, image, charge)
                except ImageEvicted:  # the cached encoding went meanwhile: fetch, then answer
                    image = await anyio.to_thread.run_sync(backend.fetch, parsed, task, True,
                                                           limiter=backends.fetch_limiter)
                    answer = await run_inference(limiter, registry, slot, backend.answer,
                                                 parsed, task, image, charge)
                results.append(answer)
            except (*ANSWERABLE, ApiError) as exc:
                if parsed.drawn or not _task_level(exc):
                    raise
                results.append(backend.task_error(item, exc, log_it=log_lines.may_log()))
        log_lines.summarize()
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


class _LogLines:
    """The log lines one call may write for its failed tasks; the rest get one summary line."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.failed = 0

    def may_log(self) -> bool:
        self.failed += 1
        return self.failed <= self.limit

    def summarize(self) -> None:
        if self.failed > self.limit:
            log.warning("more tasks not annotated (not logged one by one)",
                        extra={"tasks": self.failed - self.limit, "failed": self.failed,
                               "max_task_log_lines": self.limit})


def _task_level(exc: Exception) -> bool:
    """Whether a batch task's failure is its own (answered as an error, the others go on),
    not the server's (overloaded, model down: the whole request fails, Label Studio retries)."""
    return not isinstance(exc, ApiError) or exc.status < 500


def _validated(model: type[M], body: dict[str, Any]) -> M:
    """`body` checked against its schema: 422 naming each bad field."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise from_validation_error(exc) from None


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
    # Label Studio's bodies nest a few levels (tasks -> annotations -> result -> value ->
    # labels): anything far deeper is not Label Studio.
    if json_depth(body) > MAX_JSON_DEPTH:
        raise ApiError(400, "bad_request", f"body nests deeper than {MAX_JSON_DEPTH} levels")
    return body
