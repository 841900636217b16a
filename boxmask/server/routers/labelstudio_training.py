"""Learning from the annotators at /labelstudio: the webhook, the jobs, the rollback.

Over `integrations.labelstudio.training.TrainingLoop` (which knows nothing of HTTP), this adds:

- `POST /webhook`: Label Studio's project events and "Start training" (Label Studio 1.23.2
  posts both to `<backend url>/webhook`), behind the same token as the other Label Studio
  routes. Events are stored and answered at once (Label Studio waits 1 s for a webhook);
  "Start training" answers `{"job": ...}`, which Label Studio records as the train job.
  Unknown actions are acknowledged and ignored; a known action with a malformed payload is
  a 422 naming the field. Without `BOXMASK_LABELSTUDIO_DATA_DIR` events are acknowledged only.
- `GET /jobs`: the running round (stage, progress), the queue, and per project its served
  version, its versions with their figures and its recent rounds.
- `POST /rollback`: serve a project an earlier version (`boxmask labelstudio rollback` calls it).

The loop gets from the server what it needs (`Hooks`): the registry loads a promoted version
beside the others (`ModelRegistry.add_version`) and drops the old one; the Label Studio
backends are told which version answers which project; image fetches for rounds use the
predictions' fence and the project's access; a predictor for scoring is loaded with the
server's own precision and input size.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from boxmask.integrations.labelstudio.events import WebhookError, WebhookEvent
from boxmask.integrations.labelstudio.images import fetch_image
from boxmask.integrations.labelstudio.protocol import WebhookBody
from boxmask.integrations.labelstudio.training import (
    BASE,
    Hooks,
    OwnerBusy,
    TrainingError,
    TrainingLoop,
    TrainingOptions,
)
from boxmask.runtime import Predictor
from boxmask.server.auth import require_token_or_basic
from boxmask.server.errors import ApiError
from boxmask.server.labelstudio_backends import LabelStudioBackends, get_backends, project_of
from boxmask.server.metrics import ServerMetrics
from boxmask.server.openapi import json_body_schema
from boxmask.server.payloads import json_body, json_object, validated
from boxmask.server.registry import ModelRegistry
from boxmask.server.routers.labelstudio import ERRORS
from boxmask.server.schemas import RollbackRequest
from boxmask.server.settings import LabelStudioSettings, ServerSettings

log = logging.getLogger("boxmask.server.labelstudio.training")

router = APIRouter(prefix="/labelstudio", tags=["label studio"])
# Scoring a version loads its own predictor: a small cache, the held-out images pass once.
SCORING_CACHE_BYTES = 64 << 20
rollback_body = json_body(RollbackRequest)


class LabelStudioTraining:
    """The server's training loop, or why it has none (`problem`)."""

    def __init__(self, loop: TrainingLoop | None, problem: str | None = None) -> None:
        self.loop = loop
        self.problem = problem

    @classmethod
    def start(cls, backends: LabelStudioBackends, registry: ModelRegistry,
              server: ServerSettings, metrics: ServerMetrics) -> LabelStudioTraining:
        """Start the loop when `BOXMASK_LABELSTUDIO_DATA_DIR` is set (it loads each project's
        served version: call from a worker thread)."""
        settings = backends.settings
        if settings is None or settings.data_dir is None:
            return cls(None, "BOXMASK_LABELSTUDIO_DATA_DIR is not set: Label Studio's events "
                             "are acknowledged, not kept, and nothing is trained")
        if server.precision == "fp16":
            problem = ("BOXMASK_PRECISION=fp16: training rounds export fp32 and int8 models "
                       "only; serve fp32 or int8 to train from Label Studio")
            log.error("Label Studio training disabled", extra={"reason": problem})
            return cls(None, problem)
        loop = TrainingLoop(training_options(settings, server),
                            _hooks(backends, registry, settings))
        try:
            loop.start()
        except OwnerBusy as exc:
            log.error("Label Studio training disabled", extra={"reason": str(exc)})
            return cls(None, str(exc))
        backends.version_of = loop.served_version
        metrics.watch_labelstudio_training(loop.stats)
        log.info("Label Studio training loop started",
                 extra={"data_dir": str(settings.data_dir), "projects": loop.projects()})
        return cls(loop)

    def close(self) -> None:
        if self.loop is not None:
            self.loop.close()

    def require(self) -> TrainingLoop:
        if self.loop is None:
            # The server's configuration, not a passing state: a client error to fix there.
            raise ApiError(409, "training_disabled", self.problem or "no training loop")
        return self.loop


