"""Label Studio's ML backend bodies as pydantic schemas: what `/setup`, `/predict` and
`/webhook` carry (Label Studio 1.23's `ml/api_connector.py`), and what boxmask reads of them.

Every body is validated here before the backend reads a field, so a field of the wrong type is
a 422 naming it, never a `float("abc")` deep in the backend. The schemas are open (unknown
fields are kept): Label Studio sends more than boxmask reads, and adds fields between releases.

Two levels of strictness, on purpose:
- the envelope of a request (`SetupBody`, `PredictBody`, `WebhookBody`) is checked as a whole:
  a bad field fails the request with 422;
- a batch's tasks, their annotations and regions are checked one by one (`Task.parse`,
  `Annotation.parse`, `RectangleValue.parse`), so one malformed task gets its own error in the
  batch answer and the other tasks are still answered. Their schemas are still the documented
  item types of the OpenAPI schema.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema

# Coordinates and angles: JSON numbers, finite (Python's json reads NaN and Infinity). Strict: a
# string or true is not a number here (lax pydantic would read "1.5" and true).
Number = Annotated[float, Field(allow_inf_nan=False, strict=True)]
# Label Studio ids: integers in its database; a string is tolerated (imports, other tools).
Id = int | str

_REF = "#/components/schemas/{}"
RECTANGLE = "rectanglelabels"


def _items(model: str, min_items: int = 0) -> Any:
    """A list checked item by item later (`Model.parse`), documented as a list of `model`."""
    schema = {"type": "array", "items": {"$ref": _REF.format(model)}}
    return WithJsonSchema({**schema, "minItems": min_items} if min_items else schema)


class _Open(BaseModel):
    # Label Studio sends more than boxmask reads; extra fields are kept, never refused.
    model_config = ConfigDict(extra="allow", populate_by_name=True)


def describe(exc: ValidationError) -> str:
    """A pydantic error as one short line: `field: problem; field: problem`."""
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', '')}" if where else str(error.get("msg", "")))
    more = f" (and {exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
    return "; ".join(parts) + more


class RectangleValue(_Open):
    """The `value` of a `rectanglelabels` region: percent of the image, rotated about its
    top-left corner by `rotation` degrees."""

    x: Number
    y: Number
    width: Number
    height: Number
    rotation: Number | None = 0.0
    rectanglelabels: list[str] | None = None
    # Older configs write a rectangle's label under `labels`.
    labels: list[str] | None = None

    @property
    def label(self) -> str | None:
        names = self.rectanglelabels or self.labels
        return names[0] if names else None


class Region(_Open):
    """One result item of an annotation, a prediction or the drawn context. Only
    `rectanglelabels` regions are read (their `value` is then a `RectangleValue`); others are
    passed over."""

    id: Id | None = None
    type: str | None = Field(default=None, examples=["rectanglelabels"])
    from_name: str | None = None
    to_name: str | None = None
    # Its shape depends on `type`; checked as a `RectangleValue` for rectangles (`rectangle`).
    value: Annotated[dict[str, Any],
                     WithJsonSchema({"allOf": [{"$ref": _REF.format("RectangleValue")}]})] \
        = Field(default_factory=dict)

    @classmethod
    def parse(cls, item: Any) -> Region | None:
        """A rectangle region, or None for any other item (another kind of region, junk).
        `ValueError` for an item that says it is a rectangle and is malformed: that box would
        be lost without a word."""
        if not isinstance(item, dict) or item.get("type") != RECTANGLE:
            return None
        try:
            return cls.model_validate(item)
        except ValidationError as exc:
            raise ValueError(f"region {item.get('id')!r} is malformed: {describe(exc)}") from None

    def rectangle(self) -> RectangleValue:
        """The value as a rectangle, or `ValueError` naming what is wrong with it."""
        try:
            return RectangleValue.model_validate(self.value)
        except ValidationError as exc:
            raise ValueError(f"region {self.id!r} is malformed: {describe(exc)}") from None


class Annotation(_Open):
    """An annotation or a prediction of a task (the same shape for what boxmask reads)."""

    id: Id | None = None
    result: Annotated[list[Any], _items("Region")] = Field(default_factory=list)
    was_cancelled: bool = False
    created_at: str | None = None
    updated_at: str | None = None

    @classmethod
    def parse(cls, item: Any) -> Annotation | None:
        """The annotation, or None for an item that is not one (passed over, as Label Studio
        itself never sends such items: they can only be junk)."""
        try:
            return cls.model_validate(item)
        except ValidationError:
            return None


class Task(_Open):
    """One task of a `/predict` batch: its data (the image URL under the Image tag's key) and
    the annotations and predictions whose rectangles get masks."""

    id: int | None = None
    data: dict[str, Any]
    annotations: Annotated[list[Any], _items("Annotation")] = Field(default_factory=list)
    predictions: Annotated[list[Any], _items("Annotation")] = Field(default_factory=list)

    @classmethod
    def parse(cls, item: Any) -> Task:
        """The task, or `ValueError` saying what is wrong with it (its own error in a batch)."""
        try:
            return cls.model_validate(item)
        except ValidationError as exc:
            why = (describe(exc) if isinstance(item, dict)
                   else f"it must be a JSON object, not {type(item).__name__}")
            raise ValueError(f"the task is malformed: {why}") from None


class PredictContext(_Open):
    """`params.context`: in interactive mode, `result` holds the region just drawn."""

    result: Annotated[list[Any], _items("Region")] | None = None


class PredictParams(_Open):
    context: PredictContext | None = None


class PredictBody(_Open):
    """`POST /predict`: `{tasks, project, label_config, params: {context}}`."""

    tasks: Annotated[list[Any], _items("Task", min_items=1)] = Field(
        min_length=1, description="The tasks to predict; interactive mode answers the first.")
    project: Id | None = Field(default=None, description='"<id>.<created timestamp>"')
    label_config: str = Field(default="", description="The project's labelling config (XML).")
    params: PredictParams | None = None


class SetupBody(_Open):
    """`POST /setup`: `{project, schema, hostname, access_token, extra_params}`."""

    project: Id | None = Field(default=None, description='"<id>.<created timestamp>"')
    # "schema" is a BaseModel attribute: kept under another name, read and written as "schema".
    label_config: str | None = Field(default=None, alias="schema",
                                     description="The project's labelling config (XML).")
    hostname: str | None = None
    access_token: str | None = None
    extra_params: Any = None


class WebhookBody(_Open):
    """`POST /webhook`: a project event or `START_TRAINING` (`{action, project, ...}`).

    Label Studio 1.23 sends every project event to the backend's webhook (its `webhooks/`
    serializers): `ANNOTATION_CREATED` / `ANNOTATION_UPDATED` `{annotation, task, project}`,
    `ANNOTATIONS_CREATED` (lists of both), `ANNOTATIONS_DELETED` `{annotations: [{id}]}`,
    `TASKS_DELETED` `{tasks: [{id}]}`, and "Start training" `{project}`. Only the envelope is
    checked here; the fields an action needs are checked by `WebhookEvent.parse`."""

    action: str | None = None


class WebhookProject(_Open):
    """The `project` of a webhook payload (Label Studio's project serializer, all fields)."""

    id: Id
    label_config: str | None = None


class WebhookTask(_Open):
    """A `task` of a webhook payload: its id and data (the image URL under the Image's key)."""

    id: Id
    data: dict[str, Any] = Field(default_factory=dict)


class WebhookAnnotation(_Open):
    """An `annotation` of a webhook payload: Label Studio's annotation fields, `task` and
    `project` as ids."""

    id: Id
    task: Id | None = None
    project: Id | None = None
    result: list[Any] = Field(default_factory=list)
    was_cancelled: bool = False
    ground_truth: bool = False
    created_at: str | None = None
    updated_at: str | None = None


class WebhookRef(_Open):
    """A deleted object of a webhook payload: only its id."""

    id: Id


#: The models of the OpenAPI schema (with the item types the lists refer to).
SCHEMAS = (SetupBody, PredictBody, WebhookBody, Task, Annotation, Region, RectangleValue)
