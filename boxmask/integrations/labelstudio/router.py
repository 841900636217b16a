"""Label Studio's ML backend protocol as a FastAPI router, mounted by the server at /labelstudio.

Label Studio (read from its 1.23 `ml/api_connector.py` and the label-studio-ml-backend's
`api.py`) calls, relative to the backend URL a user enters (`http://HOST:PORT/labelstudio`):

- `GET /health` (1 s timeout) and `GET /`: `{"status": "UP", ...}`;
- `POST /setup` (3 s) `{project: "<id>.<ts>", schema, hostname, access_token, extra_params}`
  -> `{"model_version"}`; sent again on every `GET /api/ml/{id}`;
- `POST /predict` (100 s) `{tasks, project, label_config, params: {context}}`
  -> `{"results": [...]}` with one entry per task;
- `POST /webhook` for annotation events -> 201 (boxmask does not train from Label Studio).

Auth: when the server has `BOXMASK_API_TOKEN`, these routes accept it as a bearer token or as
the password of HTTP Basic auth, which is what Label Studio's "Use authentication" sends.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.concurrency import run_in_threadpool

from boxmask.integrations.labels import UnmappedLabel
from boxmask.integrations.labelstudio.backend import (
    ANSWERABLE,
    BackendOptions,
    LabelStudioBackend,
    TaskError,
)
from boxmask.integrations.labelstudio.config import LabelConfigError
from boxmask.integrations.labelstudio.images import ImageFetchError, LabelStudioAccess
from boxmask.runtime.errors import RuntimeInputError
from boxmask.server.dependencies import get_limiter, get_registry, get_settings
from boxmask.server.errors import ApiError, from_runtime_error
from boxmask.server.runner import run_inference
from boxmask.server.limits import InferenceLimiter
from boxmask.server.registry import ModelRegistry
from boxmask.server.settings import ServerSettings


class LabelStudioSettings(BaseSettings):
    """Settings of the Label Studio backend (`BOXMASK_LABELSTUDIO_<FIELD>`)."""

    model_config = SettingsConfigDict(env_prefix="BOXMASK_LABELSTUDIO_", extra="ignore",
                                      protected_namespaces=(), populate_by_name=True)

    # Which served model answers Label Studio; None = the server's default model.
    model: str | None = None
    # Label Studio label name -> model category name or id, as JSON: '{"Car": "car"}'.
    label_map: dict[str, str | int] = Field(default_factory=dict)
    # Where Label Studio is and a token to read task images; override what /setup sends.
    url: str | None = Field(default=None, validation_alias=AliasChoices(
        "BOXMASK_LABELSTUDIO_URL", "LABEL_STUDIO_URL"))
    api_key: str | None = Field(default=None, validation_alias=AliasChoices(
        "BOXMASK_LABELSTUDIO_API_KEY", "LABEL_STUDIO_API_KEY"))
    score_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    max_detections: int = Field(default=100, ge=1)
    polygon_tolerance: float = Field(default=1.0, ge=0.0)
    fetch_timeout_s: float = Field(default=10.0, gt=0.0)
    max_image_bytes: int = Field(default=32 << 20, ge=1024)

    @field_validator("label_map", mode="before")
    @classmethod
    def _json_map(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(f"label_map must be a JSON object like '{{\"Car\": \"car\"}}': {exc}") from exc
        return value

    def options(self) -> BackendOptions:
        return BackendOptions(
            label_map=self.label_map, access=LabelStudioAccess(self.url, self.api_key),
            score_threshold=self.score_threshold, max_detections=self.max_detections,
            polygon_tolerance=self.polygon_tolerance, fetch_timeout_s=self.fetch_timeout_s,
            max_image_bytes=self.max_image_bytes)


router = APIRouter(prefix="/labelstudio", tags=["label studio"])
_backends_lock = threading.Lock()


def check_token(request: Request, settings: ServerSettings = Depends(get_settings)) -> None:
    """Bearer or Basic-auth password equal to the server's token, when it has one."""
    if settings.api_token is None:
        return
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    given = ""
    if scheme.lower() == "bearer":
        given = value
    elif scheme.lower() == "basic":
        try:
            given = base64.b64decode(value).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            given = ""
    if not secrets.compare_digest(given.encode(), settings.api_token.get_secret_value().encode()):
        raise ApiError(401, "unauthorized", "Label Studio must send the server's token: in the "
                       "model's settings enable authentication and use it as the password",
                       headers={"WWW-Authenticate": 'Basic realm="boxmask"'})


