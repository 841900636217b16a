"""`boxmask cvat boxes-to-masks`'s logic over a task made of cvat-sdk model objects.

`InMemoryTask` implements the `TaskData` interface in memory (labels, frames and shapes are the
cvat-sdk models a CVAT server returns); it is not a CVAT server, which needs docker and cannot
run here. What is checked: masks equal the runtime's, labels/groups carried over, the COCO file
of a dry run, deleting boxes, and resuming from the journal after a failure.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from cvat_sdk import models
from PIL import Image
from pycocotools.coco import COCO

from boxmask.integrations.cvat.boxes_to_masks import Frame, convert_task
from boxmask.integrations.cvat.journal import CvatJournal
from boxmask.integrations.cvat.masks import decode_mask
from boxmask.journal import JournalError
from boxmask.runtime import Predictor
from boxmask.runtime.errors import UnknownLabel
from boxmask.runtime.masks import from_rle

W, H = 64, 48


def png(seed: int) -> bytes:
    rng = np.random.RandomState(seed)
    buf = io.BytesIO()
    Image.fromarray((rng.rand(H, W, 3) * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def rect(sid: int, frame: int, label_id: int, box: list[float], rotation: float = 0.0) -> models.LabeledShape:
    return models.LabeledShape(id=sid, frame=frame, label_id=label_id, type="rectangle", points=box,
                               group=sid % 2, z_order=0, source="manual", occluded=False,
                               outside=False, rotation=rotation, attributes=[], elements=[])


class InMemoryTask:
    """A task held in memory as cvat-sdk models; `fail_on_frame` simulates a dropped upload."""

    def __init__(self, labels: list[str], shapes: list[models.LabeledShape], frames: int = 3,
                 fail_on_frame: int | None = None) -> None:
        self._labels = [models.Label(id=10 + i, name=n, type="any", attributes=[], sublabels=[])
                        for i, n in enumerate(labels)]
        self._shapes = list(shapes)
        self._frames = [Frame(i, f"img_{i}.png", W, H) for i in range(frames)]
        self.created: list[models.LabeledShapeRequest] = []
        self.deleted: list[int] = []
        self.fetched: list[int] = []
        self.fail_on_frame = fail_on_frame

    def labels(self):
        return self._labels

    def frames(self):
        return self._frames

    def shapes(self):
        return self._shapes

    def frame_image(self, index: int) -> bytes:
        self.fetched.append(index)
        return png(index)

    def create_shapes(self, shapes) -> None:
        if self.fail_on_frame is not None and shapes[0].frame == self.fail_on_frame:
            raise ConnectionError("upload dropped")
        self.created += shapes

    def delete_shapes(self, shapes) -> None:
        self.deleted += [s.id for s in shapes]


@pytest.fixture(scope="module")
def predictor(model_dir: Path) -> Predictor:
    return Predictor.from_dir(model_dir)


SHAPES = [rect(1, 0, 10, [4, 4, 40, 30]), rect(2, 0, 11, [20, 10, 60, 44]),
          rect(3, 2, 10, [8, 6, 50, 40]),
          models.LabeledShape(id=4, frame=1, label_id=10, type="points", points=[3, 3], group=0,
                              z_order=0, source="manual", occluded=False, outside=False,
                              rotation=0.0, attributes=[], elements=[])]


def expected_masks(predictor: Predictor, frame: int, boxes: list, names: list[str]) -> np.ndarray:
    return predictor.predict(boxes, labels=names, key=predictor.set_image(png(frame))).masks


def test_every_rectangle_gets_its_class_mask_with_one_encode_per_frame(predictor) -> None:
    task = InMemoryTask(["disc", "Square"], SHAPES)
    summary = convert_task(task, predictor)
    assert task.fetched == [0, 2]  # frames without boxes are not downloaded
    assert (summary.frames, summary.boxes, summary.deleted_boxes) == (2, 3, 0)
    frame0 = expected_masks(predictor, 0, [[4, 4, 40, 30], [20, 10, 60, 44]], ["disc", "square"])
    frame2 = expected_masks(predictor, 2, [[8, 6, 50, 40]], ["disc"])
    expected = [(r, m) for r, m in zip(SHAPES[:3], [*frame0, *frame2], strict=True) if m.any()]
    assert len(task.created) == len(expected) == summary.shapes > 0
    for shape, (source, mask) in zip(task.created, expected, strict=True):
        assert shape.type.value == "mask" and shape.source == "semi-auto"
        assert (shape.frame, shape.label_id, shape.group) == (source.frame, source.label_id, source.group)
        np.testing.assert_array_equal(decode_mask(shape.points, W, H), mask)


def test_polygons_and_deleting_the_boxes(predictor) -> None:
    task = InMemoryTask(["disc", "square"], SHAPES)
    summary = convert_task(task, predictor, polygons=True, delete_boxes=True)
    assert task.created and all(s.type.value == "polygon" for s in task.created)
    assert sorted(task.deleted) == [1, 2, 3] and summary.deleted_boxes == 3


def test_an_unknown_label_stops_before_any_upload(predictor) -> None:
    task = InMemoryTask(["disc", "zebra"], SHAPES)
    with pytest.raises(UnknownLabel, match="zebra"):
        convert_task(task, predictor)
    assert task.created == [] and task.fetched == []
    convert_task(task, predictor, label_map={"zebra": "square"})
    assert task.created


def test_an_interrupted_run_resumes_from_the_journal(predictor, tmp_path) -> None:
    journal_path = tmp_path / "journal.jsonl"
    failing = InMemoryTask(["disc", "square"], SHAPES, fail_on_frame=2)
    with pytest.raises(ConnectionError), CvatJournal.open(journal_path, task_id=5) as journal:
        convert_task(failing, predictor, journal=journal)
    assert {s.frame for s in failing.created} == {0}

    resumed = InMemoryTask(["disc", "square"], SHAPES)
    with CvatJournal.open(journal_path, task_id=5) as journal:
        summary = convert_task(resumed, predictor, journal=journal)
    assert summary.skipped_frames == 1 and resumed.fetched == [2]
    assert {s.frame for s in resumed.created} == {2}
    with CvatJournal.open(journal_path, task_id=5) as journal:
        assert journal.done == {0, 2}
    # The journal of another task is refused, not silently taken as this task's progress.
    with pytest.raises(JournalError, match="different job"):
        CvatJournal.open(journal_path, task_id=6)


class _KilledBeforeJournalLine(Exception):
    """Stands for SIGKILL between an upload and its journal line."""


class _DyingJournal(CvatJournal):
    def record(self, frame: int, **info) -> None:
        raise _KilledBeforeJournalLine(frame)


class ServerTask(InMemoryTask):
    """Like a CVAT server: what was uploaded is on the task when it is read again."""

    def create_shapes(self, shapes) -> None:
        super().create_shapes(shapes)
        next_id = 100 + len(self._shapes)
        self._shapes += [models.LabeledShape(id=next_id + i, occluded=False, outside=False,
                                             rotation=0.0, elements=[], **s.to_dict())
                         for i, s in enumerate(shapes)]

    def delete_shapes(self, shapes) -> None:
        super().delete_shapes(shapes)
        gone = {s.id for s in shapes}
        self._shapes = [s for s in self._shapes if s.id not in gone]


@pytest.mark.parametrize("polygons,delete_boxes", [(False, False), (True, True)])
def test_an_upload_whose_journal_line_is_lost_is_not_uploaded_twice(
        predictor, tmp_path, polygons, delete_boxes) -> None:
    path = tmp_path / "journal.jsonl"
    task = ServerTask(["disc", "square"], SHAPES)
    with pytest.raises(_KilledBeforeJournalLine), _DyingJournal.open(path, task_id=5) as dying:
        convert_task(task, predictor, polygons=polygons, journal=dying)
    first = list(task.created)
    assert first and {s.frame for s in first} == {0}
    with CvatJournal.open(path, task_id=5) as journal:
        assert journal.done == set()

    # The same command again, on the task as the server now holds it.
    again = ServerTask(["disc", "square"], [s for s in task.shapes()])
    with CvatJournal.open(path, task_id=5) as journal:
        summary = convert_task(again, predictor, polygons=polygons, delete_boxes=delete_boxes,
                               journal=journal)
    assert again.fetched == [0, 2]  # frame 0 has no journal line: it is redone
    assert summary.already_uploaded == len(first)
    assert {s.frame for s in again.created} == {2}  # nothing of frame 0 a second time
    masks = [s for s in again.shapes() if s.type.value in ("mask", "polygon")]
    assert len(masks) == len(first) + len(again.created)
    if delete_boxes:  # the boxes of frame 0 still go once their masks are on the task
        assert sorted(again.deleted) == [1, 2, 3]
    with CvatJournal.open(path, task_id=5) as journal:
        assert journal.done == {0, 2}
    # A third run finds everything journaled and uploads nothing.
    third = ServerTask(["disc", "square"], [s for s in again.shapes()])
    with CvatJournal.open(path, task_id=5) as journal:
        convert_task(third, predictor, polygons=polygons, journal=journal)
    assert third.created == [] and third.fetched == []


def test_dry_run_writes_a_coco_file_and_uploads_nothing(predictor, tmp_path) -> None:
    task = InMemoryTask(["disc", "square"], [*SHAPES, rect(9, 1, 10, [5, 5, 30, 30], rotation=30.0)])
    summary = convert_task(task, predictor, dry_run=True)
    assert task.created == [] and task.deleted == [] and summary.rotated_boxes == 1
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(summary.coco))
    coco = COCO(str(path))  # pycocotools reads it
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == {"disc", "square"}
    assert {img["file_name"] for img in coco.dataset["images"]} == {"img_0.png", "img_2.png"}
    frame0 = [m for m in expected_masks(predictor, 0, [[4, 4, 40, 30], [20, 10, 60, 44]],
                                        ["disc", "square"]) if m.any()]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert len(anns) == len(frame0)
    for ann, mask in zip(anns, frame0, strict=True):
        np.testing.assert_array_equal(from_rle(ann["segmentation"]), mask)
        np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), mask)


class _ProxyTask:
    """The parts of a cvat-sdk `Task` proxy that `CvatTask` reads, as CVAT fills them for a
    video (one data-meta frame for the whole video) or an image set."""

    def __init__(self, video: bool, size: int, deleted: list[int], shapes, tracks=()) -> None:
        self.size = size
        self.data_original_chunk_type = "video" if video else "imageset"
        names = ["clip.mp4"] if video else [f"img_{i}.png" for i in range(size)]
        # The fields of models.DataMetaRead / LabeledData that are read.
        self._meta = SimpleNamespace(deleted_frames=deleted, frames=[
            SimpleNamespace(width=W, height=H, name=n) for n in names])
        self._annotations = SimpleNamespace(shapes=list(shapes), tracks=list(tracks))
        self.created: list = []

    def get_meta(self):
        return self._meta

    def get_annotations(self):
        return self._annotations

    def get_labels(self):
        return [models.Label(id=10, name="disc", type="any", attributes=[], sublabels=[])]

    def get_frame(self, index: int, quality: str = "original"):
        return io.BytesIO(png(index))

    def update_annotations(self, data, action=None) -> None:
        self.created += data.shapes


def test_video_tasks_deleted_frames_and_tracks(predictor) -> None:
    from boxmask.integrations.cvat.boxes_to_masks import CvatTask

    track = SimpleNamespace(id=7, label_id=10, shapes=[SimpleNamespace(type="rectangle", frame=0)])
    shapes = [rect(1, 0, 10, [4, 4, 40, 30]), rect(2, 5, 10, [8, 6, 50, 40]),
              rect(3, 3, 10, [8, 6, 50, 40])]
    proxy = _ProxyTask(video=True, size=8, deleted=[3], shapes=shapes, tracks=[track])
    task = CvatTask(proxy)
    frames = task.frames()
    assert [f.index for f in frames] == [0, 1, 2, 4, 5, 6, 7]
    assert frames[0].name == "frame_000000" and (frames[0].width, frames[0].height) == (W, H)
    summary = convert_task(task, predictor)
    # Frame 5 of the video is converted; the box on deleted frame 3 is left alone and counted.
    assert summary.frames == 2 and summary.boxes == 2
    assert summary.boxes_on_deleted_frames == 1 and summary.tracked_boxes == 1
    assert {s.frame for s in proxy.created} <= {0, 5}
    images = CvatTask(_ProxyTask(video=False, size=3, deleted=[], shapes=[])).frames()
    assert [f.name for f in images] == ["img_0.png", "img_1.png", "img_2.png"]


def test_a_torn_journal_line_is_redone_not_fatal(predictor, tmp_path) -> None:
    path = tmp_path / "journal.jsonl"
    header = json.dumps(CvatJournal.header({"task": 5}))
    path.write_text(header + '\n{"frame": 0, "boxes": 2}\n{"frame": 2, "bo')  # killed mid-write
    with CvatJournal.open(path, task_id=5) as journal:
        assert journal.done == {0}
        journal.record(2, boxes=1)
    with CvatJournal.open(path, task_id=5) as journal:
        assert journal.done == {0, 2}
    assert json.loads(path.read_text().splitlines()[-1]) == {"frame": 2, "boxes": 1}
