"""Fixtures of the server tests: a real app over the contract model directory, and images."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from boxmask.server import ServerSettings, create_app
from tests.processes import free_port, stop_process

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
    base: dict[str, object] = {"model_dir": model_dir, "api_token": None, "cors_origins": [],
                                   "triton_url": None, "max_boxes": 20, "max_concurrency": 2,
                                   "max_queue": 8, "cache_bytes": 64 << 20, "log_json": True}
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



@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log_lines(self) -> list[dict]:
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


@contextlib.contextmanager
def running_server(model_dir: Path | None, log_path: Path) -> Iterator[LiveServer]:
    """``boxmask serve`` as a real uvicorn process on 127.0.0.1 (JSON logs to ``log_path``);
    ``model_dir=None`` serves what ``make run`` serves: the bundled models."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOXMASK_")}
    env["BOXMASK_MAX_BOXES"] = "20"
    where = [] if model_dir is None else ["--model-dir", str(model_dir)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "boxmask.cli", "serve", "--host", "127.0.0.1", "--port",
             str(port), *where, "--cache-mb", "64"],
            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, url, log_path, "server")
        yield LiveServer(url=url, process=process, log_path=log_path)
    finally:
        stop_process(process)


def wait_until_ready(process: subprocess.Popen, url: str, log_path: Path, what: str,
                     timeout: float = 120.0) -> None:
    """Poll ``url``/readyz until 200; raise with the process's log when it exits or times out
    (imports on 2 busy cores can take a while)."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout:.0f} s:\n{log_path.read_text()}")
        time.sleep(0.3)


@pytest.fixture(scope="session")
def live_server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``boxmask serve --model-dir`` the tiny test model."""
    with running_server(model_dir, tmp_path_factory.mktemp("live_server") / "server.log") as s:
        yield s


@pytest.fixture(scope="session")
def bundled_live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``boxmask serve`` with no model option: the bundled demo model, as ``make run``."""
    with running_server(None, tmp_path_factory.mktemp("bundled_server") / "server.log") as s:
        yield s
