"""Label Studio's training loop through the server: webhook events, rounds, the gate, the swap,
rollback, a killed round.

The served model is the tiny exported model (`exported_model_dir`), its checkpoint the base
(`tiny_checkpoint`); tasks are the tiny synthetic dataset's images as data: URIs with their
true boxes and masks, in Label Studio 1.23.2's webhook format (`labelstudio_payloads`).

Most tests run rounds with `fake_finetune.py` as the training command (a real subprocess
under the real limits, that copies the served model as the "new version" in a fraction of a
second) and force the gate's figures, so they test the loop's decisions; one test runs the
real `boxmask finetune` (a few iterations), kills it mid-round, then runs a whole round.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from boxmask.integrations.labelstudio import gate
from tests.integrations import labelstudio_payloads as ls

FAKE = Path(__file__).with_name("fake_finetune.py")
TOKEN = "train-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BASE_NAME = "synth-tiny"


@pytest.fixture(scope="module")
def events(tiny_dataset: Path) -> list[dict]:
    return ls.dataset_events(tiny_dataset)


@pytest.fixture()
def make_app(exported_model_dir: Path, tiny_checkpoint: Path, tmp_path: Path, monkeypatch):
    """`make(**label_studio_settings)`: a started TestClient over the tiny model, the training
    loop's data in tmp_path/data, rounds run by the fake finetune unless `train_command` says."""
    from boxmask.server.app import create_app
    from boxmask.server.settings import LabelStudioSettings, ServerSettings

    monkeypatch.setenv("FAKE_FINETUNE_MODEL", str(exported_model_dir))
    clients = []

    def make(**overrides: object) -> TestClient:
        settings = {"data_dir": tmp_path / "data", "base_checkpoint": tiny_checkpoint,
                    "train_command": [sys.executable, str(FAKE)], "heldout_percent": 25.0,
                    "train_iterations": 2, "train_threads": 1, "train_timeout_s": 120.0,
                    **overrides}
        app = create_app(ServerSettings(model_dir=exported_model_dir, demo=False,
                                        log_json=False, api_token=TOKEN, max_concurrency=2),
                         LabelStudioSettings(**settings))
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        with contextlib.suppress(Exception):  # one test stops its server itself
            client.__exit__(None, None, None)


def _send(client: TestClient, body: dict, status: int = 201) -> dict:
    response = client.post("/labelstudio/webhook", json=body, headers=AUTH)
    assert response.status_code == status, response.text
    return response.json()


def _train(client: TestClient, project: int = 1, timeout_s: float = 120.0) -> dict:
    answer = _send(client, {"action": "START_TRAINING", "project": ls.project(project)})
    assert answer["job"].startswith(f"{project}-")
    loop = client.app.state.labelstudio_training.loop
    assert loop.wait_idle(timeout_s), "the round did not end in time"
    return _job(client, answer["job"])


def _job(client: TestClient, job_id: str) -> dict:
    project = job_id.split("-")[0]
    status = client.get("/labelstudio/jobs", params={"project": project}, headers=AUTH).json()
    return next(j for j in status["projects"][project]["jobs"] if j["id"] == job_id)


