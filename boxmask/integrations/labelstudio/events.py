"""Label Studio's webhook payloads -> the events boxmask learns from.

Label Studio 1.23.2 posts every event of a project whose ML backend is connected to
`<backend url>/webhook` (`ml/models.py` `create_ml_webhook`: `send_payload`,
`send_for_all_actions`), in the shape of its `webhooks/` serializers:

- `ANNOTATION_CREATED`, `ANNOTATION_UPDATED`: `{action, annotation, task, project}`, the
  annotation with every field (`task` and `project` as ids), the task with its `data`;
- `ANNOTATIONS_CREATED` (an import): the same with lists of annotations and tasks;
- `ANNOTATIONS_DELETED`: `{action, annotations: [{id}], project}`;
- `TASKS_DELETED`: `{action, tasks: [{id}], project}` (their annotations go with them);
- "Start training" (`POST /api/ml/<id>/train`): `{action: "START_TRAINING", project}`.

Any other action is acknowledged and ignored. A known action whose payload lacks what it needs
is a `WebhookError` (the server answers 422 naming the field), never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from boxmask.integrations.labelstudio.protocol import (
    WebhookAnnotation,
    WebhookProject,
    WebhookRef,
    WebhookTask,
)

ANNOTATION_CREATED = "ANNOTATION_CREATED"
ANNOTATIONS_CREATED = "ANNOTATIONS_CREATED"
ANNOTATION_UPDATED = "ANNOTATION_UPDATED"
ANNOTATIONS_DELETED = "ANNOTATIONS_DELETED"
TASKS_DELETED = "TASKS_DELETED"
START_TRAINING = "START_TRAINING"
KNOWN_ACTIONS = frozenset({ANNOTATION_CREATED, ANNOTATIONS_CREATED, ANNOTATION_UPDATED,
                           ANNOTATIONS_DELETED, TASKS_DELETED, START_TRAINING})

# A project id names a folder on disk: Label Studio's are integers; anything else that could
# leave the folder (a slash, "..") is refused.
_PROJECT_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")


class WebhookError(ValueError):
    """A webhook body Label Studio would not send for its action; the message names the field."""


@dataclass(frozen=True)
class AnnotationRecord:
    """One annotation as the store keeps it."""

    id: str
    task_id: str
    result: list[Any]
    was_cancelled: bool = False
    updated_at: str | None = None
    task_data: dict[str, Any] | None = None


@dataclass(frozen=True)
class WebhookEvent:
    """What a webhook says: for `action`, the project, and the annotations it creates or
    updates, or the annotations and tasks it deletes. `known` is False for actions boxmask
    ignores (acknowledged all the same)."""

    action: str
    project: str | None = None
    label_config: str | None = None
    annotations: tuple[AnnotationRecord, ...] = ()
    deleted_annotations: tuple[str, ...] = ()
    deleted_tasks: tuple[str, ...] = ()
    known: bool = True

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> WebhookEvent:
        action = body.get("action")
        if not isinstance(action, str) or not action:
            raise WebhookError("action: a webhook body names its action")
        if action not in KNOWN_ACTIONS:
            return cls(action=action, known=False)
        project, label_config = _project(body, action)
        if action == START_TRAINING:
            return cls(action=action, project=project, label_config=label_config)
        if action == ANNOTATIONS_DELETED:
            ids = _refs(body, "annotations")
            return cls(action=action, project=project, label_config=label_config,
                       deleted_annotations=ids)
        if action == TASKS_DELETED:
            ids = _refs(body, "tasks")
            return cls(action=action, project=project, label_config=label_config,
                       deleted_tasks=ids)
        return cls(action=action, project=project, label_config=label_config,
                   annotations=_annotations(body, action))


def project_id(value: Any) -> str:
    """A project id as the store names it: Label Studio's `<id>` (from `"<id>.<timestamp>"`,
    what /setup and /predict send, or the id itself); `WebhookError` for anything else."""
    text = str(value).split(".", 1)[0] if isinstance(value, (int, str)) and not isinstance(
        value, bool) else ""
    if not _PROJECT_ID.fullmatch(text):
        raise WebhookError(f"project: {value!r} is not a Label Studio project id")
    return text


def _model(model: type[BaseModel], value: Any, where: str) -> Any:
    if not isinstance(value, Mapping):
        raise WebhookError(f"{where}: an object, not {type(value).__name__}")
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error.get("loc", ()))
        raise WebhookError(f"{where}{'.' + field if field else ''}: {error.get('msg', '')}"
                           + (f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1
                              else "")) from None


def _project(body: Mapping[str, Any], action: str) -> tuple[str, str | None]:
    raw = body.get("project")
    if isinstance(raw, Mapping):
        project = _model(WebhookProject, raw, "project")
        return project_id(project.id), project.label_config
    if raw is not None:
        return project_id(raw), None
    # An annotation carries its project's id even where the payload has no project.
    annotation = body.get("annotation")
    first = annotation[0] if isinstance(annotation, list) and annotation else annotation
    if isinstance(first, Mapping) and first.get("project") is not None:
        return project_id(first["project"]), None
    raise WebhookError(f"project: a {action} event names its project")


def _refs(body: Mapping[str, Any], key: str) -> tuple[str, ...]:
    raw = body.get(key)
    if not isinstance(raw, list):
        raise WebhookError(f"{key}: a list of {{id}} objects")
    return tuple(str(_model(WebhookRef, item, f"{key}.{i}").id) for i, item in enumerate(raw))


def _annotations(body: Mapping[str, Any], action: str) -> tuple[AnnotationRecord, ...]:
    raw_annotations, raw_tasks = body.get("annotation"), body.get("task")
    many = action == ANNOTATIONS_CREATED
    if many != isinstance(raw_annotations, list):
        raise WebhookError("annotation: " + ("a list of annotations" if many else
                                             "an annotation object"))
    # A list exactly when `many` (checked above).
    items = raw_annotations if isinstance(raw_annotations, list) else [raw_annotations]
    tasks_raw = raw_tasks if isinstance(raw_tasks, list) else [raw_tasks] if raw_tasks else []
    tasks = {}
    for i, item in enumerate(tasks_raw):
        task = _model(WebhookTask, item, f"task.{i}" if many else "task")
        tasks[str(task.id)] = task
    out = []
    for i, item in enumerate(items):
        where = f"annotation.{i}" if many else "annotation"
        annotation = _model(WebhookAnnotation, item, where)
        task_id = annotation.task
        if task_id is None and len(tasks) == 1:
            task_id = next(iter(tasks.values())).id
        if task_id is None:
            raise WebhookError(f"{where}.task: an annotation names its task")
        task = tasks.get(str(task_id))
        out.append(AnnotationRecord(
            id=str(annotation.id), task_id=str(task_id), result=list(annotation.result),
            was_cancelled=annotation.was_cancelled, updated_at=annotation.updated_at,
            task_data=dict(task.data) if task is not None else None))
    return tuple(out)
