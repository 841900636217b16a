"""Settings and inputs at their edges: no encoder cache, a model without a detector, JSON
booleans where numbers belong, large text parts, an unexpected error, metric labels."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from boxmask.server import create_app
from tests.conftest import copy_without_detector
from tests.server.conftest import assert_error, make_settings, png_bytes

BOX = [10.0, 10.0, 50.0, 50.0]


def test_without_an_encoder_cache_every_route_still_answers(model_dir: Path) -> None:
    with TestClient(create_app(make_settings(model_dir, cache_bytes=0))) as client:
        image = base64.b64encode(png_bytes()).decode()
        r = client.post("/v1/segment", json={"image": image, "boxes": [BOX]})
        assert r.status_code == 200, r.text
        assert len(r.json()["instances"]) == 1
        r = client.post("/v1/segment", json={"image": image, "boxes": [BOX], "clip_boxes": False})
        assert r.status_code == 200, r.text
        up = client.post("/v1/images", content=png_bytes(), headers={"content-type": "image/png"})
        assert up.status_code == 200, up.text
        assert client.post("/v1/detect", json={"image": image}).status_code == 200
        # Nothing is kept, so an id sent back later is unknown: the documented 404.
        assert_error(client.post("/v1/segment", json={"image_id": up.json()["image_id"],
                                                      "boxes": [BOX]}), 404, "unknown_image")


def test_detect_on_a_model_without_a_detector_is_a_4xx_and_the_model_stays_ready(
        model_dir: Path, tmp_path: Path) -> None:
    no_detector = copy_without_detector(model_dir, tmp_path / "no_detector")
    with TestClient(create_app(make_settings(no_detector))) as client:
        image = base64.b64encode(png_bytes()).decode()
        err = assert_error(client.post("/v1/detect", json={"image": image}), 422, "no_detector")
        assert "give boxes" in err["message"]
        assert client.get("/readyz").status_code == 200
        assert client.post("/v1/segment", json={"image": image, "boxes": [BOX]}).status_code == 200


def test_json_booleans_are_not_labels_or_coordinates(client: TestClient) -> None:
    image = base64.b64encode(png_bytes()).decode()
    assert_error(client.post("/v1/segment", json={"image": image, "boxes": [BOX], "labels": [True]}),
                 422, "invalid_request")
    assert_error(client.post("/v1/segment", json={"image": image, "boxes": [[True, 1, 50, 50]]}),
                 422, "invalid_request")
    # Integers are still coordinates, and ids still labels.
    r = client.post("/v1/segment", json={"image": image, "boxes": [[10, 10, 50, 50]], "labels": [None]})
    assert r.status_code == 200, r.text


def test_a_base64_image_field_over_a_megabyte_is_accepted_in_multipart(client: TestClient) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (600, 800, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG")
    text = base64.b64encode(buf.getvalue()).decode()
    assert len(text) > 1 << 20
    boundary = "boxmask-test-boundary"
    body = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
                   for name, value in (("image", text), ("boxes", json.dumps([BOX]))))
    body += f"--{boundary}--\r\n"
    r = client.post("/v1/segment", content=body.encode(),
                    headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 200, r.text
    assert r.json()["width"] == 800


def test_an_unexpected_error_is_a_500_with_the_request_id(model_dir: Path) -> None:
    with TestClient(create_app(make_settings(model_dir)), raise_server_exceptions=False) as client:
        predictor = client.app.state.registry.slot(None).predictor

        def broken(*args: object, **kwargs: object) -> None:
            raise KeyError("a bug (injected)")

        predictor.predict = broken  # type: ignore[method-assign]
        r = client.post("/v1/segment", json={"image": base64.b64encode(png_bytes()).decode(),
                                             "boxes": [BOX]}, headers={"x-request-id": "req-42"})
        err = assert_error(r, 500, "internal_error")
        assert "request id" in err["message"]
        assert r.headers["x-request-id"] == "req-42"
        assert client.get("/healthz").status_code == 200


def test_metrics_count_one_cache_lookup_per_image_and_keep_route_prefixes(model_dir: Path) -> None:
    with TestClient(create_app(make_settings(model_dir))) as client:
        for seed in range(3):
            image = base64.b64encode(png_bytes(seed=seed)).decode()
            assert client.post("/v1/segment", json={"image": image, "boxes": [BOX]}).status_code == 200
        image_id = client.post("/v1/images", content=png_bytes(seed=0),
                               headers={"content-type": "image/png"}).json()["image_id"]
        assert client.post("/v1/segment", json={"image_id": image_id, "boxes": [BOX]}).status_code == 200
        client.get("/labelstudio/health")
        text = client.get("/metrics").text
        lines = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
                 if line and not line.startswith("#")}
        misses = [v for k, v in lines.items() if k.startswith("boxmask_cache_misses_total")]
        assert misses == [3.0]
        hits = [v for k, v in lines.items() if k.startswith("boxmask_cache_hits_total")]
        assert hits == [2.0]  # the upload of a known image, then its id sent back
        assert any('route="/labelstudio/health"' in k for k in lines), text
