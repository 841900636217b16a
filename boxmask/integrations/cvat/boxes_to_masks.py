"""Turn every rectangle of a CVAT task into a class-specific mask (or polygons).

Reads the task's labels, frames and rectangle shapes through cvat-sdk, runs the runtime once per
frame (one encoder run, all of the frame's boxes through the decoder at once), and uploads mask
shapes (`cvat_sdk.masks.encode_mask`) or polygons, with the rectangle's label, group and z-order.
Rectangles can be deleted once their mask is uploaded. A JSON-lines journal
(`journal.CvatJournal`) records each frame finished, so an interrupted run resumes where it
stopped. `--dry-run` uploads nothing and writes a COCO instances file (CVAT imports it with
"COCO 1.0", matching images by file name).

The task is reached through the small `TaskData` interface; `CvatTask` implements it over a
cvat-sdk `Task` proxy.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from cvat_sdk import models
from cvat_sdk.core.proxies.annotations import AnnotationUpdateAction
from cvat_sdk.masks import encode_mask

from boxmask.integrations.cvat.journal import CvatJournal
from boxmask.integrations.labels import LabelMapper
from boxmask.runtime import Predictor
from boxmask.runtime.boxes import check_boxes
from boxmask.runtime.masks import to_polygons, to_rle

log = logging.getLogger("boxmask.integrations.cvat")


@dataclass(frozen=True)
class Frame:
    index: int
    name: str
    width: int
    height: int


class TaskData(Protocol):
    """What the conversion needs from a CVAT task."""

    def labels(self) -> Sequence[models.Label]: ...
    def frames(self) -> Sequence[Frame]: ...
    def shapes(self) -> Sequence[models.LabeledShape]: ...
    def frame_image(self, index: int) -> bytes: ...
    def create_shapes(self, shapes: Sequence[models.LabeledShapeRequest]) -> None: ...
    def delete_shapes(self, shapes: Sequence[models.LabeledShape]) -> None: ...


class CvatTask:
    """`TaskData` over a cvat-sdk task proxy (`client.tasks.retrieve(task_id)`)."""

    def __init__(self, task: Any) -> None:
        self.task = task

    def labels(self) -> Sequence[models.Label]:
        return self.task.get_labels()

    def frames(self) -> Sequence[Frame]:
        """Every frame that is not deleted. A video task's data meta lists one entry for the
        whole video (cvat-sdk's TaskDataset reads ``frames[k if imageset else 0]`` too); its
        frames are named as CVAT's COCO export names them, ``frame_000000``."""
        meta = self.task.get_meta()
        deleted = set(getattr(meta, "deleted_frames", None) or ())
        imageset = getattr(self.task, "data_original_chunk_type", "imageset") == "imageset"
        size = int(getattr(self.task, "size", None) or len(meta.frames))
        frames = []
        for i in range(size):
            if i in deleted:
                continue
            f = meta.frames[i if imageset else 0]
            frames.append(Frame(i, f.name if imageset else f"frame_{i:06d}",
                                int(f.width), int(f.height)))
        return frames

    def shapes(self) -> Sequence[models.LabeledShape]:
        return self._annotations().shapes

    def tracks(self) -> Sequence[Any]:
        return self._annotations().tracks or ()

    def _annotations(self) -> Any:
        if getattr(self, "_cached_annotations", None) is None:
            self._cached_annotations = self.task.get_annotations()
        return self._cached_annotations

    def frame_image(self, index: int) -> bytes:
        return self.task.get_frame(index, quality="original").read()

    def create_shapes(self, shapes: Sequence[models.LabeledShapeRequest]) -> None:
        self.task.update_annotations(models.PatchedLabeledDataRequest(shapes=list(shapes)),
                                     action=AnnotationUpdateAction.CREATE)

    def delete_shapes(self, shapes: Sequence[models.LabeledShape]) -> None:
        requests = [models.LabeledShapeRequest(**s.to_dict()) for s in shapes]
        self.task.update_annotations(models.PatchedLabeledDataRequest(shapes=requests),
                                     action=AnnotationUpdateAction.DELETE)


@dataclass
class Summary:
    frames: int = 0
    skipped_frames: int = 0  # done in an earlier run (journal)
    boxes: int = 0
    shapes: int = 0
    empty_masks: int = 0
    rotated_boxes: int = 0
    deleted_boxes: int = 0
    boxes_on_deleted_frames: int = 0  # rectangles on a frame the task deleted: left alone
    tracked_boxes: int = 0  # rectangles of tracks (video interpolation): not converted
    already_uploaded: int = 0  # shapes found on the task from a run killed before its journal line
    coco: dict[str, Any] | None = field(default=None, repr=False)


def _shape_type(shape: Any) -> str:
    kind = shape.type
    return getattr(kind, "value", kind)


def _shape_key(shape: Any) -> tuple:
    """What identifies a shape this conversion uploads: frame, label, type and points (mask
    points are integers; polygon points are compared at 1/1000 px, below any storage rounding)."""
    return (int(shape.frame), int(shape.label_id), _shape_type(shape),
            tuple(round(float(p), 3) for p in shape.points))


def convert_task(
    task: TaskData,
    predictor: Predictor,
    *,
    polygons: bool = False,
    delete_boxes: bool = False,
    journal: CvatJournal | None = None,
    dry_run: bool = False,
    label_map: Mapping[str, str | int] | None = None,
    polygon_tolerance: float = 1.0,
    on_frame: Callable[[int, int], None] | None = None,
) -> Summary:
    """Convert the task's rectangles; returns counts (and the COCO dict in a dry run).

    Labels are mapped by name (then `label_map`); a rectangle whose label the model lacks
    stops the run before anything is uploaded, naming the model's categories.
    """
    labels = {label.id: label for label in task.labels()}
    mapper = LabelMapper(predictor.card, label_map, how_to_map="--label-map '{\"CVAT name\": \"category\"}'")
    by_frame: dict[int, list[models.LabeledShape]] = defaultdict(list)
    # Masks and polygons already on the task: a run killed after an upload but before its
    # journal line redoes that frame, and must not upload the same shapes a second time.
    existing: set[tuple] = set()
    summary = Summary()
    for shape in task.shapes():
        if _shape_type(shape) != "rectangle":
            existing.add(_shape_key(shape))
            continue
        if getattr(shape, "rotation", 0):
            summary.rotated_boxes += 1  # a rotated box has no axis-aligned meaning for the model
            continue
        by_frame[int(shape.frame)].append(shape)
    frames = {f.index: f for f in task.frames()}
    for index in [i for i in by_frame if i not in frames]:
        summary.boxes_on_deleted_frames += len(by_frame.pop(index))
    tracks = getattr(task, "tracks", None)
    summary.tracked_boxes = sum(1 for t in (tracks() if tracks is not None else ())
                                if t.shapes and _shape_type(t.shapes[0]) == "rectangle")
    if summary.tracked_boxes:
        log.warning("%d tracked rectangles (video tracks) are left as they are: only shapes are "
                    "converted", summary.tracked_boxes)
    category_of = {}  # each CVAT label's model category, mapped once
    for label_id in {s.label_id for shapes in by_frame.values() for s in shapes}:
        category_of[label_id] = mapper.category(labels[label_id].name)  # fail before uploading

    coco: dict[str, Any] = {"images": [], "annotations": [],
                            "categories": [{"id": lid, "name": label.name} for lid, label in labels.items()]}
    for n, (index, rects) in enumerate(sorted(by_frame.items())):
        if on_frame is not None:
            on_frame(n, len(by_frame))
        if journal is not None and index in journal.done and not dry_run:
            summary.skipped_frames += 1
            continue
        frame = frames[index]
        key = predictor.set_image(task.frame_image(index))
        boxes = [list(map(float, s.points[:4])) for s in rects]
        checked = check_boxes(boxes, [category_of[s.label_id] for s in rects],
                              card=predictor.card, image_size=predictor.image_size(key),
                              limits=predictor.limits)
        pred = predictor.predict(checked, key=key)
        created: list[models.LabeledShapeRequest] = []
        for rect, mask in zip(rects, pred.iter_masks(), strict=True):
            if not mask.any():
                summary.empty_masks += 1
                continue
            common = {"frame": index, "label_id": rect.label_id, "group": rect.group or 0,
                      "z_order": rect.z_order or 0, "source": "semi-auto", "attributes": []}
            if polygons:
                created += [models.LabeledShapeRequest(type="polygon", points=p, **common)
                            for p in to_polygons(mask, tolerance=polygon_tolerance)]
            else:
                created.append(models.LabeledShapeRequest(type="mask", points=encode_mask(mask), **common))
            if dry_run:
                ys, xs = np.nonzero(mask)
                segmentation: Any = (to_polygons(mask, tolerance=polygon_tolerance) if polygons
                                     else to_rle(mask))
                coco["annotations"].append({
                    "id": len(coco["annotations"]) + 1, "image_id": index + 1,
                    "category_id": rect.label_id, "segmentation": segmentation,
                    "area": int(mask.sum()), "iscrowd": 0,
                    "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                             int(ys.max() - ys.min() + 1)]})
        if not dry_run:
            uploaded = [s for s in created if _shape_key(s) in existing]
            if uploaded:
                log.info("frame %d: %d of its %d shapes are already on the task (an earlier run "
                         "uploaded them, then stopped before its journal line)", index,
                         len(uploaded), len(created))
                summary.already_uploaded += len(uploaded)
                created = [s for s in created if _shape_key(s) not in existing]
        summary.frames += 1
        summary.boxes += len(rects)
        summary.shapes += len(created)
        if dry_run:
            coco["images"].append({"id": index + 1, "file_name": frame.name,
                                   "width": frame.width, "height": frame.height})
            continue
        if created:
            task.create_shapes(created)
        if delete_boxes:
            task.delete_shapes(rects)
            summary.deleted_boxes += len(rects)
        if journal is not None:
            journal.record(index, boxes=len(rects), shapes=len(created), deleted=delete_boxes)
    if dry_run:
        summary.coco = coco
    return summary


def connect(host: str | None, user: str | None, password: str | None, token: str | None):
    """A logged-in cvat-sdk client from explicit values (the CLI reads them from CVAT_* env)."""
    from cvat_sdk import make_client

    if not host:
        raise ValueError("no CVAT server: set CVAT_HOST (e.g. http://localhost:8080) or pass --host")
    if token:
        return make_client(host, access_token=token)
    if user and password:
        return make_client(host, credentials=(user, password))
    raise ValueError("no CVAT credentials: set CVAT_ACCESS_TOKEN, or CVAT_USER and CVAT_PASSWORD")
