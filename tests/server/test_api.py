"""The API's working paths, through the real app (TestClient) over the contract model."""

from __future__ import annotations

import base64
import hashlib
import io

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image
from pycocotools import mask as mask_utils

from boxmask.runtime.masks import polygons_to_mask
from tests.server.conftest import IMAGE_H, IMAGE_W, png_bytes

BOXES = [[10.0, 12.0, 60.0, 70.0], [40.0, 20.0, 120.0, 90.0], [0.0, 0.0, 30.0, 30.0]]


def decode_rle(mask: dict) -> np.ndarray:
    return mask_utils.decode({"size": mask["size"], "counts": mask["counts"].encode()}).astype(bool)


def test_image_id_is_the_sha256_of_the_uploaded_bytes(client: TestClient) -> None:
    data = png_bytes(seed=3)
    raw = client.post("/v1/images", content=data, headers={"content-type": "image/png"})
    form = client.post("/v1/images", files={"image": ("x.png", data, "image/png")})
    assert raw.status_code == form.status_code == 200, (raw.text, form.text)
    assert raw.json()["image_id"] == form.json()["image_id"] == hashlib.sha256(data).hexdigest()
    assert (raw.json()["height"], raw.json()["width"]) == (IMAGE_H, IMAGE_W)


def test_rle_masks_decode_with_pycocotools_to_the_image_size_inside_their_box(
        client: TestClient, image_id: str) -> None:
    r = client.post("/v1/segment", json={"image_id": image_id, "boxes": BOXES})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["height"], body["width"]) == (IMAGE_H, IMAGE_W)
    assert len(body["instances"]) == len(BOXES)
    assert any(decode_rle(inst["mask"]).any() for inst in body["instances"])
    for inst, box in zip(body["instances"], BOXES, strict=True):
        assert inst["mask"]["format"] == "rle"
        mask = decode_rle(inst["mask"])
        assert mask.shape == (IMAGE_H, IMAGE_W)
        assert inst["box"] == box
        ys, xs = np.nonzero(mask)
        if len(xs):  # random weights may give an empty mask; a non-empty one stays in its box
            assert xs.min() >= np.floor(box[0]) and xs.max() < np.ceil(box[2])
            assert ys.min() >= np.floor(box[1]) and ys.max() < np.ceil(box[3])


def test_image_id_base64_and_multipart_give_the_same_masks(client: TestClient, image_id: str) -> None:
    data = png_bytes()
    by_id = client.post("/v1/segment", json={"image_id": image_id, "boxes": BOXES[:2]})
    by_b64 = client.post("/v1/segment", json={"image": base64.b64encode(data).decode(),
                                              "boxes": BOXES[:2]})
    data_url = "data:image/png;base64," + base64.b64encode(data).decode()
    by_url = client.post("/v1/segment", json={"image": data_url, "boxes": BOXES[:2]})
    by_form = client.post("/v1/segment", files={"image": ("x.png", data, "image/png")},
                          data={"boxes": "[[10, 12, 60, 70], [40, 20, 120, 90]]"})
    for r in (by_id, by_b64, by_url, by_form):
        assert r.status_code == 200, r.text
    assert by_id.json() == by_b64.json() == by_url.json() == by_form.json()


def test_xywh_boxes_mean_the_same_as_xyxy(client: TestClient, image_id: str) -> None:
    xywh = [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in BOXES]
    a = client.post("/v1/segment", json={"image_id": image_id, "boxes": BOXES})
    b = client.post("/v1/segment", json={"image_id": image_id, "boxes": xywh, "box_format": "xywh"})
    assert a.status_code == b.status_code == 200
    assert a.json() == b.json()


def card_categories(client: TestClient) -> list[dict]:
    return client.get("/v1/models").json()["models"][0]["card"]["categories"]


def test_labels_by_name_or_id_are_used_and_null_uses_the_predicted_class(
        client: TestClient, image_id: str) -> None:
    cats = card_categories(client)
    r = client.post("/v1/segment", json={"image_id": image_id, "boxes": BOXES,
                                         "labels": [cats[1]["name"], cats[-1]["id"], None]})
    assert r.status_code == 200, r.text
    got = r.json()["instances"]
    assert (got[0]["label"], got[0]["category_id"]) == (cats[1]["name"], cats[1]["id"])
    assert (got[1]["label"], got[1]["category_id"]) == (cats[-1]["name"], cats[-1]["id"])
    assert got[2]["category_id"] in {c["id"] for c in cats} and 0.0 <= got[2]["score"] <= 1.0
    unlabeled = client.post("/v1/segment", json={"image_id": image_id, "boxes": BOXES[2:]})
    # The same box without a label gets the same predicted class as with an explicit null.
    assert unlabeled.json()["instances"][0]["category_id"] == got[2]["category_id"]


