"""boxmask as the ML backend of a real Label Studio (1.23.2, started headless for this module).

Label Studio runs from its own venv (`scripts/install_labelstudio.sh`, which `.ci/run` calls);
boxmask runs in a real uvicorn process. Everything goes through Label Studio's API: a project
with a smart RectangleLabels + BrushLabels config, uploaded images, the backend connected with
`POST /api/ml`, the interactive call the UI makes when a box is drawn, and "Retrieve
Predictions", whose stored results are read back and decoded with Label Studio's brush decoder.

Without the Label Studio venv the module is skipped locally and FAILS in CI (CI=true,
tests/peers.py): a CI run must not pass without having talked to a real Label Studio.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from label_studio_sdk.converter import brush
from PIL import Image

from boxmask.runtime import Predictor
from tests.peers import peer_missing
from tests.processes import free_port, stop_process

pytestmark = pytest.mark.labelstudio

ROOT = Path(__file__).resolve().parents[2]
LS_VENV = Path(os.environ.get("BOXMASK_LABELSTUDIO_VENV", ROOT / ".venv-labelstudio"))
LS_BIN = LS_VENV / "bin" / "label-studio"
TOKEN = "boxmask-ci-token-0123456789"
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="box" toName="image" smart="true">
    <Label value="disc"/><Label value="square"/>
  </RectangleLabels>
  <BrushLabels name="mask" toName="image">
    <Label value="disc"/><Label value="square"/>
  </BrushLabels>
</View>"""
W, H = 96, 64



