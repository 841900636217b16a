"""The Label Studio backends the app serves: one `LabelStudioBackend` per model that answers Label
Studio, made in the app's lifespan (`LabelStudioBackends.start`) and reached by the routes of
`routers/labelstudio.py` through `get_backends`.

A backend holds its predictor (and the projects' Label Studio URLs and the images it has
encoded); when the registry reloads that model after a failure, the next request gets a backend
over the new predictor. A project that the training loop has promoted a version for is answered
by that version; the others by the model `BOXMASK_LABELSTUDIO_MODEL` names.

`/predict` is answered task by task here: each task's image is downloaded in a plain worker
thread (its own pool, `fetch_limiter`), then an inference slot is taken only for the encoder
and the masks, so slow image downloads never starve `/v1/segment`. The work is bounded per call
(`BOXMASK_LABELSTUDIO_MAX_TASKS` tasks, `MAX_TASK_LOG_LINES` log lines for failed tasks) and
per caller (its mask-pixel budget: checked before each task, each task's cost charged once its
image size and boxes are known).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
from fastapi import Request
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
from boxmask.integrations.labelstudio.events import WebhookError, project_id
from boxmask.integrations.labelstudio.images import (
    ImageFetchError,
    LabelStudioAccess,
    parse_origins,
)
from boxmask.integrations.labelstudio.protocol import Id, PredictBody
from boxmask.runtime.errors import RuntimeInputError
from boxmask.server.budget import CallerBudget
from boxmask.server.errors import ApiError, from_runtime_error
from boxmask.server.limits import InferenceLimiter
from boxmask.server.registry import ModelRegistry, ModelSlot
from boxmask.server.runner import run_inference
from boxmask.server.settings import LabelStudioSettings

log = logging.getLogger("boxmask.server.labelstudio")


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
    """The Label Studio backend of each model Label Studio is answered with."""

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
        predictor = slot.predictor
        if predictor is None:  # unloaded since the registry handed the slot out
            raise ApiError(503, "backend_unavailable",
                           f"model {slot.name!r} is not available: {slot.error}",
                           headers={"Retry-After": str(max(
                               1, int(self.registry.settings.reload_interval_s)))})
        with self._lock:
            backend = self._backends.get(slot.name)
            if backend is None or backend.predictor is not predictor:
                label_map = None
                if slot.version_of is not None:
                    # A version knows the categories its project's annotations had: map entries
                    # that name others are left out, not a reason to refuse the version.
                    label_map = {k: v for k, v in self.settings.label_map.items()
                                 if _names_a_category(slot.card, v)}
                try:
                    backend = LabelStudioBackend(predictor,
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

    async def predict(self, body: PredictBody, caller: str, budget: CallerBudget,
                      limiter: InferenceLimiter) -> dict[str, Any]:
        """`/predict`'s answer, `{"results": [...]}`, task by task (the module's docstring)."""
        # The model is chosen once: a version swapped in meanwhile answers the next request.
        slot = self.slot(project_of(body.project))
        backend = self.for_slot(slot)
        settings = self.settings
        assert settings is not None  # for_slot answered 500 otherwise
        if len(body.tasks) > settings.max_tasks:
            raise ApiError(422, "too_many_tasks",
                           f"{len(body.tasks)} tasks in one call; the limit is "
                           f"{settings.max_tasks} (BOXMASK_LABELSTUDIO_MAX_TASKS): select fewer "
                           "tasks for \"Retrieve Predictions\"",
                           {"tasks": len(body.tasks), "max_tasks": settings.max_tasks})
        budget.check(caller)
        charge = partial(budget.charge, caller)
        log_lines = _LogLines(settings.max_task_log_lines)
        try:
            parsed = backend.parse(body)
            results: list[dict[str, Any]] = []
            for item in parsed.tasks:
                try:
                    if results:  # the first task passed the check above
                        budget.check(caller)
                    task = backend.task(item)
                    image = await anyio.to_thread.run_sync(backend.fetch, parsed, task,
                                                           limiter=self.fetch_limiter)
                    try:
                        answer = await run_inference(limiter, self.registry, slot,
                                                     backend.answer, parsed, task, image, charge)
                    except ImageEvicted:  # the cached encoding went meanwhile: fetch, answer
                        image = await anyio.to_thread.run_sync(backend.fetch, parsed, task, True,
                                                               limiter=self.fetch_limiter)
                        answer = await run_inference(limiter, self.registry, slot,
                                                     backend.answer, parsed, task, image, charge)
                    results.append(answer)
                except (*ANSWERABLE, ApiError) as exc:
                    if parsed.drawn or not _task_level(exc):
                        raise
                    results.append(backend.task_error(item, exc, log_it=log_lines.may_log()))
            log_lines.summarize()
            return {"results": results}
        except UnmappedLabel as exc:
            raise ApiError(422, "unknown_label", str(exc),
                           {"label": exc.label, "known_names": exc.known_names}) from exc
        except (LabelConfigError, TaskError) as exc:
            raise ApiError(422, "cannot_annotate", str(exc)) from exc
        except ImageFetchError as exc:
            log.warning("image fetch failed", extra={"detail": exc.detail})
            raise ApiError(422, "image_fetch_failed", str(exc)) from exc
        except RuntimeInputError as exc:
            raise from_runtime_error(exc) from exc


def get_backends(request: Request) -> LabelStudioBackends:
    """A dependency: the app's backends, made in its lifespan."""
    return request.app.state.labelstudio


def project_of(value: Id | None) -> str | None:
    """The project a body names (`"<id>.<timestamp>"`), or None when it names none."""
    if value is None or value == "":
        return None
    try:
        return project_id(value)
    except WebhookError:
        return None


def _names_a_category(card: dict[str, Any], target: str | int) -> bool:
    return any(c.get("name") == target or c.get("id") == target
               for c in card.get("categories", []) if isinstance(c, dict))


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
