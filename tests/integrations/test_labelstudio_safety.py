"""The Label Studio routes are safe to expose: where images are fetched from, where the key goes,
how long a fetch may take and whom it may starve, local files, and inputs that used to give 500.

Each test reproduces a finding of issue 14 against a local HTTP server that records what it was
sent (standing in for Label Studio and for hosts a task might name).
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.integrations.test_labelstudio_backend import (
    CONFIG,
    data_uri,
    interactive,
    png_bytes,
    region,
)

GENERIC = "the task's image could not be fetched; the server log has the reason"


class _Recorder(BaseHTTPRequestHandler):
    """Serves an image at any path; `/redirect?to=URL` redirects, `/missing` is a 404, `/drip`
    sends a byte every 0.3 s. Every request is recorded with its Authorization header."""

    seen: ClassVar[list[tuple[str, str | None]]] = []
    image = png_bytes(seed=5)

    def do_GET(self) -> None:  # http.server's naming
        type(self).seen.append((self.path, self.headers.get("Authorization")))
        path = urlsplit(self.path)
        if path.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", parse_qs(path.query)["to"][0])
            self.end_headers()
            return
        if path.path == "/missing":
            self.send_response(404)
            self.end_headers()
            return
        if path.path == "/drip":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            try:
                for byte in self.image[:60]:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.3)
            except OSError:
                pass
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.image)))
        self.end_headers()
        self.wfile.write(self.image)

    def log_message(self, *args: object) -> None:
        pass


def _serve() -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Recorder,), {"seen": []}))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture()
def hosts() -> Iterator[tuple[tuple[ThreadingHTTPServer, str], tuple[ThreadingHTTPServer, str]]]:
    """Two recording servers: Label Studio's stand-in, and another host."""
    a, b = _serve(), _serve()
    yield a, b
    for server, _ in (a, b):
        server.shutdown()
        server.server_close()


def _seen(server: ThreadingHTTPServer) -> list[tuple[str, str | None]]:
    return server.RequestHandlerClass.seen


def _task(photo: str) -> dict:
    return {"id": 7, "data": {"photo": photo}}


def _predict(client, photo: str):
    return interactive(client, [region(10, 20, 30, 40, "disc")], task=_task(photo))


def test_setup_cannot_send_the_operators_key_or_the_fetches_to_a_host_it_picks(make_client, hosts) -> None:
    (attacker, attacker_url), _ = hosts
    client = make_client(api_key="operator-key")  # LABEL_STUDIO_URL not set
    client.post("/labelstudio/setup", json={"project": "66.1", "hostname": attacker_url})
    response = _predict(client, "/data/upload/1/a.png")
    assert response.status_code == 422
    assert response.json()["error"]["message"] == GENERIC
    assert _seen(attacker) == []


def test_with_trust_setup_may_point_a_project_but_only_with_its_own_token(
    make_client, hosts, monkeypatch: pytest.MonkeyPatch,
) -> None:
    (ls, ls_url), _ = hosts
    # The SDK falls back to this variable when a request has no token of its own.
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "operator-key")
    client = make_client(api_key="operator-key", trust_setup_hostname=True)
    client.post("/labelstudio/setup", json={"project": "3.1", "hostname": ls_url,
                                            "access_token": "project-token"})
    assert _predict(client, "/data/upload/1/a.png").status_code == 200
    assert _seen(ls) == [("/data/upload/1/a.png", "Token project-token")]
    # A project whose /setup sent no token is fetched without any: never the operator's key.
    client.post("/labelstudio/setup", json={"project": "4.1", "hostname": ls_url})
    response = client.post("/labelstudio/predict", json={
        "tasks": [_task("/data/upload/2/b.png")], "project": "4.1", "label_config": CONFIG,
        "params": {"context": {"result": [region(10, 20, 30, 40, "disc")]}}})
    assert response.status_code == 200, response.text
    assert _seen(ls)[-1] == ("/data/upload/2/b.png", None)


def test_task_urls_go_only_to_label_studio_and_the_allowed_origins(make_client, hosts) -> None:
    (ls, ls_url), (other, other_url) = hosts
    client = make_client(url=ls_url, api_key="operator-key")
    refused = _predict(client, f"{other_url}/cat.png")
    assert refused.status_code == 422 and refused.json()["error"]["message"] == GENERIC
    assert _seen(other) == []
    # Label Studio's own files get the key; an allowed origin gets the image asked, no key.
    allowing = make_client(url=ls_url, api_key="operator-key", allowed_origins=[other_url])
    assert _predict(allowing, "/data/upload/1/a.png").status_code == 200
    assert _predict(allowing, f"{other_url}/cat.png").status_code == 200
    assert _seen(ls) == [("/data/upload/1/a.png", "Token operator-key")]
    assert _seen(other) == [("/cat.png", None)]


