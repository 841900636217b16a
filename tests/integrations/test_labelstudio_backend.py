"""The Label Studio ML backend, driven through the boxmask app as Label Studio drives it.

Masks are compared with what `boxmask.runtime.Predictor` gives for the same box, after decoding
the brush RLE with Label Studio's own decoder (`label_studio_sdk.converter.brush`). The test
against a real Label Studio server is `test_labelstudio_live.py`.
"""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from label_studio_sdk.converter import brush
from PIL import Image

from boxmask.runtime import Predictor
from boxmask.runtime.masks import polygons_to_mask

W, H = 80, 60
CONFIG = """<View>
  <Image name="pic" value="$photo"/>
  <RectangleLabels name="boxes" toName="pic" smart="true">
    <Label value="disc"/><Label value="square"/><Label value="Triangle"/>
  </RectangleLabels>
  <BrushLabels name="masks" toName="pic">
    <Label value="disc"/><Label value="square"/><Label value="Triangle"/>
  </BrushLabels>
</View>"""
POLYGON_CONFIG = CONFIG.replace("</View>", """  <PolygonLabels name="outline" toName="pic">
    <Label value="disc"/><Label value="square"/>
  </PolygonLabels>
</View>""")


def png_bytes(seed: int = 0) -> bytes:
    rng = np.random.RandomState(seed)
    image = (rng.rand(H, W, 3) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


def data_uri(seed: int = 0) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(seed)).decode()


def region(x: float, y: float, w: float, h: float, label: str, rid: str = "r1") -> dict:
    """A smart RectangleLabels region as Label Studio sends it (percent coordinates)."""
    return {"id": rid, "type": "rectanglelabels", "from_name": "boxes", "to_name": "pic",
            "original_width": W, "original_height": H, "image_rotation": 0, "origin": "manual",
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0,
                      "rectanglelabels": [label]}}


def decode_brush(item: dict) -> np.ndarray:
    flat = brush.decode_rle(item["value"]["rle"])
    return flat.reshape(item["original_height"], item["original_width"], 4)[:, :, 3] > 0


@pytest.fixture(scope="module")
def predictor(model_dir: Path) -> Predictor:
    return Predictor.from_dir(model_dir)


def interactive(client: TestClient, regions: list[dict], image: str | None = None,
                config: str = CONFIG, task: dict | None = None):
    task = task or {"id": 7, "data": {"photo": image or data_uri()}, "annotations": [], "predictions": []}
    return client.post("/labelstudio/predict", json={
        "tasks": [task], "project": "3.1700000000", "label_config": config,
        "params": {"login": None, "password": None, "context": {"result": regions}}})


def test_health_setup_and_webhook_speak_label_studios_protocol(make_client) -> None:
    client = make_client()
    for path in ("/labelstudio/", "/labelstudio/health"):
        assert client.get(path).json()["status"] == "UP"
    setup = client.post("/labelstudio/setup", json={
        "project": "3.1700000000", "schema": CONFIG, "hostname": "http://ls:8080",
        "access_token": "tok", "extra_params": None})
    assert setup.status_code == 200 and setup.json()["model_version"].startswith("boxmask-")
    assert client.post("/labelstudio/webhook", json={"action": "ANNOTATION_CREATED"}).status_code == 201


