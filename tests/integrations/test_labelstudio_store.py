"""The annotation store and a round's COCO files, without a server or a model."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from boxmask.integrations.labelstudio.dataset import Categories, instances_of, write_round
from boxmask.integrations.labelstudio.events import WebhookError, WebhookEvent
from boxmask.integrations.labelstudio.store import ProjectStore
from boxmask.runtime.card import ModelCard
from tests.integrations.labelstudio_payloads import (
    annotation,
    brush_region,
    created,
    polygon_region,
    rectangle,
    task,
)
from tests.server.conftest import png_bytes


def _store(tmp_path) -> ProjectStore:
    return ProjectStore(tmp_path / "p1", "1")


def _records(body):
    return WebhookEvent.parse(body).annotations


def test_events_are_idempotent_updates_win_and_deletes_stay_deleted(tmp_path) -> None:
    store = _store(tmp_path)
    rect = rectangle("disc", [10, 10, 20, 20], 128, 96, "r1")
    first = created(annotation(7, 70, [rect]), task(70, png_bytes()))
    assert store.upsert(_records(first))["created"] == 1
    assert store.upsert(_records(first))["unchanged"] == 1  # Label Studio retried: no change
    seq = store.seq
    moved = rectangle("disc", [30, 10, 20, 20], 128, 96, "r1")
    update = created(annotation(7, 70, [moved], updated_at="2026-12-06T11:00:00Z"),
                     task(70, png_bytes()), action="ANNOTATION_UPDATED")
    assert store.upsert(_records(update))["updated"] == 1
    # An older event arriving late changes nothing.
    assert store.upsert(_records(first))["stale"] == 1
    assert store.annotation("7")["result"][0]["value"]["x"] == pytest.approx(100 * 30 / 128)
    assert store.count_live() == 1 and store.count_live(seq) == 1
    assert store.delete_annotations(["7"]) == 1
    assert store.delete_annotations(["7"]) == 0
    assert store.upsert(_records(update))["deleted"] == 1  # a replayed create stays deleted
    assert store.count_live() == 0
    # A deleted task takes its annotations with it, and keeps out later ones.
    store.upsert(_records(created(annotation(8, 80, [rect]), task(80, png_bytes()))))
    assert store.delete_tasks(["80"]) == 1
    assert store.upsert(_records(created(annotation(9, 80, [rect]), task(80, png_bytes()))))[
        "deleted"] == 1
    assert store.live() == []
    # Durable: a new connection sees the same.
    store.close()
    again = _store(tmp_path)
    assert again.annotation("7")["deleted"] == 1 and again.count_live() == 0


def test_concurrent_writers_lose_nothing(tmp_path) -> None:
    store = _store(tmp_path)
    rect = rectangle("disc", [10, 10, 20, 20], 128, 96, "r")

    def write(offset: int) -> None:
        for i in range(25):
            n = offset + i
            store.upsert(_records(created(annotation(n, n, [rect]), task(n, b"x"))))

    threads = [threading.Thread(target=write, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count_live() == 100 and store.seq == 100


@pytest.mark.parametrize("body, field", [
    ({"action": "ANNOTATION_CREATED", "project": {"id": 1}, "task": {"id": 1, "data": {}}},
     "annotation"),
    ({"action": "ANNOTATION_CREATED", "annotation": {"id": 1, "task": 1, "result": []}}, "project"),
    ({"action": "ANNOTATION_CREATED", "project": 1,
      "annotation": {"id": 1, "task": 1, "result": "not a list"}}, "annotation.result"),
    ({"action": "ANNOTATIONS_CREATED", "project": 1,
      "annotation": {"id": 1, "task": 1, "result": []}}, "annotation"),
    ({"action": "ANNOTATIONS_DELETED", "project": 1, "annotations": [{"nope": 1}]}, "annotations.0"),
    ({"action": "TASKS_DELETED", "project": 1}, "tasks"),
    ({"action": "START_TRAINING", "project": {"id": "../etc"}}, "project"),
    ({"action": ["START_TRAINING"]}, "action"),
])
def test_a_known_action_with_a_malformed_payload_is_refused_by_name(body, field) -> None:
    with pytest.raises(WebhookError, match=field.replace(".", r"\.")):
        WebhookEvent.parse(body)


def test_unknown_actions_are_parsed_as_ignorable() -> None:
    event = WebhookEvent.parse({"action": "LABEL_LINK_CREATED", "label_link": [{"id": 3}]})
    assert not event.known


def _mask(h, w, box):
    m = np.zeros((h, w), bool)
    x1, y1, x2, y2 = box
    m[y1:y2, x1:x2] = True
    return m


def test_regions_become_instances_masks_matched_to_their_boxes() -> None:
    w, h = 128, 96
    result = [
        rectangle("disc", [10, 10, 30, 30], w, h, "a"),
        rectangle("disc", [60, 10, 30, 30], w, h, "b"),
        rectangle("square", [10, 50, 30, 30], w, h, "c"),
        # Inside box b, so it is b's mask (not a's, same label, nor c's, another label).
        brush_region("disc", _mask(h, w, (65, 15, 85, 35)), "m1"),
        # A polygon inside c.
        polygon_region("square", [(12, 52), (38, 52), (38, 78), (12, 78)], w, h, "p1"),
        # A mask that falls in no box of its label: its own instance and box.
        brush_region("star", _mask(h, w, (100, 60, 120, 90)), "m2"),
        {"type": "choices", "value": {"choices": ["x"]}},  # not a region: passed over
        {"type": "brushlabels", "value": {"rle": [1, 2, 3], "brushlabels": ["disc"]}},  # broken
    ]
    problems: dict = {}
    instances = instances_of(result, w, h, problems)
    assert [i.label for i in instances] == ["disc", "disc", "square", "star"]
    a, b, c, star = instances
    assert a.mask is None and b.mask is not None and b.mask[20, 70]
    assert c.mask is not None and c.mask[60, 20] and not c.mask[5, 5]
    assert star.box == (100.0, 60.0, 120.0, 90.0)
    assert problems == {"malformed brushlabels region": 1}


def test_a_round_writes_coco_with_a_stable_heldout_split(tmp_path, contract_model_dir) -> None:
    card = ModelCard.model_validate_json((contract_model_dir / "model.json").read_text())
    known = card.categories[0].name
    store = _store(tmp_path)
    w, h = 128, 96
    for t in range(1, 21):
        result = [rectangle(known, [10, 10, 30, 30], w, h, f"r{t}"),
                  rectangle("newthing", [60, 10, 30, 30], w, h, f"n{t}")]
        if t % 2:
            result.append(brush_region(known, _mask(h, w, (12, 12, 38, 38)), f"m{t}"))
        store.upsert(_records(created(annotation(t, t, result), task(t, png_bytes(seed=t)))))
    images = tmp_path / "images"
    images.mkdir()

    def image_of(task_id, data):
        path = images / f"{task_id}.png"
        path.write_bytes(png_bytes(seed=int(task_id)))
        return path

    def size(path):
        return w, h

    def write(out):
        return write_round("1", store.live(), image_of, Categories(card, {}), 40.0, out, size)

    data = write(tmp_path / "round")
    train = json.loads(data.train.read_text())
    held = json.loads(data.heldout.read_text())
    by_name = {c["name"]: c["id"] for c in train["categories"]}
    assert by_name[known] == card.categories[0].id
    assert by_name["newthing"] == max(c.id for c in card.categories) + 1
    held_tasks = {i["label_studio_task"] for i in held["images"]}
    train_tasks = {i["label_studio_task"] for i in train["images"]}
    assert held_tasks and not held_tasks & train_tasks
    assert all(int(t) % 2 for t in held_tasks)  # only tasks with masks are held out
    assert all(a.get("segmentation") for a in held["annotations"])  # scored instances only
    assert sum(bool(a.get("segmentation")) for a in train["annotations"]) == 10 - len(held_tasks)
    seg = next(a["segmentation"] for a in train["annotations"] if a.get("segmentation"))
    decoded = mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()})
    assert decoded.sum() == 26 * 26
    # The same annotations write the same files (a failed round resumes on them).
    assert write(tmp_path / "again").digest == data.digest
