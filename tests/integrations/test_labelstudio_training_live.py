"""boxmask learns a new shape from a real Label Studio 1.23.2: its own webhook and "Start training".

Label Studio runs headless from its venv (as in test_labelstudio_live.py); boxmask runs in a
real uvicorn process with a token and a data folder, serving a tiny model pretrained for this
module on seven shapes, with its checkpoint (`labelstudio_scenario`: the model, the images,
and the figures measured offline before this test relied on them). Everything goes through
Label Studio's API: connecting the backend creates the project webhook, which is given the
token as its header (what docs/labelstudio.md tells the operator to do); the annotators' boxes
of a shape the model does not know (triangles: their boxes are poor masks of them) and a few
corrected masks, as brush and polygon regions, reach boxmask's store by Label Studio's own
webhook calls, an update and a delete included; "Start training" (`POST /api/ml/<id>/train`)
runs a real `boxmask finetune` round. The round must promote a new version whose held-out
triangles beat their boxes; Label Studio then records that version, and the masks of its next
predictions on the held-out tasks, decoded from what Label Studio stored, beat the box too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from boxmask.integrations.labelstudio.dataset import heldout as is_heldout
from boxmask.integrations.labelstudio.gate import box_mask, mask_iou
from tests.integrations import labelstudio_payloads as payloads
from tests.integrations import labelstudio_scenario as scenario
from tests.integrations.test_labelstudio_live import (  # noqa: F401 - fixtures
    ROOT,
    TOKEN,
    brush_mask,
    label_studio,
    ls,
    ok,
    wait_for,
)
from tests.processes import free_port, stop_process

pytestmark = pytest.mark.labelstudio

BOXMASK_TOKEN = "boxmask-train-token-42"
BOXMASK_AUTH = {"Authorization": f"Bearer {BOXMASK_TOKEN}"}
CONFIG = payloads.label_config(polygons=True)
BASE = "shapes-tiny"
HELDOUT_PERCENT = 50  # of the tasks with masks: which ones is a hash of project and task id
TASKS, HELDOUT_TASKS, CORRECTED = 22, 6, 4  # the corrected masks: on tasks that train
ITERATIONS = 150
# How far the new version's masks of the held-out triangles must beat their boxes (mean IoU;
# measured: about 0.2, see labelstudio_scenario).
MARGIN = 0.1


@pytest.fixture(scope="module")
def served_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, exported model) of the tiny model that knows seven shapes, not the triangle."""
    return scenario.pretrain(tmp_path_factory.mktemp("served_model"), BASE)


@pytest.fixture(scope="module")
def trainer_url(served_model: tuple[Path, Path],
                label_studio: str,  # noqa: F811 - the imported fixture
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    checkpoint, model_dir = served_model
    port = free_port()
    work = tmp_path_factory.mktemp("boxmask_training")
    log = work / "uvicorn.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO", "BOXMASK_"))}
    env.update({"BOXMASK_MODEL_DIR": str(model_dir), "BOXMASK_DEMO": "false",
                "BOXMASK_API_TOKEN": BOXMASK_TOKEN,
                "LABEL_STUDIO_URL": label_studio, "LABEL_STUDIO_API_KEY": TOKEN,
                "BOXMASK_LABELSTUDIO_DATA_DIR": str(work / "data"),
                "BOXMASK_LABELSTUDIO_BASE_CHECKPOINT": str(checkpoint),
                "BOXMASK_LABELSTUDIO_TRAIN_ITERATIONS": str(ITERATIONS),
                "BOXMASK_LABELSTUDIO_TRAIN_THREADS": "1",
                "BOXMASK_LABELSTUDIO_HELDOUT_PERCENT": str(HELDOUT_PERCENT),
                "OMP_NUM_THREADS": "1"})
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "boxmask.server.app:create_app",
                                 "--factory", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/labelstudio/health", proc, log, timeout_s=120)
        yield url
    finally:
        stop_process(proc)


def _jobs(url: str) -> dict:
    response = httpx.get(f"{url}/labelstudio/jobs", headers=BOXMASK_AUTH, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _wait_until(what: str, check, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    pytest.fail(f"{what} did not happen in {timeout_s:.0f} s")


def _box(mask: np.ndarray) -> list[float]:
    """A mask's COCO box [x, y, w, h], in whole pixels (what an annotator's tight box is)."""
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()),
            float(ys.max() + 1 - ys.min())]


def _polygon(mask: np.ndarray) -> list[tuple[float, float]]:
    """The outline of a mask as an annotator's polygon (pixel corners)."""
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    outline = max(contours, key=cv2.contourArea).reshape(-1, 2)
    return [(float(x) + 0.5, float(y) + 0.5) for x, y in outline]


