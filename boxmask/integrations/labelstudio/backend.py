"""Label Studio tasks and regions -> boxes for `boxmask.runtime` -> brush / polygon results.

This is the translation half of the ML backend (the transport is the server's: the routes of
`boxmask.server.routers.labelstudio` over `boxmask.server.labelstudio_backends`), in the manner
of Label Studio's example backends: a `/predict` request is answered with one prediction per
task, in steps the server runs where they belong (`parse`; per task `fetch` outside the
inference slots, `answer` inside one). It holds no model logic: boxes go through the box
policy (`boxmask.runtime.boxes.check_boxes`) to `Predictor.predict`, whole images to
`Predictor.detect`, and masks come back as Label Studio's brush RLE
(`label_studio_sdk.converter.brush.mask2rle`) and, for `PolygonLabels` configs, polygons.

Three ways a request is answered:
- interactive: `params.context.result` holds the region the annotator just drew (a smart
  `RectangleLabels` box, in percent of the image); the answer is exactly one prediction with a
  mask of that box and label. The task's stored annotations are ignored.
- boxes: a task whose annotations or predictions hold rectangles gets a mask for each of them.
- detector: a task with no rectangle gets the detector's boxes, labels and masks.

Scores. Label Studio 1.23 stores a prediction's `score` and uses it to order tasks: the Data
Manager's "Prediction score" column (`predictions_score`, the mean of the task's predictions'
scores, sortable) and "Uncertainty sampling" in the labelling queue (lowest score first;
`projects/functions/next_task.py`). A region's `score` is shown beside the region. Each mask
region's `score` is its mask's review score (boxmask.runtime.review: confidence, colour
separation and, for a model with the mask-quality head, its predicted IoU) and the
prediction's `score` the lowest of them, so a task with one bad mask sorts before a task of
good ones: the worst first. A detector rectangle carries the detector's class score.
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from label_studio_sdk.converter import brush

from boxmask.integrations.labels import LabelMapper
from boxmask.integrations.labelstudio.config import Control, LabelConfig, LabelConfigError
from boxmask.integrations.labelstudio.images import (
    ImageFetchError,
    LabelStudioAccess,
    fetch_image,
)
from boxmask.integrations.labelstudio.protocol import (
    Annotation,
    Id,
    PredictBody,
    Region,
    SetupBody,
    Task,
)
from boxmask.runtime import Prediction, Predictor
from boxmask.runtime.boxes import check_boxes
from boxmask.runtime.errors import RuntimeInputError, UnknownImage
from boxmask.runtime.masks import to_polygons

log = logging.getLogger("boxmask.integrations.labelstudio")


class TaskError(ValueError):
    """A task (or the drawn region) that cannot be answered; the message is shown to the user."""


class ImageEvicted(Exception):
    """The encoding `fetch` counted on left the cache before `answer` ran: fetch the image
    again (outside the inference slot) and answer with its bytes."""


# What makes one task of a batch fail alone (its answer is an error; the others go on).
ANSWERABLE = (TaskError, ImageFetchError, RuntimeInputError)

#: Told the mask pixels a task is about to cost (a decoded image counts as one plane), before
#: the masks are made: the server charges them to the caller's budget.
Charge = Callable[[int], None]


def _no_charge(pixels: int) -> None:
    pass


@dataclass
class BackendOptions:
    """How the backend answers (the server fills it from `LabelStudioSettings`)."""

    label_map: Mapping[str, str | int] = field(default_factory=dict)
    # The operator's Label Studio (LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY) and the other
    # origins task images may come from (BOXMASK_LABELSTUDIO_ALLOWED_ORIGINS).
    access: LabelStudioAccess = field(default_factory=LabelStudioAccess)
    # Whether a project's /setup may say where its Label Studio is (when LABEL_STUDIO_URL is
    # not set). Off by default: any caller of /setup could otherwise point the fetches at an
    # address of its choosing.
    trust_setup_hostname: bool = False
    # LOCAL_FILES_DOCUMENT_ROOT: Local Files read from disk here (else fetched from Label Studio).
    local_files_root: str | None = None
    score_threshold: float = 0.5
    max_detections: int = 100
    polygon_tolerance: float = 1.0
    # Total deadline of one image's fetch (connect, redirects, body), and of each read.
    fetch_timeout_s: float = 10.0
    read_timeout_s: float = 10.0
    max_image_bytes: int = 32 << 20
    # Image URLs whose encoder output is (probably) still cached, so a second box on the same
    # image skips the download and the encoder.
    remembered_images: int = 64


@dataclass
class PredictRequest:
    """A checked `/predict` body. `tasks` are the items as sent, each checked on its own
    (`LabelStudioBackend.task`) so that a malformed one fails alone. `drawn`: the regions just
    drawn (interactive: only the first task is answered); None in batch mode."""

    tasks: list[Any]
    config: LabelConfig
    access: LabelStudioAccess
    drawn: list[Any] | None = None


@dataclass(frozen=True)
class Box:
    """A rectangle region in image pixels, with the label the annotator chose."""

    xyxy: tuple[float, float, float, float]
    label: str
    region_id: Id | None = None


def _new_id() -> str:
    return uuid.uuid4().hex[:10]


def region_to_box(region: Region, width: int, height: int) -> Box:
    """A `rectanglelabels` region (percent of the image) -> a `Box` in pixels.

    A rotated rectangle (Label Studio rotates about its top-left corner) becomes the
    axis-aligned box around it, which is what the mask model was trained on.
    """
    try:
        value = region.rectangle()
    except ValueError as exc:
        raise TaskError(str(exc)) from None
    if value.label is None:
        raise TaskError(f"box {region.id!r} has no label: pick a label before drawing it")
    x, y = value.x / 100 * width, value.y / 100 * height
    w, h = value.width / 100 * width, value.height / 100 * height
    angle = math.radians(value.rotation or 0.0)
    if angle:
        cos, sin = math.cos(angle), math.sin(angle)
        corners = [(x + cx * cos - cy * sin, y + cx * sin + cy * cos)
                   for cx, cy in ((0, 0), (w, 0), (w, h), (0, h))]
        xs, ys = zip(*corners, strict=True)
        xyxy = (min(xs), min(ys), max(xs), max(ys))
    else:
        xyxy = (x, y, x + w, y + h)
    return Box(xyxy=xyxy, label=value.label, region_id=region.id)


def _rectangles(results: Sequence[Any], controls: Sequence[str]) -> list[Region]:
    """The rectangle regions among `results` (of the `controls`, if given); `TaskError` for a
    malformed one."""
    found = []
    for item in results:
        try:
            region = Region.parse(item)
        except ValueError as exc:
            raise TaskError(str(exc)) from None
        if region is not None and (not controls or region.from_name in controls):
            found.append(region)
    return found


def _recency(annotation: Annotation) -> tuple[str, tuple[int, int, str]]:
    """Sort key, newest last: the time stamp, then the id. Ids are integers from Label Studio,
    but any mix of integers and strings must sort (a comparison of 2 with "a" would fail the
    whole batch): integers first, by value, then strings."""
    stamp = annotation.updated_at or annotation.created_at or ""
    ident = annotation.id
    order = (0, ident, "") if isinstance(ident, int) else (1, 0, "" if ident is None else ident)
    return stamp, order


def stored_rectangles(task: Task, controls: Sequence[str]) -> list[Region]:
    """The rectangles of a task's newest annotation that has any, else of its newest prediction.

    One source only: an annotation usually repeats the prediction it started from, and two
    annotators' boxes of one object would give two masks of it. Items that are not annotations
    are passed over (Label Studio never sends them).
    """
    def newest_first(items: list[Any]) -> list[Annotation]:
        parsed = [a for a in map(Annotation.parse, items) if a is not None]
        return sorted(parsed, key=_recency, reverse=True)

    annotations = [a for a in newest_first(task.annotations) if not a.was_cancelled]
    for source in (annotations, newest_first(task.predictions)):
        for item in source:
            rects = _rectangles(item.result, controls)
            if rects:
                return rects
    return []


class LabelStudioBackend:
    """Answers Label Studio's `/setup` and `/predict` with one predictor."""

    def __init__(self, predictor: Predictor, options: BackendOptions | None = None,
                 project_access: dict[str, LabelStudioAccess] | None = None) -> None:
        self.predictor = predictor
        self.options = options or BackendOptions()
        self.labels = LabelMapper(predictor.card, self.options.label_map,
                                  how_to_map="BOXMASK_LABELSTUDIO_LABEL_MAP='{\"LS name\": \"category\"}'")
        self._lock = threading.Lock()
        # What each project's /setup sent; shared by the backends of a server's model versions
        # (`project_access`), so a project keeps its token when its version changes.
        self._access: dict[str, LabelStudioAccess] = {} if project_access is None else project_access
        self._images: OrderedDict[tuple[str, str], str] = OrderedDict()

    @property
    def model_version(self) -> str:
        return f"boxmask-{self.predictor.card.name}"

    # -- /setup -------------------------------------------------------------------------------

    def setup(self, body: SetupBody | Mapping[str, Any]) -> dict[str, str]:
        """Remember the token a project sent (and its Label Studio URL, where the operator
        allows that); answer the model version. `ValidationError` for a malformed body.

        Label Studio gives /setup 3 s, so nothing slow happens here (the model is loaded at
        start-up). The label config is checked so a project without a mask control hears why.
        """
        body = SetupBody.model_validate(body)
        project = _project_id(body.project)
        hostname, token = body.hostname or None, body.access_token or None
        if hostname and not self.options.trust_setup_hostname:
            if self.options.access.url is None:
                log.warning("ignoring the Label Studio URL /setup sent: set LABEL_STUDIO_URL (or "
                            "BOXMASK_LABELSTUDIO_TRUST_SETUP_HOSTNAME=true)",
                            extra={"project": project, "hostname": hostname})
            hostname = None
        if project and (hostname or token):
            with self._lock:
                self._access[project] = LabelStudioAccess(url=hostname, token=token)
        if body.label_config:
            try:
                LabelConfig.parse(body.label_config)
            except LabelConfigError as exc:
                log.warning("label config cannot be answered", extra={"project": project, "error": str(exc)})
        return {"model_version": self.model_version}

    def access_for(self, project: str | None) -> LabelStudioAccess:
        """Where a project's images may come from, and the token for its Label Studio.

        The operator's LABEL_STUDIO_URL wins over what /setup sent; its key
        (LABEL_STUDIO_API_KEY) is only ever sent to that URL's origin. A /setup hostname is
        used only where the operator allows it, and then only with the token from that /setup.
        """
        sent = self._access.get(project or "", LabelStudioAccess())
        env = self.options.access
        if env.url:
            return LabelStudioAccess(url=env.url, token=env.token or sent.token,
                                     allowed_origins=env.allowed_origins)
        return LabelStudioAccess(url=sent.url, token=sent.token if sent.url else None,
                                 allowed_origins=env.allowed_origins)

    # -- /predict -----------------------------------------------------------------------------

    def parse(self, body: PredictBody | Mapping[str, Any]) -> PredictRequest:
        """Check a `/predict` body: `{tasks, project, label_config, params: {context}}`.

        Raises `ValidationError` for a malformed body, `LabelConfigError` / `TaskError` when
        the request as a whole cannot be answered. The tasks are checked one by one later.
        """
        body = PredictBody.model_validate(body)
        config = LabelConfig.parse(body.label_config)
        access = self.access_for(_project_id(body.project))
        context = body.params.context if body.params is not None else None
        drawn = context.result if context is not None else None
        if drawn:
            return PredictRequest(tasks=body.tasks[:1], config=config, access=access, drawn=drawn)
        return PredictRequest(tasks=body.tasks, config=config, access=access)

    @staticmethod
    def task(item: Any) -> Task:
        """One task of a request, checked: `TaskError` says what is wrong with it."""
        try:
            return Task.parse(item)
        except ValueError as exc:
            raise TaskError(str(exc)) from None

    def fetch(self, request: PredictRequest, task: Task, again: bool = False) -> bytes | None:
        """The encoded image of a task, or None when its encoder output is still cached (no
        download; `again`: download anyway, after `answer` raised `ImageEvicted`). Network
        only, no model: the server calls it outside the inference slots."""
        url = self._image_url(task, request.config)
        with self._lock:
            key = self._images.get((request.access.url or "", url))
        if not again and key is not None and key in self.predictor.cache:
            return None
        return self._download(url, request.access, task)

    def _download(self, url: str, access: LabelStudioAccess, task: Task) -> bytes:
        try:
            return fetch_image(url, access, task_id=task.id,
                               timeout_s=self.options.fetch_timeout_s,
                               read_timeout_s=self.options.read_timeout_s,
                               max_bytes=self.options.max_image_bytes,
                               local_files_root=self.options.local_files_root)
        except ImageFetchError:
            raise
        except Exception as exc:
            # The fence answers ImageFetchError; whatever else escapes it (a NUL byte's
            # ValueError, a directory's IsADirectoryError) is still this task's image failing,
            # told to the caller in the same generic words, and never the server's 500.
            raise ImageFetchError(f"fetching {url!r} failed: {type(exc).__name__}: {exc}") from exc

    def answer(self, request: PredictRequest, task: Task, image: bytes | None,
               charge: Charge = _no_charge) -> dict[str, Any]:
        """One task's prediction from its image (`fetch`'s result): encoder and mask model.
        `charge` is told each cost before it is paid (the image decoded, the masks)."""
        key, (height, width) = self._image(task, request, image)
        if image is not None:
            charge(width * height)
        if request.drawn:
            return self._interactive(key, request.drawn, request.config, width, height, charge)
        regions = stored_rectangles(task, request.config.rectangles)
        if regions:
            boxes = [region_to_box(r, width, height) for r in regions]
            return self._masks(key, boxes, request.config, width, height, charge)
        return self._detections(key, request.config, width, height, charge)

    def task_error(self, item: Any, exc: Exception, log_it: bool = True) -> dict[str, Any]:
        """The batch answer for a task that failed: an error without a result. `log_it` False:
        the caller counts it in a summary line instead (a batch of 20,000 broken tasks must not
        write 20,000 lines)."""
        task_id = item.get("id") if isinstance(item, Mapping) else None
        if log_it:
            log.warning("task not annotated", extra={"task": task_id, "error": str(exc),
                                                     "detail": getattr(exc, "detail", None)})
        return {"error": f"task {task_id}: {exc}", "model_version": self.model_version}

    def _interactive(self, key: str, drawn: Sequence[Any], config: LabelConfig,
                     width: int, height: int, charge: Charge) -> dict[str, Any]:
        regions = _rectangles(drawn, ())
        if not regions:
            kinds = sorted({str(r.get("type")) if isinstance(r, Mapping) else type(r).__name__
                            for r in drawn})
            raise TaskError(f"boxmask segments boxes: draw a smart RectangleLabels box (got {', '.join(kinds)})")
        boxes = [region_to_box(r, width, height) for r in regions]
        return self._masks(key, boxes, config, width, height, charge)

    # -- images -------------------------------------------------------------------------------

    @staticmethod
    def _image_url(task: Task, config: LabelConfig) -> str:
        url = task.data.get(config.image_key)
        if url is None:
            raise TaskError(f"task data has no {config.image_key!r} (the Image tag's value)")
        return str(url)

    def _image(self, task: Task, request: PredictRequest,
               image: bytes | None) -> tuple[str, tuple[int, int]]:
        """The predictor key and (height, width) of the task's image; `image` None means
        "remembered". If the cache dropped it since `fetch`, `ImageEvicted`: the download is
        the caller's to redo, never made here inside an inference slot."""
        remembered = (request.access.url or "", self._image_url(task, request.config))
        if image is None:
            with self._lock:
                key = self._images.get(remembered)
                if key is not None:
                    self._images.move_to_end(remembered)
            if key is None:
                raise ImageEvicted(remembered[1])
            try:
                # Pinned to this thread from here: the cache may drop it, this answer keeps it.
                self.predictor.select_image(key)
            except UnknownImage:
                raise ImageEvicted(remembered[1]) from None
            return key, self.predictor.image_size(key)
        key = self.predictor.set_image(image)
        size = self.predictor.image_size(key)
        with self._lock:
            self._images[remembered] = key
            while len(self._images) > self.options.remembered_images:
                self._images.popitem(last=False)
        return key, size

    # -- results ------------------------------------------------------------------------------

    def _output_label(self, label: str, control: Control) -> str:
        """The label to write in `control` for a box labelled `label` (same model category)."""
        if label in control.labels:
            return label
        category = self.labels.category(label)
        mapped = self.labels.tool_label(category.id, control.labels)
        if mapped is None:
            raise TaskError(f"control {control.from_name!r} has no label for {label!r} "
                            f"(model category {category.name!r}); add it to the labelling config")
        return mapped

    def _masks(self, key: str, boxes: Sequence[Box], config: LabelConfig,
               width: int, height: int, charge: Charge) -> dict[str, Any]:
        # Each label mapped to its category once (UnmappedLabel: 422), then the box policy.
        categories = [self.labels.category(b.label) for b in boxes]
        checked = check_boxes([b.xyxy for b in boxes], categories, card=self.predictor.card,
                              image_size=(height, width), limits=self.predictor.limits)
        pred = self.predictor.predict(checked, key=key)
        charge(len(boxes) * width * height)  # accepted: the masks are made next
        return self._prediction(pred, [b.label for b in boxes], config, width, height, boxes=None)

    def _detections(self, key: str, config: LabelConfig, width: int, height: int,
                    charge: Charge) -> dict[str, Any]:
        pred = self.predictor.detect(key=key, score_threshold=self.options.score_threshold,
                                     max_detections=self.options.max_detections)
        keep, labels = [], []
        for i, category_id in enumerate(pred.labels.tolist()):
            label = self.labels.tool_label(int(category_id), config.mask_labels)
            if label is None:  # the project does not label this category
                continue
            keep.append(i)
            labels.append(label)
        charge(len(keep) * width * height)
        return self._prediction(pred.subset(keep), labels, config, width, height,
                                boxes=config.rectangle)

    def _prediction(self, pred: Prediction, labels: Sequence[str], config: LabelConfig,
                    width: int, height: int, boxes: Control | None) -> dict[str, Any]:
        """One Label Studio prediction: per mask a brush (and polygon) region, and the detector's
        rectangle when `boxes` names the control to write it to."""
        common = {"original_width": width, "original_height": height, "image_rotation": 0}
        result: list[dict[str, Any]] = []
        quality = pred.has_quality
        assert pred.quality is not None
        for i, label in enumerate(labels):
            # A mask region's score: the mask's review score (class score for an answer without).
            mask, box_score = pred.mask(i), float(pred.scores[i])
            score = float(pred.quality[i]) if quality else box_score
            region_id = _new_id()
            if boxes is not None:
                x1, y1, x2, y2 = (float(v) for v in pred.boxes[i])
                result.append({
                    "id": region_id, "from_name": boxes.from_name, "to_name": boxes.to_name,
                    "type": "rectanglelabels", "score": box_score, **common,
                    "value": {"x": 100 * x1 / width, "y": 100 * y1 / height,
                              "width": 100 * (x2 - x1) / width, "height": 100 * (y2 - y1) / height,
                              "rotation": 0, "rectanglelabels": [self._output_label(label, boxes)]},
                })
            if config.brush is not None:
                result.append({
                    "id": _new_id(), "from_name": config.brush.from_name,
                    "to_name": config.brush.to_name, "type": "brushlabels", "score": score,
                    "readonly": False, **common,
                    "value": {"format": "rle", "rle": brush.mask2rle(mask.astype(np.uint8) * 255),
                              "brushlabels": [self._output_label(label, config.brush)]},
                })
            if config.polygon is not None:
                poly_label = self._output_label(label, config.polygon)
                for polygon in to_polygons(mask, tolerance=self.options.polygon_tolerance):
                    points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
                    result.append({
                        "id": _new_id(), "from_name": config.polygon.from_name,
                        "to_name": config.polygon.to_name, "type": "polygonlabels",
                        "score": score, **common,
                        "value": {"points": (points * [100 / width, 100 / height]).tolist(),
                                  "closed": True, "polygonlabels": [poly_label]},
                    })
        return {"result": result, "score": prediction_score(pred),
                "model_version": self.model_version}


def prediction_score(pred: Prediction) -> float:
    """The `score` of a task's prediction, by which Label Studio sorts tasks: the lowest review
    score of its regions (the task with the worst mask comes first in an ascending sort), the
    mean class score for an answer without review scores; 0 for no region."""
    if not len(pred):
        return 0.0
    assert pred.quality is not None
    if pred.has_quality:
        return float(np.min(pred.quality))
    return float(pred.scores.astype(float).mean())


def _project_id(project: Id | None) -> str | None:
    """Label Studio sends projects as "<id>.<created timestamp>"."""
    if project is None or project == "":
        return None
    return str(project).split(".", 1)[0]