def training_options(settings: LabelStudioSettings, server: ServerSettings) -> TrainingOptions:
    options = TrainingOptions(
        root=Path(settings.data_dir) / "labelstudio",  # type: ignore[arg-type]
        base_checkpoint=settings.base_checkpoint, train_every=settings.train_every,
        iterations=settings.train_iterations, overrides=tuple(settings.train_overrides),
        threads=settings.train_threads, memory_bytes=settings.train_memory_bytes,
        timeout_s=settings.train_timeout_s, heldout_percent=settings.heldout_percent,
        min_gain=settings.promote_min_gain,
        promote_without_heldout=settings.promote_without_heldout,
        image_cache_bytes=settings.image_cache_bytes, max_image_pixels=server.max_image_pixels,
        int8=server.precision == "int8", label_map=dict(settings.label_map))
    if settings.train_command:
        options.command = tuple(settings.train_command)
    return options


def _hooks(backends: LabelStudioBackends, registry: ModelRegistry,
           settings: LabelStudioSettings) -> Hooks:
    def base_slot():
        try:
            return registry.slot(settings.model)
        except ApiError as exc:
            raise RuntimeError(f"the base model cannot serve: {exc.message}") from None

    def base_model() -> tuple[str, Path]:
        slot = base_slot()
        return slot.name, slot.path

    def load_version(name: str, path: Path) -> None:
        registry.add_version(name, path, version_of=base_slot().name)

    def unload_version(name: str) -> None:
        registry.remove_version(name)
        backends.forget(name)

    # The server's precision and input size, on this machine, with a small cache and without
    # the request limits (the gate's own batches are far under them).
    scoring = registry.options.replace(backend="onnxruntime", triton_url=None,
                                       cache_bytes=SCORING_CACHE_BYTES, max_boxes=None,
                                       max_mask_pixels=None)

    def load_predictor(path: Path) -> Predictor:
        return Predictor.from_dir(path, scoring)

    def fetch(project: str, url: str, task_id: str) -> bytes:
        access = backends.for_slot(base_slot()).access_for(project)
        return fetch_image(url, access, task_id=int(task_id) if task_id.isdigit() else None,
                           timeout_s=settings.fetch_timeout_s,
                           read_timeout_s=settings.read_timeout_s,
                           max_bytes=settings.max_image_bytes,
                           local_files_root=settings.local_files_root)

    def image_origin(project: str) -> str:
        return backends.for_slot(base_slot()).access_for(project).url or ""

    return Hooks(base_model=base_model, load_version=load_version,
                 unload_version=unload_version, load_predictor=load_predictor,
                 fetch_image=fetch, image_origin=image_origin)


def get_training(request: Request) -> LabelStudioTraining:
    return request.app.state.labelstudio_training


@router.post("/webhook", status_code=201, dependencies=[Depends(require_token_or_basic)],
             responses=ERRORS, summary="Label Studio project events and \"Start training\"",
             openapi_extra=json_body_schema(WebhookBody))
async def webhook(raw: dict[str, Any] = Depends(json_object),
                  training: LabelStudioTraining = Depends(get_training)) -> JSONResponse:
    body = validated(WebhookBody, raw)
    if training.loop is None:
        return JSONResponse({"status": "ok", "action": body.action,
                             "result": f"not kept: {training.problem}"}, status_code=201)
    try:
        event = WebhookEvent.parse(raw)
    except WebhookError as exc:
        raise ApiError(422, "bad_webhook", str(exc)) from None
    if not event.known:
        return JSONResponse({"status": "ignored", "action": event.action}, status_code=201)
    # SQLite writes (fsynced) off the event loop; they take milliseconds, not Label Studio's 1 s.
    answer = await anyio.to_thread.run_sync(training.loop.handle, event)
    return JSONResponse(answer, status_code=201)


@router.get("/jobs", dependencies=[Depends(require_token_or_basic)], responses=ERRORS,
            summary="Label Studio training rounds and model versions")
async def jobs(project: str | None = None,
               training: LabelStudioTraining = Depends(get_training)) -> dict[str, Any]:
    """The running round (stage, progress), the queued ones, and per project: the version it
    is served, its versions with their held-out figures, and its recent rounds."""
    if training.loop is None:
        return {"enabled": False, "problem": training.problem, "running": None, "queued": [],
                "projects": {}}
    status = await anyio.to_thread.run_sync(training.loop.status, project_of(project))
    return {"enabled": True, "problem": None, **status}


@router.post("/rollback", dependencies=[Depends(require_token_or_basic)],
             responses={**ERRORS, 409: ERRORS[422]},
             summary="Serve a Label Studio project an earlier model version",
             openapi_extra=json_body_schema(RollbackRequest))
async def rollback(body: RollbackRequest = Depends(rollback_body),
                   training: LabelStudioTraining = Depends(get_training),
                   backends: LabelStudioBackends = Depends(get_backends)) -> dict[str, Any]:
    loop = training.require()
    project = project_of(body.project)
    if project is None:
        raise ApiError(422, "bad_request", f"project: {body.project!r} is not a project id")
    try:
        # Loading the target version's sessions takes a while: a worker thread.
        served = await anyio.to_thread.run_sync(loop.rollback, project, body.to)
    except TrainingError as exc:
        raise ApiError(409, "cannot_roll_back", str(exc)) from None
    return {"project": project, "served": served or BASE,
            "model_version": backends.for_project(project).model_version}