def test_drawn_box_gets_exactly_one_brush_mask_equal_to_the_runtime_mask() -> None:
    # The bundled demo model on one of its samples: a square it segments, so the mask compared
    # is a real one (the random-weight contract model gives an empty mask for most boxes).
    from boxmask.runtime.contract import BUNDLED_MODELS_DIR
    from boxmask.server.app import create_app
    from boxmask.server.settings import LabelStudioSettings, ServerSettings

    model = BUNDLED_MODELS_DIR / "synthetic-demo"
    sample = (model / "samples" / "000003.png").read_bytes()
    width, height = Image.open(io.BytesIO(sample)).size
    box = [3.0, 97.0, 46.0, 125.0]  # the square of this sample (the detector finds it there)
    drawn = region(100 * box[0] / width, 100 * box[1] / height, 100 * (box[2] - box[0]) / width,
                   100 * (box[3] - box[1]) / height, "square")
    app = create_app(ServerSettings(model_dir=model, demo=False, log_json=False),
                     LabelStudioSettings())
    with TestClient(app) as client:
        image = "data:image/png;base64," + base64.b64encode(sample).decode()
        response = interactive(client, [drawn], image=image)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 1
    (item,) = results[0]["result"]
    # from_name / to_name come from the config, not from defaults.
    assert (item["type"], item["from_name"], item["to_name"]) == ("brushlabels", "masks", "pic")
    assert item["value"]["format"] == "rle" and item["value"]["brushlabels"] == ["square"]
    assert (item["original_width"], item["original_height"]) == (width, height)

    predictor = Predictor.from_dir(model)
    key = predictor.set_image(sample)
    expected = predictor.predict([box], labels=["square"], key=key).masks[0]
    mask = decode_brush(item)
    # The square fills most of its box: a mask, not an empty plane that would equal any other.
    assert mask.sum() > 0.5 * (box[2] - box[0]) * (box[3] - box[1])
    np.testing.assert_array_equal(mask, expected)


def test_polygon_configs_also_get_polygons_of_the_same_mask(make_client, predictor) -> None:
    client = make_client(polygon_tolerance=0.0)
    response = interactive(client, [region(10, 10, 80, 80, "disc")], config=POLYGON_CONFIG)
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]["result"]
    brushes = [r for r in result if r["type"] == "brushlabels"]
    polygons = [r for r in result if r["type"] == "polygonlabels"]
    assert len(brushes) == 1
    mask = decode_brush(brushes[0])
    assert mask.any(), "random-weight model gave an empty mask; pick a larger box"
    assert polygons and all(p["from_name"] == "outline" and p["value"]["polygonlabels"] == ["disc"]
                            for p in polygons)
    pixel_polygons = [[c for x, y in p["value"]["points"] for c in (x * W / 100, y * H / 100)]
                      for p in polygons]
    redrawn = polygons_to_mask(pixel_polygons, H, W)
    # Polygons lose holes and sub-pixel detail; they must still cover the same object.
    iou = (redrawn & mask).sum() / (redrawn | mask).sum()
    assert iou > 0.8


def test_unknown_label_is_a_clear_422_naming_the_model_categories(make_client) -> None:
    client = make_client()
    response = interactive(client, [region(10, 20, 50, 40, "zebra")])
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "unknown_label"
    assert "zebra" in error["message"] and "disc" in error["message"]
    assert "BOXMASK_LABELSTUDIO_LABEL_MAP" in error["message"]


def test_label_map_and_case_folding_reach_the_model_category(make_client, predictor) -> None:
    client = make_client(label_map={"zebra": "disc"})
    mapped = interactive(client, [region(10, 20, 50, 40, "zebra")])
    assert mapped.status_code == 200, mapped.text
    key = predictor.set_image(png_bytes())
    disc = predictor.predict([[8.0, 12.0, 48.0, 36.0]], labels=["disc"], key=key).masks[0]
    (item,) = mapped.json()["results"][0]["result"]
    np.testing.assert_array_equal(decode_brush(item), disc)
    # "Triangle" in the config, "triangle" in the model.
    folded = interactive(client, [region(10, 20, 50, 40, "Triangle")])
    assert folded.status_code == 200, folded.text
    assert folded.json()["results"][0]["result"][0]["value"]["brushlabels"] == ["Triangle"]


def test_a_keypoint_without_a_box_is_refused_with_a_reason(make_client) -> None:
    client = make_client()
    point = {"id": "k", "type": "keypointlabels", "from_name": "kp", "to_name": "pic",
             "original_width": W, "original_height": H,
             "value": {"x": 5, "y": 5, "keypointlabels": ["disc"]}}
    response = interactive(client, [point])
    assert response.status_code == 422
    assert "RectangleLabels" in response.json()["error"]["message"]