def _result(task_id: int, triangles: list[np.ndarray], masks: str | None) -> list[dict]:
    """A task's annotation: a box per triangle; `masks`: "all" brush masks (held-out tasks) or
    "one" corrected mask (a brush, or a polygon on every other task), else none."""
    size = scenario.SIZE
    result = []
    for k, mask in enumerate(triangles):
        result.append(payloads.rectangle(scenario.NEW, _box(mask), size, size, f"r{task_id}-{k}"))
        if masks == "all" or (masks == "one" and k == 0):
            if masks == "one" and task_id % 2:
                result.append(payloads.polygon_region(scenario.NEW, _polygon(mask), size, size,
                                                      f"p{task_id}-{k}"))
            else:
                result.append(payloads.brush_region(scenario.NEW, mask, f"m{task_id}-{k}"))
    return result


def test_label_studio_teaches_boxmask_a_new_shape_and_serves_the_better_version(
        ls, trainer_url: str) -> None:  # noqa: F811 - the imported fixture
    project = ok(ls.post("/api/projects", json={"title": "learn", "label_config": CONFIG}))
    pid, key = project["id"], str(project["id"])
    # The project's images, uploaded: TASKS to annotate and one more whose annotation is deleted.
    images = scenario.project_images(TASKS + 1)
    files = {f"file{i}": (f"shapes{i:02d}.png", data, "image/png")
             for i, (data, _) in enumerate(images)}
    ok(ls.post(f"/api/projects/{pid}/import", files=files))
    tasks = sorted(ok(ls.get("/api/tasks", params={"project": pid}))["tasks"],
                   key=lambda t: t["id"])
    assert len(tasks) == TASKS + 1
    truth = {t["id"]: images[int(t["data"]["image"].rsplit("shapes", 1)[1][:2])][1]
             for t in tasks}
    *tasks, extra = tasks

    # Which tasks hold out: those whose hash says so, given masks (HELDOUT_TASKS of them); the
    # other tasks train, CORRECTED of them with one mask each, the rest with boxes only.
    hashed = [t["id"] for t in tasks if is_heldout(key, str(t["id"]), HELDOUT_PERCENT)]
    assert len(hashed) >= HELDOUT_TASKS, hashed
    heldout = hashed[:HELDOUT_TASKS]
    corrected = [t["id"] for t in tasks if t["id"] not in hashed][:CORRECTED]
    assert len(corrected) == CORRECTED
    results = {t["id"]: _result(t["id"], truth[t["id"]], "all" if t["id"] in heldout else
                                "one" if t["id"] in corrected else None) for t in tasks}

    backend = ok(ls.post("/api/ml", json={
        "project": pid, "url": f"{trainer_url}/labelstudio", "title": "boxmask",
        "is_interactive": True, "auth_method": "BASIC_AUTH", "basic_auth_user": "ls",
        "basic_auth_pass": BOXMASK_TOKEN}))
    (hook,) = [h for h in ok(ls.get("/api/webhooks/", params={"project": pid}))
               if h["url"].endswith("/labelstudio/webhook")]
    assert hook["send_payload"] and hook["send_for_all_actions"]
    ok(ls.patch(f"/api/webhooks/{hook['id']}/", json={"headers": {
        "Authorization": f"Bearer {BOXMASK_TOKEN}"}}))

    # Annotations made in Label Studio reach boxmask through Label Studio's own webhook. The
    # first training task starts with its first box only and is completed by an update; the
    # extra task's annotation (a box around the whole image) is deleted.
    first = next(t["id"] for t in tasks if t["id"] not in heldout and len(truth[t["id"]]) == 2)
    annotation_ids = {}
    for task in tasks:
        result = results[task["id"]][:1] if task["id"] == first else results[task["id"]]
        created = ok(ls.post(f"/api/tasks/{task['id']}/annotations", json={"result": result}))
        annotation_ids[task["id"]] = created["id"]
    junk = payloads.rectangle(scenario.NEW, [0, 0, scenario.SIZE, scenario.SIZE],
                              scenario.SIZE, scenario.SIZE, "junk")
    deleted = ok(ls.post(f"/api/tasks/{extra['id']}/annotations", json={"result": [junk]}))
    _wait_until(f"{TASKS + 1} annotations in boxmask's store",
                lambda: _jobs(trainer_url)["projects"].get(key, {}).get("annotations") == TASKS + 1,
                60)
    ok(ls.patch(f"/api/annotations/{annotation_ids[first]}/", json={"result": results[first]}))
    assert ls.delete(f"/api/annotations/{deleted['id']}/").status_code == 204
    _wait_until("the delete", lambda: _jobs(trainer_url)["projects"][key]["annotations"] == TASKS,
                60)

    # "Start training": Label Studio posts START_TRAINING to the webhook.
    before = ok(ls.get(f"/api/ml/{backend['id']}"))
    assert before["model_version"] == f"boxmask-{BASE}", before
    started = time.monotonic()
    assert ls.post(f"/api/ml/{backend['id']}/train").status_code == 200  # an empty body
    _wait_until("a round to run", lambda: _jobs(trainer_url)["projects"][key]["jobs"], 60)

    def idle() -> bool:
        status = _jobs(trainer_url)
        return status["running"] is None and not status["queued"]

    _wait_until("the round to end", idle, 600)
    round_s = time.monotonic() - started
    status = _jobs(trainer_url)["projects"][key]
    (job,) = status["jobs"]
    assert job["trigger"] == "START_TRAINING"
    assert job["state"] == "promoted", job
    # The store held what Label Studio last said: the update's boxes, not the deleted one.
    train_ids = [t["id"] for t in tasks if t["id"] not in heldout]
    dataset = job["dataset"]
    assert dataset["annotations"] == TASKS
    assert dataset["train_images"] == len(train_ids)
    assert dataset["train_instances"] == sum(len(truth[i]) for i in train_ids)
    assert dataset["train_masks"] == CORRECTED
    assert dataset["heldout_images"] == HELDOUT_TASKS
    assert dataset["heldout_instances"] == sum(len(truth[i]) for i in heldout)

    # The gate's figures: the new version beats the box on the held-out triangles; the model
    # served before does not know the triangle (no mask from it: 0).
    version = next(v for v in status["versions"] if v["name"] == job["version"])
    new, old = version["figures"]["heldout"], version["figures"]["served_heldout"]
    (triangle,) = new["by_category"]
    assert triangle["name"] == scenario.NEW
    assert triangle["instances"] == new["instances"] == dataset["heldout_instances"]
    assert triangle["mean_iou"] > triangle["box_mean_iou"] + MARGIN, new
    assert old["mean_iou"] == 0 and old["unknown_category"] == old["instances"], old
    assert old["box_mean_iou"] == pytest.approx(new["box_mean_iou"])
    served = f"boxmask-{job['version']}"

    # Label Studio asks /setup again when the model is read, and records what it answers.
    after = ok(ls.get(f"/api/ml/{backend['id']}"))
    assert after["model_version"] == served, after
    # Its next predictions, on the held-out tasks: the new version's masks of their boxes,
    # measured against the annotators' masks, beside the boxes themselves.
    ok(ls.post("/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": pid},
               json={"selectedItems": {"all": False, "included": heldout}}))
    ious, box_ious = [], []
    for task_id in heldout:
        predictions = ok(ls.get("/api/predictions", params={"task": task_id}))
        assert predictions and predictions[-1]["model_version"] == served, predictions
        masks = [brush_mask(r) for r in predictions[-1]["result"] if r["type"] == "brushlabels"]
        assert all(r["value"]["brushlabels"] == [scenario.NEW]
                   for r in predictions[-1]["result"] if r["type"] == "brushlabels")
        assert len(masks) == len(truth[task_id])  # one per stored box, in the boxes' order
        for predicted, true in zip(masks, truth[task_id], strict=True):
            ious.append(mask_iou(predicted, true))
            box_ious.append(mask_iou(box_mask(_box(true), *true.shape), true))
    miou, box_miou = float(np.mean(ious)), float(np.mean(box_ious))
    print(f"\nheld-out triangles ({len(ious)} on {len(heldout)} tasks): gate {triangle['mean_iou']:.4f} "
          f"(box {triangle['box_mean_iou']:.4f}); Label Studio's predictions {miou:.4f} "
          f"(box {box_miou:.4f}); round {round_s:.0f} s")
    assert miou > box_miou + MARGIN
    # The same masks the gate measured (the same boxes, through the same runtime).
    assert miou == pytest.approx(triangle["mean_iou"], abs=0.01)
    assert box_miou == pytest.approx(triangle["box_mean_iou"], abs=0.01)

    # Rolled back, Label Studio hears the base model's version at its next /setup.
    rolled = httpx.post(f"{trainer_url}/labelstudio/rollback", json={"project": pid},
                        headers=BOXMASK_AUTH, timeout=60)
    assert rolled.status_code == 200 and rolled.json()["served"] == "base", rolled.text
    assert ok(ls.get(f"/api/ml/{backend['id']}"))["model_version"] == f"boxmask-{BASE}"