def test_each_redirect_is_checked_and_the_key_stays_on_label_studios_origin(make_client, hosts) -> None:
    (ls, ls_url), (other, other_url) = hosts
    client = make_client(url=ls_url, api_key="operator-key")
    # Label Studio's origin redirecting elsewhere: the hop is refused before any request.
    redirect = f"{ls_url}/redirect?to={other_url}/stolen.png"
    assert _predict(client, redirect).status_code == 422
    assert _seen(other) == []
    # Allowed, the hop is made, without the key.
    allowing = make_client(url=ls_url, api_key="operator-key", allowed_origins=[other_url])
    assert _predict(allowing, redirect).status_code == 200
    assert _seen(other) == [("/stolen.png", None)]
    assert all(auth == "Token operator-key" for _, auth in _seen(ls))


def test_fetch_failures_all_read_the_same(make_client, hosts) -> None:
    (_, ls_url), _ = hosts
    closed = _serve()
    closed_url = closed[1]
    closed[0].shutdown()
    closed[0].server_close()
    client = make_client(url=ls_url, api_key="k", allowed_origins=[closed_url])
    messages = {_predict(client, url).json()["error"]["message"]
                for url in (f"{closed_url}/a.png", f"{ls_url}/missing", "http://10.0.0.1/x.png",
                            "file:///etc/hostname")}
    assert messages == {GENERIC}


def test_a_slow_url_is_cut_off_at_the_total_deadline(make_client, hosts) -> None:
    (_, ls_url), _ = hosts
    client = make_client(url=ls_url, api_key="k", fetch_timeout_s=1.0, read_timeout_s=5.0)
    start = time.monotonic()
    response = _predict(client, f"{ls_url}/drip")
    assert response.status_code == 422 and response.json()["error"]["message"] == GENERIC
    # A byte every 0.3 s never trips the per-read timeout; the deadline ends it (plus one read).
    assert time.monotonic() - start < 3.0


def test_fetches_wait_in_their_own_pool_while_probes_and_inference_answer(make_client, hosts) -> None:
    (_, ls_url), _ = hosts
    # More slow fetches than the default worker pool has threads (40).
    client = make_client(url=ls_url, api_key="k", fetch_timeout_s=4.0, fetch_concurrency=4)
    threads = [threading.Thread(target=_predict, args=(client, f"{ls_url}/drip?{i}"))
               for i in range(44)]
    for t in threads:
        t.start()
    time.sleep(1.0)  # the fetches are running or waiting now
    start = time.monotonic()
    assert client.get("/readyz").status_code == 200
    image = base64.b64encode(png_bytes(seed=8)).decode()
    assert client.post("/v1/segment", json={"image": image, "boxes": [[5, 5, 40, 40]]}).status_code == 200
    answered = time.monotonic() - start
    for t in threads:
        t.join()
    assert answered < 2.0, answered