def test_stored_rectangles_get_a_mask_each_and_the_context_wins_over_them(make_client, predictor) -> None:
    client = make_client()
    stored = [region(5, 5, 40, 40, "disc", "a"), region(50, 40, 45, 55, "square", "b")]
    task = {"id": 9, "data": {"photo": data_uri()},
            "annotations": [{"id": 1, "result": stored, "was_cancelled": False}], "predictions": []}
    response = client.post("/labelstudio/predict", json={
        "tasks": [task], "project": "3.1", "label_config": CONFIG, "params": {"context": None}})
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]["result"]
    assert [r["value"]["brushlabels"] for r in result] == [["disc"], ["square"]]
    key = predictor.set_image(png_bytes())
    boxes = [[4.0, 3.0, 36.0, 27.0], [40.0, 24.0, 76.0, 57.0]]
    expected = predictor.predict(boxes, labels=["disc", "square"], key=key).masks
    for item, mask in zip(result, expected, strict=True):
        np.testing.assert_array_equal(decode_brush(item), mask)

    # Interactive: only the drawn region is answered, not the task's stored boxes.
    drawn = interactive(client, [region(10, 20, 50, 40, "square")], task=task)
    assert len(drawn.json()["results"][0]["result"]) == 1


def test_tasks_without_boxes_get_detector_boxes_and_masks(make_client, predictor) -> None:
    client = make_client(score_threshold=0.0, max_detections=5)
    task = {"id": 11, "data": {"photo": data_uri(3)}, "annotations": [], "predictions": []}
    response = client.post("/labelstudio/predict", json={
        "tasks": [task], "project": "3.1", "label_config": CONFIG, "params": {"context": None}})
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]["result"]
    detections = predictor.detect(image=png_bytes(3), score_threshold=0.0, max_detections=5)
    assert len(detections) > 0
    rects = [r for r in result if r["type"] == "rectanglelabels"]
    masks = [r for r in result if r["type"] == "brushlabels"]
    assert len(rects) == len(masks) == len(detections)
    for rect, item, mask, name, box in zip(rects, masks, detections.masks, detections.names, detections.boxes, strict=True):
        assert rect["from_name"] == "boxes" and item["from_name"] == "masks"
        assert item["value"]["brushlabels"][0].casefold() == name
        assert rect["value"]["x"] == pytest.approx(100 * box[0] / W, abs=1e-4)
        np.testing.assert_array_equal(decode_brush(item), mask)


def test_one_bad_task_does_not_sink_the_others_in_a_batch(make_client) -> None:
    client = make_client()
    good = {"id": 1, "data": {"photo": data_uri()},
            "predictions": [{"id": 4, "result": [region(10, 20, 50, 40, "disc")]}]}
    bad = {"id": 2, "data": {"photo": data_uri()},
           "predictions": [{"id": 5, "result": [region(10, 20, 50, 40, "zebra")]}]}
    response = client.post("/labelstudio/predict", json={
        "tasks": [good, bad], "project": "3.1", "label_config": CONFIG, "params": {"context": None}})
    assert response.status_code == 200
    first, second = response.json()["results"]
    assert len(first["result"]) == 1
    # No "result": Label Studio stores nothing for the task, so a retry can answer it later.
    assert "result" not in second and "zebra" in second["error"]


def test_config_without_a_mask_control_is_refused(make_client) -> None:
    client = make_client()
    only_boxes = CONFIG.split("<BrushLabels")[0] + "</View>"
    response = interactive(client, [region(10, 20, 50, 40, "disc")], config=only_boxes)
    assert response.status_code == 422
    assert "BrushLabels" in response.json()["error"]["message"]


class _Uploads(BaseHTTPRequestHandler):
    """Serves one image under /data/upload/ to requests carrying `Token good` (a local HTTP
    file server standing in for Label Studio's upload URL, not a Label Studio)."""

    body = png_bytes()
    hits = 0

    def do_GET(self) -> None:  # http.server's naming
        type(self).hits += 1
        if self.headers.get("Authorization") != "Token good":
            self.send_response(401)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def uploads() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Uploads)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Uploads.hits = 0
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_uploaded_images_are_fetched_once_with_the_token_setup_sent(make_client, uploads) -> None:
    client = make_client(trust_setup_hostname=True)
    client.post("/labelstudio/setup", json={"project": "3.17", "schema": CONFIG,
                                            "hostname": uploads, "access_token": "good"})
    task = {"id": 7, "data": {"photo": "/data/upload/3/a.png"}}
    for x in (10, 40):  # two boxes on one image: one download, one encoder run
        response = interactive(client, [region(x, 20, 30, 40, "disc")], task=task)
        assert response.status_code == 200, response.text
    assert _Uploads.hits == 1