def get_labelstudio_settings(request: Request) -> LabelStudioSettings:
    """The app's Label Studio settings: `app.state.labelstudio_settings`, else the environment."""
    state = request.app.state
    with _backends_lock:
        if getattr(state, "labelstudio_settings", None) is None:
            state.labelstudio_settings = LabelStudioSettings()
        return state.labelstudio_settings


def get_backend(
    request: Request,
    registry: ModelRegistry = Depends(get_registry),
    ls_settings: LabelStudioSettings = Depends(get_labelstudio_settings),
) -> LabelStudioBackend:
    """One backend per served model, made on first use and kept with the app (it remembers the
    projects' Label Studio URLs and the images it has encoded)."""
    slot = registry.slot(ls_settings.model)
    state = request.app.state
    with _backends_lock:
        backends: dict[str, LabelStudioBackend] = getattr(state, "labelstudio_backends", None) or {}
        state.labelstudio_backends = backends
        backend = backends.get(slot.name)
        if backend is None or backend.predictor is not slot.predictor:
            try:
                backend = LabelStudioBackend(slot.predictor, ls_settings.options())
            except RuntimeInputError as exc:
                raise ApiError(500, "bad_label_map", f"BOXMASK_LABELSTUDIO_LABEL_MAP: {exc}") from exc
            backends[slot.name] = backend
        return backend


@router.get("/", summary="Label Studio health check")
@router.get("/health", summary="Label Studio health check")
def health(request: Request) -> dict[str, Any]:
    registry: ModelRegistry = request.app.state.registry
    ready, message, _ = registry.readiness()
    return {"status": "UP" if ready else "DOWN", "model_class": "boxmask", "detail": message}


@router.post("/setup", dependencies=[Depends(check_token)], summary="Label Studio project set-up")
async def setup(request: Request, backend: LabelStudioBackend = Depends(get_backend)) -> dict[str, str]:
    return backend.setup(await _json(request))


@router.post("/predict", dependencies=[Depends(check_token)], summary="Label Studio predictions")
async def predict(
    request: Request,
    backend: LabelStudioBackend = Depends(get_backend),
    limiter: InferenceLimiter = Depends(get_limiter),
    registry: ModelRegistry = Depends(get_registry),
    ls_settings: LabelStudioSettings = Depends(get_labelstudio_settings),
) -> dict[str, Any]:
    """Per task: download its image in a plain worker thread, then take an inference slot only
    for the encoder and mask model, so slow image downloads never starve `/v1/segment`."""
    body = await _json(request)
    slot = registry.slot(ls_settings.model)
    try:
        parsed = backend.parse(body)
        results = []
        for task in parsed.tasks:
            try:
                image = await run_in_threadpool(backend.fetch, parsed, task)
                results.append(await run_inference(limiter, registry, slot,
                                                   backend.answer, parsed, task, image))
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
        raise ApiError(422, "image_fetch_failed", str(exc)) from exc
    except RuntimeInputError as exc:
        raise from_runtime_error(exc) from exc


def _task_level(exc: Exception) -> bool:
    """Whether a batch task's failure is its own (answered as an error, the others go on),
    not the server's (overloaded, model down: the whole request fails, Label Studio retries)."""
    return not isinstance(exc, ApiError) or exc.status < 500


@router.post("/webhook", status_code=201, dependencies=[Depends(check_token)],
             summary="Label Studio annotation events")
async def webhook(request: Request) -> JSONResponse:
    body = await _json(request)
    return JSONResponse({"status": "ok", "action": body.get("action"),
                         "result": "boxmask does not train from Label Studio events"}, status_code=201)


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_request", f"body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "body must be a JSON object")
    return body