def test_local_files_keep_the_byte_limit_and_stay_inside_the_root(make_client, tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "secret"
    root.mkdir()
    outside.mkdir()
    image = png_bytes(seed=6)
    (root / "ok.png").write_bytes(image)
    (root / "big.png").write_bytes(image + b"\0" * 4096)
    (outside / "key.png").write_bytes(image)
    os.symlink(outside / "key.png", root / "link.png")
    client = make_client(local_files_root=str(root), max_image_bytes=len(image) + 1024)
    url = "/data/local-files/?d={}".format
    assert _predict(client, url("ok.png")).status_code == 200
    for name in ("big.png", "link.png", "../secret/key.png"):
        response = _predict(client, url(name))
        assert response.status_code == 422, name
        assert response.json()["error"]["message"] == GENERIC


@pytest.mark.parametrize("path", ["/labelstudio/predict", "/labelstudio/setup", "/labelstudio/webhook"])
def test_deep_json_and_non_json_bodies_are_4xx_not_500(make_client, path: str) -> None:
    client = make_client()
    deep = client.post(path, content=b"[" * 100_000 + b"]" * 100_000,
                       headers={"Content-Type": "application/json"})
    assert deep.status_code == 400, deep.text
    nested: dict = {}
    for _ in range(200):
        nested = {"a": nested}
    assert client.post(path, json=nested).status_code == 400
    # text/plain needs no CORS preflight: a web page could send it. Only JSON is read.
    plain = client.post(path, content=b'{"tasks": []}', headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415, plain.text


def test_a_basic_header_with_a_non_ascii_byte_is_a_401(make_client) -> None:
    client = make_client(server={"api_token": "s3cret"})
    for value in (b"Basic \xff\xfe", b"Basic " + base64.b64encode(b"user:\xff"), b"Bearer \xe9"):
        response = client.post("/labelstudio/webhook", json={"action": "x"},
                               headers={"Authorization": value})
        assert response.status_code == 401, (value, response.text)


def test_label_studio_requests_keep_the_servers_box_limit(make_client) -> None:
    client = make_client(server={"max_boxes": 5})
    regions = [region(2 + 10 * i, 10, 8, 30, "disc", rid=f"r{i}") for i in range(8)]
    drawn = interactive(client, regions)
    assert drawn.status_code == 422 and "limit" in drawn.json()["error"]["message"]
    stored = {"id": 1, "data": {"photo": data_uri()}, "annotations": [{"result": regions}]}
    batch = client.post("/labelstudio/predict", json={"tasks": [stored], "project": "3.1",
                                                      "label_config": CONFIG})
    assert batch.status_code == 200
    (answer,) = batch.json()["results"]
    assert "result" not in answer and "limit" in answer["error"]


def test_an_image_evicted_between_fetch_and_answer_is_fetched_again_outside_the_slot(
    make_client, hosts,
) -> None:
    (ls, ls_url), _ = hosts
    client = make_client(url=ls_url, api_key="k")
    backend = client.app.state.labelstudio.for_slot(client.app.state.labelstudio.slot())
    in_answer = threading.local()
    downloads: list[bool] = []  # per download: was it made inside `answer` (a slot)?
    download, answer, fetch = backend._download, backend.answer, backend.fetch

    def recording_download(*args, **kwargs):
        downloads.append(getattr(in_answer, "on", False))
        return download(*args, **kwargs)

    def marked_answer(*args, **kwargs):
        in_answer.on = True
        try:
            return answer(*args, **kwargs)
        finally:
            in_answer.on = False

    def stale_fetch(request, task, again=False):
        # Says "still cached", then the cache drops the image before `answer` runs.
        if again:
            return fetch(request, task, again=True)
        result = fetch(request, task)
        backend.predictor.cache.clear()
        return result

    backend._download, backend.answer = recording_download, marked_answer
    assert _predict(client, "/data/upload/1/a.png").status_code == 200
    backend.fetch = stale_fetch
    assert _predict(client, "/data/upload/1/a.png").status_code == 200
    assert len(_seen(ls)) == 2
    assert downloads == [False, False]


def _region_with(**value: object) -> dict:
    drawn = region(10, 20, 30, 40, "disc")
    drawn["value"].update(value)
    return drawn


def _batch(client, task: dict, **extra: object):
    return client.post("/labelstudio/predict", json={"tasks": [task], "project": "3.1",
                                                     "label_config": CONFIG, **extra})


@pytest.mark.parametrize("schema", [5, {"a": 1}, [CONFIG], True])
def test_a_setup_whose_schema_is_not_text_is_a_422_naming_it(make_client, schema) -> None:
    response = make_client().post("/labelstudio/setup", json={"project": "3.1", "schema": schema})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"
    assert "schema" in response.json()["error"]["message"]


@pytest.mark.parametrize("value", [{"rotation": "abc"}, {"rotation": [1]}, {"rotation": {}},
                                   {"rectanglelabels": 5}, {"x": "10"}, {"width": None}])
def test_a_malformed_box_is_a_422_when_drawn_and_its_tasks_own_error_in_a_batch(
        make_client, value: dict) -> None:
    client = make_client()
    drawn = interactive(client, [_region_with(**value)])
    assert drawn.status_code == 422, drawn.text
    assert drawn.json()["error"]["code"] == "cannot_annotate"
    assert "'r1' is malformed" in drawn.json()["error"]["message"]
    bad = {"id": 1, "data": {"photo": data_uri()}, "annotations": [{"result": [_region_with(**value)]}]}
    good = {"id": 2, "data": {"photo": data_uri()}, "annotations": [{"result": [region(10, 20, 30, 40, "disc")]}]}
    batch = client.post("/labelstudio/predict", json={"tasks": [bad, good], "project": "3.1",
                                                      "label_config": CONFIG})
    assert batch.status_code == 200, batch.text
    failed, answered = batch.json()["results"]
    assert "result" not in failed and "malformed" in failed["error"]
    assert len(answered["result"]) == 1


def test_annotations_with_ids_of_mixed_types_are_ordered_not_a_500(make_client) -> None:
    client = make_client()
    older, newer = region(10, 20, 30, 40, "disc", "older"), region(50, 20, 30, 40, "square", "newer")
    task = {"id": 1, "data": {"photo": data_uri()},
            "annotations": [{"id": "a", "result": [older]}, {"id": 2, "result": [newer]}]}
    response = _batch(client, task)
    assert response.status_code == 200, response.text
    (answer,) = response.json()["results"]
    # Integer ids (Label Studio's) before strings; the newest annotation's box is answered.
    assert [r["value"]["brushlabels"] for r in answer["result"]] == [["disc"]]


def test_a_local_files_directory_or_nul_byte_is_the_tasks_fetch_error(make_client, tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "ok.png").write_bytes(png_bytes(seed=6))
    client = make_client(local_files_root=str(tmp_path))
    for name in ("sub", "sub/", "ok.png%00.jpg", "%00"):
        response = _batch(client, {"id": 4, "data": {"photo": f"/data/local-files/?d={name}"}})
        assert response.status_code == 200, (name, response.text)
        (answer,) = response.json()["results"]
        assert answer["error"] == f"task 4: {GENERIC}", name
        drawn = _predict(client, f"/data/local-files/?d={name}")
        assert drawn.status_code == 422 and drawn.json()["error"]["message"] == GENERIC


@pytest.mark.parametrize("raised", [ValueError("embedded null byte"), IsADirectoryError(21, "dir"),
                                    RuntimeError("anything else")])
def test_whatever_the_image_fetch_raises_is_the_tasks_fetch_error_not_a_500(
        make_client, monkeypatch: pytest.MonkeyPatch, raised: Exception) -> None:
    from boxmask.integrations.labelstudio import backend

    def failing_fetch(*args, **kwargs):
        raise raised

    monkeypatch.setattr(backend, "fetch_image", failing_fetch)
    client = make_client()
    response = _batch(client, {"id": 5, "data": {"photo": "/data/upload/1/a.png"}})
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["error"] == f"task 5: {GENERIC}"
    drawn = _predict(client, "/data/upload/1/a.png")
    assert drawn.status_code == 422 and drawn.json()["error"]["code"] == "image_fetch_failed"


def test_more_tasks_than_the_limit_are_refused_at_once(make_client, caplog) -> None:
    client = make_client()
    start = time.monotonic()
    response = client.post("/labelstudio/predict", json={"tasks": [{}] * 20_000,
                                                         "label_config": CONFIG})
    assert time.monotonic() - start < 2.0
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "too_many_tasks" and "BOXMASK_LABELSTUDIO_MAX_TASKS" in error["message"]
    assert error["details"] == {"tasks": 20_000, "max_tasks": 100}
    assert len([r for r in caplog.records if r.name.startswith("boxmask")]) < 10


def test_a_batch_of_failing_tasks_writes_its_log_line_budget_and_one_summary(make_client, caplog) -> None:
    client = make_client(max_tasks=60, max_task_log_lines=5)
    caplog.set_level("INFO")
    response = client.post("/labelstudio/predict", json={"tasks": [{"id": i} for i in range(60)],
                                                         "label_config": CONFIG})
    assert response.status_code == 200
    assert all("malformed" in r["error"] for r in response.json()["results"])
    backend_lines = [r for r in caplog.records if r.name == "boxmask.integrations.labelstudio"]
    summaries = [r for r in caplog.records if r.getMessage().startswith("more tasks not annotated")]
    assert len(backend_lines) == 5
    assert len(summaries) == 1 and summaries[0].tasks == 55


def test_label_studio_calls_are_charged_to_the_callers_mask_pixel_budget(make_client) -> None:
    from tests.integrations.test_labelstudio_backend import H, W

    # A task's cost is known once its image is in: a caller with anything left may start one,
    # and is charged for it (its image decoded, one mask: two planes) even into debt. Refilled
    # far too slowly for a second.
    client = make_client(server={"caller_mask_pixels_burst": W * H,
                                 "caller_mask_pixels_per_minute": 1})
    boxed = {"id": 1, "data": {"photo": data_uri()},
             "annotations": [{"result": [region(10, 20, 30, 40, "disc")]}]}
    batch = client.post("/labelstudio/predict", json={
        "tasks": [boxed, dict(boxed, id=2)], "project": "3.1", "label_config": CONFIG})
    assert batch.status_code == 200, batch.text
    first, second = batch.json()["results"]
    assert len(first["result"]) == 1
    assert "result" not in second and "budget" in second["error"]
    refused = interactive(client, [region(10, 20, 30, 40, "disc")])
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "caller_budget_exhausted"
    assert int(refused.headers["retry-after"]) > 0