def test_a_refused_token_and_an_oversized_image_are_reported(make_client, uploads, caplog) -> None:
    # The caller gets one generic line; the reason is in the server's log.
    client = make_client(trust_setup_hostname=True)
    client.post("/labelstudio/setup", json={"project": "3.17", "schema": CONFIG,
                                            "hostname": uploads, "access_token": "wrong"})
    task = {"id": 7, "data": {"photo": "/data/upload/3/a.png"}}
    refused = interactive(client, [region(10, 20, 30, 40, "disc")], task=task)
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "image_fetch_failed"
    assert "HTTP 401" not in refused.text
    assert any("HTTP 401" in str(getattr(r, "detail", "")) for r in caplog.records)

    small = make_client(max_image_bytes=1024, url=uploads, api_key="good")
    too_big = interactive(small, [region(10, 20, 30, 40, "disc")], task=task)
    assert too_big.status_code == 422 and too_big.json()["error"]["code"] == "image_fetch_failed"
    assert any("limit" in str(getattr(r, "detail", "")) for r in caplog.records)


def test_malformed_tasks_get_their_own_error_and_the_others_an_answer(make_client) -> None:
    client = make_client()
    fine = {"id": 3, "data": {"photo": data_uri()}, "annotations": [1, {"result": "x"}]}
    response = client.post("/labelstudio/predict", json={
        "tasks": [1, {"id": 2, "data": "x"}, fine], "project": "3.1", "label_config": CONFIG})
    assert response.status_code == 200, response.text
    not_object, no_data, answered = response.json()["results"]
    assert "JSON object" in not_object["error"] and "data" in no_data["error"]
    assert "result" in answered  # junk annotations are ignored: the detector answers
    bad_config = client.post("/labelstudio/predict", json={"tasks": [fine], "label_config": 5})
    assert bad_config.status_code == 422, bad_config.text


def test_a_backend_outage_is_a_503_and_fails_readiness(make_client) -> None:
    from boxmask.runtime.errors import BackendUnavailable

    client = make_client()
    predictor = client.app.state.registry.slot(None).predictor

    class LostEncoder:
        def run(self, inputs, outputs=None):
            raise BackendUnavailable("encoder session lost (injected)")

    predictor.encoder = LostEncoder()
    response = interactive(client, [region(10, 20, 50, 40, "disc")], image=data_uri(seed=9))
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "backend_unavailable"
    assert client.app.state.registry.readiness()[0] is False


class _SlowImage(BaseHTTPRequestHandler):
    """An image server that takes a second per image."""

    def do_GET(self) -> None:  # http.server's naming
        import time

        time.sleep(1.0)
        body = png_bytes(seed=3)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_slow_image_downloads_hold_no_inference_slot(make_client) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowImage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/img.png"
    # One slot, and a request gives up after 0.3 s in the queue.
    client = make_client(server={"max_concurrency": 1, "queue_timeout_s": 0.3},
                         allowed_origins=[url.rsplit("/", 1)[0]])
    statuses: list[int] = []

    def label_studio() -> None:
        r = client.post("/labelstudio/predict", json={
            "tasks": [{"id": 1, "data": {"photo": url}}, {"id": 2, "data": {"photo": url + "?2"}}],
            "project": "3.1", "label_config": CONFIG})
        statuses.append(r.status_code)

    try:
        thread = threading.Thread(target=label_studio)
        thread.start()
        import time

        time.sleep(0.3)  # Label Studio's request is downloading now
        image = base64.b64encode(png_bytes(seed=4)).decode()
        during = client.post("/v1/segment", json={"image": image, "boxes": [[5, 5, 40, 40]]})
        thread.join()
    finally:
        server.shutdown()
        server.server_close()
    assert during.status_code == 200, during.text
    assert statuses == [200]