def wait_for(url: str, proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not come up in {timeout_s} s:\n{log.read_text()[-3000:]}")



def image_bytes(seed: int) -> bytes:
    rng = np.random.RandomState(seed)
    buf = io.BytesIO()
    Image.fromarray((rng.rand(H, W, 3) * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not LS_BIN.exists():
        message = (f"Label Studio is not installed in {LS_VENV}: run scripts/install_labelstudio.sh "
                   "(about 2.5 minutes)")
        peer_missing(message)
    data = tmp_path_factory.mktemp("label_studio") / "data"
    template = LS_VENV / "template-data"
    if (template / ".migrated").exists():  # made by the install script: skips the migrations
        shutil.copytree(template, data)
    else:
        data.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO", "DJANGO"))}
    env.update({
        "LABEL_STUDIO_USERNAME": "ci@boxmask.local", "LABEL_STUDIO_PASSWORD": "boxmask-ci-pass",
        "LABEL_STUDIO_USER_TOKEN": TOKEN, "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_BASE_DATA_DIR": str(data),
        # What Label Studio sends the backend in /setup as the place to fetch uploads from.
        "LABEL_STUDIO_HOST": url,
        # 1.23 refuses ML backends on local addresses unless told otherwise.
        "ML_BLOCK_LOCAL_IP": "false", "SSRF_PROTECTION_ENABLED": "false",
        "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "",
    })
    log = data / "label-studio.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(LS_BIN), "start", "--no-browser", "--internal-host", "127.0.0.1",
                                 "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=data)
    try:
        wait_for(f"{url}/health", proc, log, timeout_s=480)
        yield url
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def boxmask_url(model_dir: Path, label_studio: str,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with _boxmask(model_dir, label_studio, tmp_path_factory) as url:
        yield url


@pytest.fixture(scope="module")
def boxmask_quality_url(quality_model_dir: Path, label_studio: str,
                        tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """boxmask serving a model with the mask-quality head."""
    with _boxmask(quality_model_dir, label_studio, tmp_path_factory) as url:
        yield url


@contextlib.contextmanager
def _boxmask(model_dir: Path, label_studio: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``model_dir`` served by boxmask in a uvicorn process, fetching from ``label_studio``."""
    port = free_port()
    log = tmp_path_factory.mktemp("boxmask") / "uvicorn.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO", "BOXMASK_"))}
    env.update({"BOXMASK_MODEL_DIR": str(model_dir), "BOXMASK_DEMO": "false",
                "BOXMASK_LABELSTUDIO_SCORE_THRESHOLD": "0", "BOXMASK_LABELSTUDIO_MAX_DETECTIONS": "3",
                # Images are fetched only from the Label Studio the operator names (the token
                # still comes from /setup).
                "LABEL_STUDIO_URL": label_studio,
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


@pytest.fixture(scope="module")
def ls(label_studio: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=label_studio, headers={"Authorization": f"Token {TOKEN}"},
                      timeout=120) as client:
        yield client


def ok(response: httpx.Response) -> dict | list:
    assert response.status_code < 300, f"{response.request.url}: {response.status_code} {response.text[:2000]}"
    return response.json()


def brush_mask(item: dict) -> np.ndarray:
    flat = brush.decode_rle(item["value"]["rle"])
    return flat.reshape(item["original_height"], item["original_width"], 4)[:, :, 3] > 0


def pixels(value: dict) -> list[float]:
    """Label Studio's percent box -> xyxy pixels, the same arithmetic as the backend's."""
    x, y = value["x"] / 100 * W, value["y"] / 100 * H
    return [x, y, x + value["width"] / 100 * W, y + value["height"] / 100 * H]


def test_label_studio_stores_boxmask_masks_for_drawn_and_stored_boxes(ls, boxmask_url, model_dir) -> None:
    project = ok(ls.post("/api/projects", json={"title": "boxmask", "label_config": CONFIG}))
    pid = project["id"]
    # One form field per file: Label Studio reads request.FILES by field name.
    files = {f"file{i}": (f"img{i}.png", image_bytes(i), "image/png") for i in range(2)}
    ok(ls.post(f"/api/projects/{pid}/import", files=files))
    tasks = sorted(ok(ls.get("/api/tasks", params={"project": pid}))["tasks"], key=lambda t: t["id"])
    assert len(tasks) == 2 and tasks[0]["data"]["image"].startswith("/data/upload/")

    backend = ok(ls.post("/api/ml", json={"project": pid, "url": f"{boxmask_url}/labelstudio",
                                          "title": "boxmask", "is_interactive": True}))
    state = ok(ls.get(f"/api/ml/{backend['id']}"))
    assert state["state"] in ("CO", "connected"), state  # health + setup answered

    predictor = Predictor.from_dir(model_dir)

    # 1. What the UI sends when an annotator finishes drawing a smart box.
    drawn = {"id": "drawn1", "type": "rectanglelabels", "from_name": "box", "to_name": "image",
             "original_width": W, "original_height": H, "image_rotation": 0, "origin": "manual",
             "value": {"x": 12.5, "y": 15.0, "width": 50.0, "height": 60.0, "rotation": 0,
                       "rectanglelabels": ["square"]}}
    answer = ok(ls.post(f"/api/ml/{backend['id']}/interactive-annotating",
                        json={"task": tasks[0]["id"], "context": {"result": [drawn]}}))
    assert not answer.get("errors"), answer
    (item,) = answer["data"]["result"]
    assert item["type"] == "brushlabels" and item["value"]["brushlabels"] == ["square"]
    key = predictor.set_image(image_bytes(0))
    expected = predictor.predict([pixels(drawn["value"])], labels=["square"], key=key).masks[0]
    np.testing.assert_array_equal(brush_mask(item), expected)

    # 2. A stored box on task 0, none on task 1; then the Data Manager's "Retrieve Predictions".
    stored = dict(drawn, id="stored1", value=dict(drawn["value"], x=30.0, rectanglelabels=["disc"]))
    ok(ls.post(f"/api/tasks/{tasks[0]['id']}/annotations", json={"result": [stored]}))
    ok(ls.post("/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": pid},
               json={"selectedItems": {"all": True, "excluded": []}}))

    predictions = {t["id"]: ok(ls.get("/api/predictions", params={"task": t["id"]})) for t in tasks}
    (boxed,) = predictions[tasks[0]["id"]]
    (item,) = boxed["result"]
    assert boxed["model_version"].startswith("boxmask-")
    assert item["value"]["brushlabels"] == ["disc"]
    expected = predictor.predict([pixels(stored["value"])], labels=["disc"], key=key).masks[0]
    np.testing.assert_array_equal(brush_mask(item), expected)

    (detected,) = predictions[tasks[1]["id"]]
    detections = predictor.detect(image=image_bytes(1), score_threshold=0.0, max_detections=3)
    masks = [r for r in detected["result"] if r["type"] == "brushlabels"]
    boxes = [r for r in detected["result"] if r["type"] == "rectanglelabels"]
    labelled = [i for i, name in enumerate(detections.names) if name in ("disc", "square")]
    assert len(masks) == len(boxes) == len(labelled)
    for item, i in zip(masks, labelled, strict=True):
        np.testing.assert_array_equal(brush_mask(item), detections.masks[i])


def test_label_studio_sorts_tasks_by_boxmasks_mask_quality(ls, boxmask_quality_url,
                                                          quality_model_dir, tiny_dataset) -> None:
    """With the mask-quality head, "Retrieve Predictions" stores each task's lowest mask quality
    as its prediction score, and Label Studio's own ordering by "Prediction score"
    (`tasks:predictions_score`, ascending) lists the task with the worst mask first, once the
    project uses boxmask's model version for its predictions (Settings -> Annotation ->
    Prelabeling): Label Studio 1.23.2 averages only the scores of the project's model version,
    which connecting a backend sets to the backend's title."""
    project = ok(ls.post("/api/projects", json={"title": "quality", "label_config": CONFIG}))
    pid = project["id"]
    paths = sorted((tiny_dataset / "images" / "val").glob("*.png"))[:3]
    files = {f"file{i}": (p.name, p.read_bytes(), "image/png") for i, p in enumerate(paths)}
    ok(ls.post(f"/api/projects/{pid}/import", files=files))
    tasks = sorted(ok(ls.get("/api/tasks", params={"project": pid}))["tasks"], key=lambda t: t["id"])
    assert len(tasks) == len(paths)
    size = 64  # the tiny dataset's images
    boxes = [[[2, 2, 40, 30], [10, 8, 60, 58]], [[0, 0, 64, 64]], [[5, 30, 50, 62], [1, 1, 30, 30]]]
    for task, task_boxes in zip(tasks, boxes, strict=True):
        result = [{"id": f"b{i}", "type": "rectanglelabels", "from_name": "box", "to_name": "image",
                   "original_width": size, "original_height": size, "image_rotation": 0,
                   "value": {"x": 100 * x1 / size, "y": 100 * y1 / size,
                             "width": 100 * (x2 - x1) / size, "height": 100 * (y2 - y1) / size,
                             "rotation": 0, "rectanglelabels": ["disc"]}}
                  for i, (x1, y1, x2, y2) in enumerate(task_boxes)]
        ok(ls.post(f"/api/tasks/{task['id']}/annotations", json={"result": result}))
    ok(ls.post("/api/ml", json={"project": pid, "url": f"{boxmask_quality_url}/labelstudio",
                                "title": "boxmask", "is_interactive": True}))
    ok(ls.post("/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": pid},
               json={"selectedItems": {"all": True, "excluded": []}}))

    predictor = Predictor.from_dir(quality_model_dir)
    worst, versions = {}, set()
    for task, path, task_boxes in zip(tasks, paths, boxes, strict=True):
        (prediction,) = ok(ls.get("/api/predictions", params={"task": task["id"]}))
        quality = predictor.predict(task_boxes, labels=["disc"] * len(task_boxes),
                                    key=predictor.set_image(path.read_bytes())).quality
        assert [r["score"] for r in prediction["result"]] == pytest.approx(quality.tolist(),
                                                                           abs=1e-5)
        assert prediction["score"] == pytest.approx(float(quality.min()), abs=1e-5)
        worst[task["id"]] = float(quality.min())
        versions.add(prediction["model_version"])
    assert len(set(worst.values())) == len(worst)

    def by_prediction_score() -> list[tuple[int, float | None]]:
        query = json.dumps({"ordering": ["tasks:predictions_score"]})
        listed = ok(ls.get("/api/tasks", params={"project": pid, "query": query,
                                                 "fields": "all"}))["tasks"]
        return [(t["id"], t.get("predictions_score")) for t in listed]

    # As connected, the project's model version is the backend's title: no score counts yet.
    assert ok(ls.get(f"/api/projects/{pid}"))["model_version"] == "boxmask"
    assert all(score is None for _, score in by_prediction_score())
    (version,) = versions
    ok(ls.patch(f"/api/projects/{pid}", json={"model_version": version}))
    ranked = by_prediction_score()
    assert [task_id for task_id, _ in ranked] == sorted(worst, key=worst.get)
    assert [score for _, score in ranked] == pytest.approx(sorted(worst.values()), abs=1e-5)