def _status(client: TestClient, project: str = "1") -> dict:
    response = client.get("/labelstudio/jobs", headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()["projects"][project]


def _predict(client: TestClient, event: dict, project: int = 1) -> dict:
    """The interactive call Label Studio makes when a box is drawn on the event's task."""
    tsk = event["task"]
    box = next(r for r in event["annotation"]["result"] if r["type"] == "rectanglelabels")
    response = client.post("/labelstudio/predict", headers=AUTH, json={
        "tasks": [tsk], "project": f"{project}.1765000000", "label_config": ls.label_config(),
        "params": {"context": {"result": [box]}}})
    assert response.status_code == 200, response.text
    return response.json()["results"][0]


def _setup_version(client: TestClient, project: int = 1) -> str:
    response = client.post("/labelstudio/setup", headers=AUTH, json={
        "project": f"{project}.1765000000", "schema": ls.label_config()})
    assert response.status_code == 200, response.text
    return response.json()["model_version"]


def _force_figures(monkeypatch, figures: dict[str, float]) -> None:
    """The gate's score of each model (by its card's name) on the held-out set."""
    def fake_score(predictor, coco_path, images):
        value = figures[predictor.card.name]
        return {"mean_iou": value, "box_mean_iou": 0.4, "instances": 3, "unknown_category": 0,
                "by_category": []}
    monkeypatch.setattr(gate, "score", fake_score)


def test_webhook_events_fill_the_store_idempotently(make_app, events) -> None:
    client = make_app()
    for event in events[:4]:
        assert _send(client, event)["annotations"]["created"] == 1
    assert _send(client, events[0])["annotations"]["unchanged"] == 1  # a retried delivery
    updated = json.loads(json.dumps(events[1]))
    updated["action"] = "ANNOTATION_UPDATED"
    updated["annotation"]["result"] = updated["annotation"]["result"][:1]
    updated["annotation"]["updated_at"] = "2026-12-06T12:00:00Z"
    assert _send(client, updated)["annotations"]["updated"] == 1
    assert _send(client, ls.deleted([events[2]["annotation"]["id"]]))["deleted"] == 1
    assert _send(client, events[2])["annotations"]["deleted"] == 1  # stays deleted
    bulk = {"action": "ANNOTATIONS_CREATED", "project": ls.project(),
            "annotation": [e["annotation"] for e in events[4:6]],
            "task": [e["task"] for e in events[4:6]]}
    assert _send(client, bulk)["annotations"]["created"] == 2
    assert _send(client, {"action": "TASKS_DELETED", "project": ls.project(),
                          "tasks": [{"id": events[5]["task"]["id"]}]})["deleted"] == 1
    assert _send(client, {"action": "PROJECT_UPDATED", "project": ls.project()})["status"] == "ignored"
    assert _status(client)["annotations"] == 4  # 0, 1 (updated), 3, 4
    store = client.app.state.labelstudio_training.loop.store("1")
    assert len(store.annotation(str(events[1]["annotation"]["id"]))["result"]) == 1


@pytest.mark.parametrize("body, status", [
    ({"action": "ANNOTATION_CREATED", "project": 1}, 422),  # no annotation
    ({"action": "ANNOTATION_CREATED", "project": 1, "annotation": {"id": 1, "task": 1,
                                                                    "result": {"a": 1}}}, 422),
    ({"action": "ANNOTATIONS_DELETED", "project": 1, "annotations": "all"}, 422),
    ({"action": "START_TRAINING"}, 422),  # which project?
    ({"action": 5}, 422),
    ({"no": "action"}, 422),
    ([1, 2], 400),
])
def test_bad_webhook_bodies_get_4xx(make_app, body, status) -> None:
    client = make_app()
    response = client.post("/labelstudio/webhook", json=body, headers=AUTH)
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"]
    assert client.post("/labelstudio/webhook", content=b"{not json",
                       headers={**AUTH, "content-type": "application/json"}).status_code == 400
    assert client.post("/labelstudio/webhook", json={"action": "START_TRAINING",
                                                     "project": 1}).status_code == 401


def test_the_gate_promotes_a_better_version_and_refuses_a_worse_one(make_app, events,
                                                                    monkeypatch) -> None:
    client = make_app()
    for event in events:
        _send(client, event)
    assert _setup_version(client) == f"boxmask-{BASE_NAME}"
    v1, v2 = f"{BASE_NAME}-p1-v1", f"{BASE_NAME}-p1-v2"
    _force_figures(monkeypatch, {BASE_NAME: 0.40, v1: 0.55, v2: 0.50})

    job = _train(client)
    assert job["state"] == "promoted", job
    assert "0.5500 against the served version's 0.4000" in job["reason"]
    assert _setup_version(client) == f"boxmask-{v1}"
    assert _predict(client, events[0])["model_version"] == f"boxmask-{v1}"
    # Another project is still served the base model.
    assert _setup_version(client, project=2) == f"boxmask-{BASE_NAME}"

    job = _train(client)
    assert job["state"] == "refused", job
    status = _status(client)
    assert status["served"] == v1
    versions = {v["name"]: v for v in status["versions"]}
    assert versions[v2]["state"] == "refused" and versions[v1]["state"] == "served"
    assert versions[v1]["figures"]["heldout"]["mean_iou"] == 0.55
    assert _predict(client, events[0])["model_version"] == f"boxmask-{v1}"
    # The second round started from the first version's checkpoint, not the base's.
    assert job["base"] == v1 and job["base_checkpoint"].endswith(
        f"versions/{v1}/train/checkpoint_last.pt")
    # The figures are in the metrics too.
    metrics = client.get("/metrics", headers=AUTH).text
    assert 'boxmask_labelstudio_jobs_total{state="promoted"} 1.0' in metrics
    assert 'boxmask_labelstudio_jobs_total{state="refused"} 1.0' in metrics
    assert f'boxmask_labelstudio_served_heldout_mean_iou{{project="1",version="{v1}"}} 0.55' in metrics
    assert 'boxmask_labelstudio_annotations{project="1"} 12.0' in metrics


def test_without_heldout_masks_a_version_is_trained_but_not_promoted(make_app, tiny_dataset,
                                                                     monkeypatch) -> None:
    client = make_app()
    for event in ls.dataset_events(tiny_dataset, with_masks=False)[:4]:
        _send(client, event)
    job = _train(client)
    assert job["state"] == "not_promoted" and "PROMOTE_WITHOUT_HELDOUT" in job["reason"]
    assert _status(client)["served"] == "base"
    assert _setup_version(client) == f"boxmask-{BASE_NAME}"


def test_rollback_by_route_and_cli_and_only_three_versions_are_kept(make_app, events, monkeypatch,
                                                                   tmp_path) -> None:
    client = make_app()
    for event in events:
        _send(client, event)
    names = [f"{BASE_NAME}-p1-v{n}" for n in range(1, 5)]
    _force_figures(monkeypatch, {BASE_NAME: 0.1, **{n: 0.2 + 0.1 * k for k, n in enumerate(names)}})
    for _ in names:
        assert _train(client)["state"] == "promoted"
    status = _status(client)
    kept = {v["name"] for v in status["versions"] if v["files_kept"]}
    assert kept == set(names[1:])  # the served one and the two before it
    assert not (tmp_path / "data" / "labelstudio" / "projects" / "1" / "versions" / names[0]).exists()

    response = client.post("/labelstudio/rollback", json={"project": 1}, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json() == {"project": "1", "served": names[2],
                               "model_version": f"boxmask-{names[2]}"}
    assert _setup_version(client) == f"boxmask-{names[2]}"
    # Not to a version whose files are gone; to the base model by name.
    refused = client.post("/labelstudio/rollback", json={"project": 1, "to": names[0]}, headers=AUTH)
    assert refused.status_code == 409 and "no longer kept" in refused.json()["error"]["message"]
    assert client.post("/labelstudio/rollback", json={"project": 1, "to": "base"},
                       headers=AUTH).json()["served"] == "base"
    assert _predict(client, events[0])["model_version"] == f"boxmask-{BASE_NAME}"
    # The CLI calls the route.
    from boxmask.cli import app

    runner = CliRunner()
    with pytest.MonkeyPatch.context() as mp:
        import httpx

        def post(url, json, headers, timeout):  # the CLI's HTTP call, into this app
            return client.post(httpx.URL(url).path, json=json, headers=headers)
        mp.setattr(httpx, "post", post)
        result = runner.invoke(app, ["labelstudio", "rollback", "--url", "http://boxmask:9090",
                                     "--project", "1", "--to", names[3], "--token", TOKEN])
    assert result.exit_code == 0, result.output
    assert names[3] in result.output
    assert _setup_version(client) == f"boxmask-{names[3]}"


def test_a_swap_lets_requests_in_flight_finish_on_the_old_version(make_app, events,
                                                                  monkeypatch) -> None:
    client = make_app()
    for event in events:
        _send(client, event)
    v1 = f"{BASE_NAME}-p1-v1"
    _force_figures(monkeypatch, {BASE_NAME: 0.1, v1: 0.9})
    assert _train(client)["state"] == "promoted"
    registry = client.app.state.registry
    old = registry.slots[v1].predictor
    entered, release = threading.Event(), threading.Event()
    real_predict = old.predict

    def slow_predict(*args, **kwargs):
        entered.set()
        assert release.wait(30)
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(old, "predict", slow_predict)
    answers: list[dict] = []
    thread = threading.Thread(target=lambda: answers.append(_predict(client, events[0])))
    thread.start()
    assert entered.wait(30)
    # Swap while the request is inside the old version's mask decoder.
    rolled = client.post("/labelstudio/rollback", json={"project": 1, "to": "base"}, headers=AUTH)
    assert rolled.status_code == 200, rolled.text
    assert v1 not in registry.slots
    assert _predict(client, events[0])["model_version"] == f"boxmask-{BASE_NAME}"
    release.set()
    thread.join(30)
    assert answers and answers[0]["model_version"] == f"boxmask-{v1}"
    assert answers[0]["result"], answers[0]  # a whole answer from the old version


def test_train_every_n_annotations_starts_a_round(make_app, events, monkeypatch) -> None:
    client = make_app(train_every=5)
    _force_figures(monkeypatch, {BASE_NAME: 0.1, f"{BASE_NAME}-p1-v1": 0.2})
    answers = [_send(client, event) for event in events[:5]]
    assert all("job" not in a for a in answers[:4]) and answers[4]["job"] == "1-1"
    assert client.app.state.labelstudio_training.loop.wait_idle(60)
    assert _status(client)["jobs"][0]["state"] == "promoted"
    assert _status(client)["new_since_last_round"] == 0


@pytest.mark.parametrize("mode, reason", [
    ("fail", "exited with 3"),
    ("memory", "memory limit"),
    ("hang", "time limit"),
])
def test_a_failed_round_says_why_and_changes_nothing(make_app, events, monkeypatch, mode,
                                                     reason) -> None:
    monkeypatch.setenv("FAKE_FINETUNE_MODE", mode)
    client = make_app(train_memory_bytes=768 << 20, train_timeout_s=3.0)
    for event in events[:6]:
        _send(client, event)
    job = _train(client)
    assert job["state"] == "failed" and reason in job["reason"], job
    assert "served model is unchanged" in job["reason"] or mode == "hang"
    assert _status(client)["served"] == "base" and _status(client)["annotations"] == 6
    assert _predict(client, events[0])["model_version"] == f"boxmask-{BASE_NAME}"


def test_a_restarted_server_serves_the_promoted_version_and_marks_a_lost_round(
        make_app, events, monkeypatch, tmp_path) -> None:
    client = make_app()
    for event in events:
        _send(client, event)
    v1 = f"{BASE_NAME}-p1-v1"
    _force_figures(monkeypatch, {BASE_NAME: 0.1, v1: 0.9})
    assert _train(client)["state"] == "promoted"
    # A round that the server's stop interrupts.
    monkeypatch.setenv("FAKE_FINETUNE_MODE", "sleep")
    monkeypatch.setenv("FAKE_FINETUNE_RELEASE", str(tmp_path / "never"))
    _send(client, {"action": "START_TRAINING", "project": ls.project()})
    loop = client.app.state.labelstudio_training.loop
    deadline = time.monotonic() + 30
    while (loop._running is None or loop._running.process is None) and time.monotonic() < deadline:
        time.sleep(0.05)
    client.__exit__(None, None, None)
    again = make_app()
    assert _setup_version(again) == f"boxmask-{v1}"
    jobs = _status(again)["jobs"]
    assert jobs[0]["state"] == "interrupted", jobs[0]
    # A stopped server's project is rolled back on disk: served so when the server starts.
    from boxmask.cli import app

    runner = CliRunner()
    args = ["labelstudio", "rollback", "--project", "1", "--data-dir", str(tmp_path / "data")]
    busy = runner.invoke(app, args)
    assert busy.exit_code != 0 and "--url" in busy.output  # not while the server runs
    again.__exit__(None, None, None)
    done = runner.invoke(app, args)
    assert done.exit_code == 0 and "served base" in done.output, done.output
    assert _setup_version(make_app()) == f"boxmask-{BASE_NAME}"


def test_a_killed_real_round_loses_nothing_and_the_next_round_runs(make_app, events) -> None:
    """The real `boxmask finetune` in its subprocess: killed mid-round, then a whole round
    (train, evaluate beside the box, export, score both versions on the held-out tasks)."""
    client = make_app(train_command=[], train_iterations=12)
    for event in events:
        _send(client, event)
    answer = _send(client, {"action": "START_TRAINING", "project": ls.project()})
    loop = client.app.state.labelstudio_training.loop
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        running = loop._running
        metrics = None
        if running is not None and running.version:
            metrics = (loop.store("1").folder / "versions" / running.version / "train" /
                       "metrics.jsonl")
        if running is not None and running.process is not None and metrics and metrics.exists():
            break
        time.sleep(0.1)
    else:
        pytest.fail("the round never reached training")
    os.killpg(running.process.pid, signal.SIGKILL)
    assert loop.wait_idle(60)
    killed = _job(client, answer["job"])
    assert killed["state"] == "failed" and "SIGKILL" in killed["reason"], killed
    assert _status(client)["annotations"] == len(events)
    assert _predict(client, events[0])["model_version"] == f"boxmask-{BASE_NAME}"

    # The next round: the same annotations and base, so the same version folder, resumed.
    job = _train(client, timeout_s=300)
    assert job["version"] == killed["version"]
    assert job["state"] in ("promoted", "refused"), job
    version = job["version"]
    figures = next(v for v in _status(client)["versions"] if v["name"] == version)["figures"]
    new, old = figures["heldout"], figures["served_heldout"]
    assert new["instances"] == old["instances"] > 0 and new["box_mean_iou"] is not None
    assert (job["state"] == "promoted") == (new["mean_iou"] > old["mean_iou"])
    assert figures["finetune_evaluation"]["box_mean_iou"] is not None
    expected = version if job["state"] == "promoted" else BASE_NAME
    assert _predict(client, events[0])["model_version"] == f"boxmask-{expected}"


def _json_values():
    from hypothesis import strategies as st

    scalars = (st.none() | st.booleans() | st.integers(-3, 300) | st.text(max_size=6)
               | st.floats(allow_nan=False, allow_infinity=False))
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def test_no_webhook_body_gets_a_server_error(make_app) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    client = make_app(base_checkpoint=None)  # rounds fail at once: no checkpoint to train from
    anything = _json_values()
    ids = st.integers(1, 3) | st.text(max_size=4)
    annotation = st.fixed_dictionaries(
        {}, optional={"id": ids, "task": ids, "project": ids, "updated_at": anything,
                      "was_cancelled": anything, "result": st.lists(anything, max_size=3)
                      | anything})
    task = st.fixed_dictionaries({}, optional={"id": ids, "data": anything | st.dictionaries(
        st.just("image"), st.text(max_size=10))})
    body = st.fixed_dictionaries(
        {"action": st.sampled_from(["ANNOTATION_CREATED", "ANNOTATIONS_CREATED",
                                    "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED", "TASKS_DELETED",
                                    "START_TRAINING", "PROJECT_UPDATED"]) | anything},
        optional={"project": ids | anything | st.fixed_dictionaries({"id": ids}),
                  "annotation": annotation | st.lists(annotation, max_size=2) | anything,
                  "task": task | st.lists(task, max_size=2) | anything,
                  "annotations": st.lists(st.fixed_dictionaries({"id": ids}), max_size=2) | anything,
                  "tasks": st.lists(task, max_size=2) | anything})

    @given(body=body)
    @settings(max_examples=150, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def fuzz(body) -> None:
        response = client.post("/labelstudio/webhook", json=body, headers=AUTH)
        assert response.status_code < 500, (body, response.text)

    fuzz()
    assert client.app.state.labelstudio_training.loop.wait_idle(60)


def test_junk_regions_never_break_a_round() -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from boxmask.integrations.labelstudio.dataset import instances_of

    anything = _json_values()
    region = st.fixed_dictionaries(
        {"type": st.sampled_from(["rectanglelabels", "brushlabels", "polygonlabels"])},
        optional={"value": anything | st.fixed_dictionaries({}, optional={
            "x": anything, "y": anything, "width": anything, "height": anything,
            "rotation": anything, "rle": st.lists(st.integers(0, 255), max_size=12) | anything,
            "points": st.lists(st.lists(anything, max_size=3), max_size=5) | anything,
            "rectanglelabels": anything, "brushlabels": anything, "polygonlabels": anything}),
            "original_width": anything, "original_height": anything})

    @given(result=st.lists(region | anything, max_size=4))
    @settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def fuzz(result) -> None:
        problems: dict = {}
        for inst in instances_of(result, 32, 24, problems):
            assert inst.label and inst.box[2] > inst.box[0] and inst.box[3] > inst.box[1]

    fuzz()
