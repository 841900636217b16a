"""boxmask learns from a real Label Studio 1.23.2: its own webhook and "Start training".

Label Studio runs headless from its venv (as in test_labelstudio_live.py); boxmask runs in a
real uvicorn process with a token, a data folder, the tiny model and its checkpoint. Everything
goes through Label Studio's API: connecting the backend creates the project webhook, which is
given the token as its header (what docs/labelstudio.md tells the operator to do); annotations
created, updated and deleted in Label Studio reach boxmask's store by Label Studio's own webhook
calls; "Start training" (`POST /api/ml/<id>/train`) runs a real `boxmask finetune` round; the
model version Label Studio then records, and the one its predictions carry, follow the gate.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integrations import labelstudio_payloads as payloads
from tests.integrations.test_labelstudio_live import (  # noqa: F401 - fixtures
    ROOT,
    TOKEN,
    label_studio,
    ls,
    ok,
    wait_for,
)
from tests.processes import free_port, stop_process

pytestmark = pytest.mark.labelstudio

BOXMASK_TOKEN = "boxmask-train-token-42"
BOXMASK_AUTH = {"Authorization": f"Bearer {BOXMASK_TOKEN}"}
CONFIG = payloads.label_config(polygons=False)


@pytest.fixture(scope="module")
def trainer_url(exported_model_dir: Path, tiny_checkpoint: Path,
                label_studio: str,  # noqa: F811 - the imported fixture
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    work = tmp_path_factory.mktemp("boxmask_training")
    log = work / "uvicorn.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO", "BOXMASK_"))}
    env.update({"BOXMASK_MODEL_DIR": str(exported_model_dir), "BOXMASK_DEMO": "false",
                "BOXMASK_API_TOKEN": BOXMASK_TOKEN,
                "LABEL_STUDIO_URL": label_studio, "LABEL_STUDIO_API_KEY": TOKEN,
                "BOXMASK_LABELSTUDIO_DATA_DIR": str(work / "data"),
                "BOXMASK_LABELSTUDIO_BASE_CHECKPOINT": str(tiny_checkpoint),
                "BOXMASK_LABELSTUDIO_TRAIN_ITERATIONS": "12",
                "BOXMASK_LABELSTUDIO_TRAIN_THREADS": "1",
                "BOXMASK_LABELSTUDIO_HELDOUT_PERCENT": "25",
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


def test_label_studio_webhooks_and_start_training_make_a_gated_version(
        ls, trainer_url: str, tiny_dataset: Path) -> None:  # noqa: F811 - the imported fixture
    project = ok(ls.post("/api/projects", json={"title": "learn", "label_config": CONFIG}))
    pid, key = project["id"], str(project["id"])
    # The tiny dataset's images, uploaded; each task gets its image's true boxes and masks.
    events = payloads.dataset_events(tiny_dataset)
    pngs = {}
    for split in ("train", "val"):
        for path in sorted((tiny_dataset / "images" / split).glob("*.png")):
            pngs[f"{split}-{path.name}"] = path.read_bytes()
    files = {f"file{i}": (name, data, "image/png") for i, (name, data) in enumerate(pngs.items())}
    ok(ls.post(f"/api/projects/{pid}/import", files=files))
    tasks = sorted(ok(ls.get("/api/tasks", params={"project": pid}))["tasks"],
                   key=lambda t: t["id"])
    assert len(tasks) == len(events) == 12

    backend = ok(ls.post("/api/ml", json={
        "project": pid, "url": f"{trainer_url}/labelstudio", "title": "boxmask",
        "is_interactive": True, "auth_method": "BASIC_AUTH", "basic_auth_user": "ls",
        "basic_auth_pass": BOXMASK_TOKEN}))
    (hook,) = [h for h in ok(ls.get("/api/webhooks/", params={"project": pid}))
               if h["url"].endswith("/labelstudio/webhook")]
    assert hook["send_payload"] and hook["send_for_all_actions"]
    ok(ls.patch(f"/api/webhooks/{hook['id']}/", json={"headers": {
        "Authorization": f"Bearer {BOXMASK_TOKEN}"}}))

    # Annotations made in Label Studio reach boxmask through Label Studio's own webhook.
    annotation_ids = []
    for task, event in zip(tasks, events):
        result = event["annotation"]["result"]
        created = ok(ls.post(f"/api/tasks/{task['id']}/annotations", json={"result": result}))
        annotation_ids.append(created["id"])
    _wait_until("12 annotations in boxmask's store",
                lambda: _jobs(trainer_url)["projects"].get(key, {}).get("annotations") == 12, 60)
    # An update replaces its annotation; a delete removes it.
    first = events[0]["annotation"]["result"]
    ok(ls.patch(f"/api/annotations/{annotation_ids[0]}/", json={"result": first[:2]}))
    assert ls.delete(f"/api/annotations/{annotation_ids[-1]}/").status_code == 204
    _wait_until("the delete", lambda: _jobs(trainer_url)["projects"][key]["annotations"] == 11, 60)

    # "Start training": Label Studio posts START_TRAINING to the webhook.
    before = ok(ls.get(f"/api/ml/{backend['id']}"))
    assert before["model_version"] == "boxmask-synth-tiny", before
    assert ls.post(f"/api/ml/{backend['id']}/train").status_code == 200  # an empty body
    _wait_until("a round to run", lambda: _jobs(trainer_url)["projects"][key]["jobs"], 60)
    def idle() -> bool:
        status = _jobs(trainer_url)
        return status["running"] is None and not status["queued"]

    _wait_until("the round to end", idle, 600)
    status = _jobs(trainer_url)["projects"][key]
    (job,) = status["jobs"]
    assert job["trigger"] == "START_TRAINING"
    assert job["state"] in ("promoted", "refused"), job
    assert job["dataset"]["annotations"] == 11 and job["dataset"]["heldout_instances"] > 0
    version = next(v for v in status["versions"] if v["name"] == job["version"])
    new, old = version["figures"]["heldout"], version["figures"]["served_heldout"]
    assert (job["state"] == "promoted") == (new["mean_iou"] > old["mean_iou"]), job
    served = job["version"] if job["state"] == "promoted" else "synth-tiny"

    # Label Studio asks /setup again when the model is read, and records what it answers.
    after = ok(ls.get(f"/api/ml/{backend['id']}"))
    assert after["model_version"] == f"boxmask-{served}", after
    ok(ls.post("/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": pid},
               json={"selectedItems": {"all": False, "included": [tasks[1]["id"]]}}))
    predictions = ok(ls.get("/api/predictions", params={"task": tasks[1]["id"]}))
    assert predictions and predictions[-1]["model_version"] == f"boxmask-{served}", predictions
    if job["state"] == "promoted":
        # Rolled back, Label Studio hears the base model's version at its next /setup.
        rolled = httpx.post(f"{trainer_url}/labelstudio/rollback", json={"project": pid},
                            headers=BOXMASK_AUTH, timeout=60)
        assert rolled.status_code == 200 and rolled.json()["served"] == "base", rolled.text
        assert ok(ls.get(f"/api/ml/{backend['id']}"))["model_version"] == "boxmask-synth-tiny"
