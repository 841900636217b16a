"""A server killed (SIGKILL) in the middle of a training round: its job dies with it, no
annotation is lost from the store, the model served is whole, and the next round runs.

boxmask runs in a real uvicorn process (the kill must be a real one: no shutdown hook runs),
serving the tiny model with its checkpoint as the base; the round's `boxmask finetune` is
`fake_finetune.py` held in its training stage (it copies the served model as the new version
when let go), so the kill lands mid-round every time. The events are Label Studio 1.23.2's
webhook payloads (`labelstudio_payloads`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.integrations import labelstudio_payloads as payloads
from tests.processes import free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]
FAKE = Path(__file__).with_name("fake_finetune.py")
TOKEN = "kill-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BASE_NAME = "synth-tiny"


def _wait(what: str, check: Callable[[], object], timeout_s: float) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    pytest.fail(f"{what} did not happen in {timeout_s:.0f} s")


def _alive(pid: int) -> bool:
    """Whether a process runs (a zombie, dead but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.fixture()
def start_server(exported_model_dir: Path, tiny_checkpoint: Path, tmp_path: Path
                 ) -> Iterator[Callable[..., tuple[subprocess.Popen, httpx.Client]]]:
    """`start(**fake_env)`: a boxmask server on tmp_path/data (the same folder each time),
    rounds run by the fake finetune with `fake_env` (FAKE_FINETUNE_*) in its environment."""
    started: list[tuple[subprocess.Popen, httpx.Client]] = []

    def start(**fake_env: str) -> tuple[subprocess.Popen, httpx.Client]:
        port = free_port()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("LABEL_STUDIO", "BOXMASK_", "FAKE_FINETUNE"))}
        env.update({"BOXMASK_MODEL_DIR": str(exported_model_dir), "BOXMASK_DEMO": "false",
                    "BOXMASK_API_TOKEN": TOKEN,
                    "BOXMASK_LABELSTUDIO_DATA_DIR": str(tmp_path / "data"),
                    "BOXMASK_LABELSTUDIO_BASE_CHECKPOINT": str(tiny_checkpoint),
                    "BOXMASK_LABELSTUDIO_TRAIN_COMMAND": json.dumps([sys.executable, str(FAKE)]),
                    "BOXMASK_LABELSTUDIO_HELDOUT_PERCENT": "25",
                    "BOXMASK_LABELSTUDIO_TRAIN_TIMEOUT_S": "120",
                    "FAKE_FINETUNE_MODEL": str(exported_model_dir), "OMP_NUM_THREADS": "1",
                    **fake_env})
        log = tmp_path / f"uvicorn{len(started)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "boxmask.server.app:create_app", "--factory",
                 "--host", "127.0.0.1", "--port", str(port)],
                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=30)
        started.append((proc, client))

        def up() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}: {log.read_text()[-3000:]}")
            try:
                return client.get("/labelstudio/health").status_code == 200
            except httpx.HTTPError:
                return False

        _wait("the server to start", up, 120)
        return proc, client

    yield start
    for proc, client in started:
        client.close()
        if proc.poll() is None:
            stop_process(proc)


def _status(client: httpx.Client) -> dict:
    response = client.get("/labelstudio/jobs")
    assert response.status_code == 200, response.text
    return response.json()


def _setup_version(client: httpx.Client) -> str:
    response = client.post("/labelstudio/setup", json={"project": "1.1765000000",
                                                       "schema": payloads.label_config()})
    assert response.status_code == 200, response.text
    return response.json()["model_version"]


def test_a_server_killed_mid_round_loses_no_annotation_and_the_next_round_runs(
        start_server, tiny_dataset: Path, tmp_path: Path) -> None:
    events = payloads.dataset_events(tiny_dataset)
    pid_file = tmp_path / "job.pid"
    server, client = start_server(FAKE_FINETUNE_MODE="sleep",
                                  FAKE_FINETUNE_RELEASE=str(tmp_path / "never"),
                                  FAKE_FINETUNE_PID=str(pid_file))
    for event in events:
        response = client.post("/labelstudio/webhook", json=event)
        assert response.status_code == 201, response.text
    answer = client.post("/labelstudio/webhook", json={"action": "START_TRAINING",
                                                       "project": payloads.project()})
    assert answer.status_code == 201, answer.text
    job_pid = int(_wait("the round's job to start training",
                        lambda: pid_file.is_file() and pid_file.read_text(), 60))
    running = _status(client)["running"]
    assert running is not None and running["stage"] == "training", running

    server.send_signal(signal.SIGKILL)
    server.wait(timeout=30)
    # The job dies with its server (it would otherwise train on, unattended).
    _wait("the job to die with its server", lambda: not _alive(job_pid), 30)

    _, client = start_server()
    status = _status(client)
    project = status["projects"]["1"]
    assert project["annotations"] == len(events)  # every event the server acknowledged
    (lost,) = project["jobs"]
    assert lost["id"] == answer.json()["job"] and lost["state"] == "interrupted", lost
    assert project["served"] == "base" and _setup_version(client) == f"boxmask-{BASE_NAME}"
    # The served model is whole: it answers a prediction.
    event = events[0]
    box = next(r for r in event["annotation"]["result"] if r["type"] == "rectanglelabels")
    predicted = client.post("/labelstudio/predict", json={
        "tasks": [event["task"]], "project": "1.1765000000",
        "label_config": payloads.label_config(), "params": {"context": {"result": [box]}}})
    assert predicted.status_code == 200, predicted.text
    result = predicted.json()["results"][0]
    assert result["model_version"] == f"boxmask-{BASE_NAME}" and result["result"], result

    # The next round runs to its end on the same annotations, in the interrupted round's folder.
    again = client.post("/labelstudio/webhook", json={"action": "START_TRAINING",
                                                      "project": payloads.project()})
    assert again.status_code == 201, again.text

    def ended() -> dict | None:
        jobs = _status(client)["projects"]["1"]["jobs"]
        job = next(j for j in jobs if j["id"] == again.json()["job"])
        return job if job["state"] in ("promoted", "refused", "failed", "not_promoted") else None

    job = _wait("the next round to end", ended, 120)
    # The fake round's version is the served model itself: scored equal, so not promoted.
    assert job["state"] == "refused", job
    assert job["version"] == lost["version"]
    assert job["dataset"]["annotations"] == len(events)
    assert _setup_version(client) == f"boxmask-{BASE_NAME}"