def test_polygon_and_png_masks_match_the_rle_mask(client: TestClient, image_id: str) -> None:
    name = card_categories(client)[0]["name"]

    def masks(fmt: str) -> list[dict]:
        r = client.post("/v1/segment", json={"image_id": image_id, "boxes": BOXES[:2],
                                             "labels": [name, name], "mask_format": fmt})
        assert r.status_code == 200, r.text
        return [i["mask"] for i in r.json()["instances"]]

    for rle, poly, png in zip(masks("rle"), masks("polygons"), masks("png"), strict=True):
        reference = decode_rle(rle)
        as_png = np.asarray(Image.open(io.BytesIO(base64.b64decode(png["data"])))) > 0
        np.testing.assert_array_equal(as_png, reference)
        as_poly = polygons_to_mask(poly["polygons"], *poly["size"])
        # Polygons drop holes and trace pixel centres: close to the RLE, not identical.
        if reference.any():
            iou = (as_poly & reference).sum() / max((as_poly | reference).sum(), 1)
            assert iou > 0.6


def test_all_boxes_of_a_call_go_through_the_decoder_once(client: TestClient, image_id: str) -> None:
    predictor = client.app.state.registry.slot(None).predictor
    real = predictor.decoder
    calls: list[int] = []

    class CountingDecoder:  # delegates to the real ONNX Runtime session, counting its runs
        def run(self, inputs, outputs=None):
            calls.append(len(inputs["boxes"]))
            return real.run(inputs, outputs)

        def __getattr__(self, name):
            return getattr(real, name)

    predictor.decoder = CountingDecoder()
    try:
        r = client.post("/v1/segment", json={"image_id": image_id, "boxes": BOXES * 3})
    finally:
        predictor.decoder = real
    assert r.status_code == 200, r.text
    assert calls == [len(BOXES) * 3]


def test_detect_respects_threshold_and_max_detections(client: TestClient, image_id: str) -> None:
    r = client.post("/v1/detect", json={"image_id": image_id, "score_threshold": 0.0,
                                        "max_detections": 2})
    assert r.status_code == 200, r.text
    found = r.json()["instances"]
    assert len(found) <= 2
    scores = [i["score"] for i in found]
    assert scores == sorted(scores, reverse=True)
    high = client.post("/v1/detect", json={"image_id": image_id, "score_threshold": 1.0})
    assert high.status_code == 200
    assert all(i["score"] >= 1.0 for i in high.json()["instances"])
    form = client.post("/v1/detect", files={"image": ("x.png", png_bytes(), "image/png")},
                       data={"score_threshold": "0.0", "max_detections": "2"})
    assert form.status_code == 200, form.text
    assert form.json()["instances"] == found


def test_models_lists_the_card_and_its_categories(client: TestClient) -> None:
    r = client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    (model,) = body["models"]
    assert body["default"] == model["name"] and model["default"] and model["status"] == "ready"
    card = model["card"]
    assert [(c["id"], c["name"]) for c in model["categories"]] == [
        (c["id"], c["name"]) for c in card["categories"]]
    assert card["format_version"] == 2 and card["name"] == model["name"]


def test_health_readiness_metrics_and_docs(client: TestClient, image_id: str) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    client.post("/v1/segment", json={"image_id": image_id, "boxes": BOXES[:1]})
    text = client.get("/metrics").text
    assert 'boxmask_http_requests_total{method="POST",route="/v1/segment",status="200"}' in text
    assert 'boxmask_http_request_duration_seconds_bucket{le="0.01",method="POST",route="/v1/segment"}' in text
    for name in ("boxmask_cache_hits_total", "boxmask_cache_misses_total", "boxmask_cache_bytes",
                 "boxmask_queue_depth"):
        assert name in text, name
    hits = [line for line in text.splitlines() if line.startswith("boxmask_cache_hits_total{")]
    assert float(hits[0].split()[-1]) >= 1
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/images", "/v1/segment", "/v1/detect", "/v1/models"} <= set(paths)
    assert set(paths["/v1/segment"]["post"]["requestBody"]["content"]) == {
        "application/json", "multipart/form-data"}


def test_request_ids_are_echoed_or_made(client: TestClient) -> None:
    mine = client.get("/healthz", headers={"X-Request-ID": "client-42"})
    assert mine.headers["x-request-id"] == "client-42"
    made = client.get("/healthz", headers={"X-Request-ID": "bad id\nwith newline"})
    assert made.headers["x-request-id"] != "bad id\nwith newline"
    assert len(made.headers["x-request-id"]) == 32


def test_demo_page_and_its_assets_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/static/demo.js" in page.text
    assert client.get("/static/demo.js").status_code == 200
    assert client.get("/static/demo.css").status_code == 200
