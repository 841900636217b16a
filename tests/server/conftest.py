"""Fixtures of the server tests: a real app over the contract model directory, and images."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from boxmask.server import ServerSettings, create_app

IMAGE_H, IMAGE_W = 96, 128


def png_bytes(h: int = IMAGE_H, w: int = IMAGE_W, seed: int = 0) -> bytes:
    """A small RGB PNG with blobs on noise (different seeds give different bytes)."""
    rng = np.random.default_rng(seed)
    a = (rng.random((h, w, 3)) * 60).astype(np.uint8)
    a[h // 4: h // 2, w // 4: w // 2] = (200, 60, 60)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def make_settings(model_dir: Path, **overrides: object) -> ServerSettings:
    # Explicit values, not the environment: a developer's BOXMASK_* must not change a test.
    base: dict[str, object] = dict(model_dir=model_dir, api_token=None, cors_origins=[],
                                   triton_url=None, max_boxes=20, max_concurrency=2,
                                   max_queue=8, cache_bytes=64 << 20, log_json=True)
    base.update(overrides)
    return ServerSettings(**base)


@pytest.fixture(scope="module")
def client(model_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(model_dir))) as c:
        yield c


@pytest.fixture(scope="module")
def image_id(client: TestClient) -> str:
    r = client.post("/v1/images", content=png_bytes(), headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    return r.json()["image_id"]


def assert_error(response, status: int, code: str) -> dict:
    """The stable error shape: {"error": {"code", "message", ...}, "request_id"}."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "request_id"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"], body
    assert body["request_id"] == response.headers["x-request-id"]
    return body["error"]
