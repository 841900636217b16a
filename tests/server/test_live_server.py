"""End to end: ``boxmask serve`` in its own process, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import httpx
import numpy as np
from pycocotools import mask as mask_utils

from tests.server.conftest import IMAGE_H, IMAGE_W, LiveServer, png_bytes


def test_upload_then_segment_over_http_with_request_ids_in_json_logs(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url, timeout=60) as http:
        up = http.post("/v1/images", content=png_bytes(seed=21),
                       headers={"content-type": "image/png", "X-Request-ID": "e2e-upload"})
        assert up.status_code == 200, up.text
        assert up.headers["x-request-id"] == "e2e-upload"
        r = http.post("/v1/segment", json={"image_id": up.json()["image_id"],
                                           "boxes": [[8, 8, 70, 60], [30, 20, 120, 90]],
                                           "labels": ["disc", None]})
        assert r.status_code == 200, r.text
        for inst in r.json()["instances"]:
            m = mask_utils.decode({"size": inst["mask"]["size"],
                                   "counts": inst["mask"]["counts"].encode()})
            assert m.shape == (IMAGE_H, IMAGE_W) and m.dtype == np.uint8
        bad = http.post("/v1/segment", json={"image_id": "0" * 64, "boxes": [[1, 1, 5, 5]]})
        assert bad.status_code == 404 and bad.json()["error"]["code"] == "unknown_image"
        metrics = http.get("/metrics").text
        assert 'route="/v1/segment",status="200"' in metrics
    lines = live_server.log_lines()
    access = [e for e in lines if e.get("logger") == "boxmask.server.access"]
    upload = [e for e in access if e.get("request_id") == "e2e-upload"]
    assert upload and upload[0]["route"] == "/v1/images" and upload[0]["status"] == 200
    assert any(e["status"] == 404 and e["route"] == "/v1/segment" for e in access)
    assert live_server.process.poll() is None
