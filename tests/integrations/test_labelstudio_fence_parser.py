"""One parser decides both the fence and the connection (issue 37, items 1, 2 and 5).

An outside probe found that `http://127.0.0.1:B\\@127.0.0.1:LS/img.png` passed the fence as
Label Studio's (urllib's urlsplit takes the host after the last "@") while requests connected
to B (urllib3 ends the authority at the backslash): the other server's image came back, and,
through a redirect from Label Studio's origin, the operator's key went with it. Each test here
failed on the code before the fix.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest

from boxmask.integrations.labelstudio.images import (
    ImageFetchError,
    LabelStudioAccess,
    fetch_image,
    origin,
    read_local_file,
)
from tests.integrations.test_labelstudio_backend import png_bytes
from tests.integrations.test_labelstudio_safety import (
    GENERIC,
    _predict,
    _Recorder,
    _seen,
    _serve,
)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:1\\@127.0.0.1:2/img.png",  # the probe's bypass
    "http://[::1]:1\\@127.0.0.1:2/img.png",
    "http://user:pass@127.0.0.1:2/img.png",  # userinfo of any kind
    "http://127.0.0.1:2@/img.png",
    "http://127.0.0.1:2/a b.png",  # spaces, control characters, non-ASCII
    "http://127.0.0.1:2/a\tb.png",
    "http://127.0.0.1:2/a\x00.png",
    "http://127.0.0.1:2\r\n/a.png",
    "http://127.0.0.1:2/\u00e9.png",
    "http://127.0.0.1:99999/a.png",  # a port no parser can connect to
    "ftp://127.0.0.1:2/a.png",
])
def test_urls_that_parsers_could_read_differently_have_no_origin(url: str) -> None:
    assert origin(url) is None
    access = LabelStudioAccess(url="http://127.0.0.1:2", token="k")
    assert not access.allows(url)
    with pytest.raises(ImageFetchError):
        fetch_image(url, access, timeout_s=1.0)


def test_plain_urls_keep_their_origin() -> None:
    assert origin("HTTP://Example.org/x?a=b#c") == ("http", "example.org", 80)
    assert origin("https://example.org/x%5C%40y") == ("https", "example.org", 443)
    assert origin("http://[::1]:8080/x") == ("http", "::1", 8080)


def test_a_backslash_url_cannot_reach_another_server_under_label_studios_origin(make_client) -> None:
    (ls, ls_url), (other, other_url) = _serve(), _serve()
    try:
        client = make_client(url=ls_url, api_key="operator-key")
        bypass = f"http://127.0.0.1:{_port(other_url)}\\@127.0.0.1:{_port(ls_url)}/img.png"
        response = _predict(client, bypass)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["message"] == GENERIC
        assert _seen(other) == [] and _seen(ls) == []
    finally:
        for server in (ls, other):
            server.shutdown()
            server.server_close()


def test_a_refused_url_costs_the_same_whatever_listens_at_the_port(make_client) -> None:
    # The bypass reopened the port-scan timing signal (a silent port held the fetch for its
    # deadline, a closed one failed in milliseconds): refused before any connection, both are fast.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(0)  # accepts into the backlog, never answers
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    (ls, ls_url) = _serve()
    try:
        client = make_client(url=ls_url, api_key="k", fetch_timeout_s=3.0)
        for port in (silent.getsockname()[1], closed_port):
            start = time.monotonic()
            response = _predict(client, f"http://127.0.0.1:{port}\\@127.0.0.1:{_port(ls_url)}/x.png")
            assert response.status_code == 422
            assert time.monotonic() - start < 1.0
    finally:
        silent.close()
        ls.shutdown()
        ls.server_close()


def _ipv6_server() -> tuple[ThreadingHTTPServer, str] | None:
    class V6(ThreadingHTTPServer):
        address_family = socket.AF_INET6

    try:
        server = V6(("::1", 0), type("Handler", (_Recorder,), {"seen": []}))
    except OSError:
        return None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://[::1]:{server.server_address[1]}"


@pytest.mark.parametrize("other_host", ["127.0.0.1", "[::1]"])
def test_label_studios_redirect_to_a_backslash_url_sends_neither_request_nor_key(
    make_client, other_host: str,
) -> None:
    ls, ls_url = _serve()
    made = _serve() if other_host == "127.0.0.1" else _ipv6_server()
    if made is None:
        ls.shutdown()
        ls.server_close()
        pytest.skip("no IPv6 loopback on this machine")
    other, other_url = made
    try:
        client = make_client(url=ls_url, api_key="operator-key")
        target = f"http://{other_host}:{_port(other_url)}\\@127.0.0.1:{_port(ls_url)}/img.png"
        response = _predict(client, f"{ls_url}/redirect?to={quote(target, safe='')}")
        assert response.status_code == 422, response.text
        assert _seen(other) == []  # no request, so no key
        assert [auth for _, auth in _seen(ls)] == ["Token operator-key"]  # only the first hop
    finally:
        for server in (ls, other):
            server.shutdown()
            server.server_close()


def test_no_credential_comes_back_after_a_redirect_has_left_label_studios_origin(make_client) -> None:
    (ls, ls_url), (other, other_url) = _serve(), _serve()
    try:
        client = make_client(url=ls_url, api_key="operator-key", allowed_origins=[other_url])
        back = f"{other_url}/redirect?to={ls_url}/data/upload/1/a.png"
        assert _predict(client, f"{ls_url}/redirect?to={back}").status_code == 200
        assert _seen(other) == [(f"/redirect?to={ls_url}/data/upload/1/a.png", None)]
        # Label Studio's own first hop had the key; the hop the other origin chose does not.
        assert [auth for _, auth in _seen(ls)] == ["Token operator-key", None]
    finally:
        for server in (ls, other):
            server.shutdown()
            server.server_close()


def test_an_http_url_to_an_https_label_studios_host_and_port_gets_no_request_and_no_key(
    make_client,
) -> None:
    ls, ls_url = _serve()
    try:
        port = _port(ls_url)
        client = make_client(url=f"https://127.0.0.1:{port}", api_key="operator-key")
        response = _predict(client, f"http://127.0.0.1:{port}/data/upload/1/a.png")
        assert response.status_code == 422
        assert _seen(ls) == []
    finally:
        ls.shutdown()
        ls.server_close()


def test_local_files_refuse_fifos_directories_and_nul_bytes_without_blocking(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "folder").mkdir(parents=True)
    (root / "ok.png").write_bytes(png_bytes(seed=3))
    os.mkfifo(root / "pipe.png")
    url = "/data/local-files/?d={}".format
    assert read_local_file(url("ok.png"), str(root), 1 << 20) == png_bytes(seed=3)
    for name in ("pipe.png", "folder", "ok.png%00.jpg", "ok.png\x00.jpg"):
        start = time.monotonic()
        with pytest.raises(ImageFetchError):
            read_local_file(url(name), str(root), 1 << 20, timeout_s=2.0)
        assert time.monotonic() - start < 1.0, name


def test_a_fifo_in_the_local_files_root_does_not_hold_the_fetch_threads(make_client, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    os.mkfifo(root / "pipe.png")
    (root / "ok.png").write_bytes(png_bytes(seed=4))
    client = make_client(local_files_root=str(root), fetch_concurrency=2)
    start = time.monotonic()
    for _ in range(3):
        response = _predict(client, "/data/local-files/?d=pipe.png")
        assert response.status_code == 422 and response.json()["error"]["message"] == GENERIC
    assert _predict(client, "/data/local-files/?d=ok.png").status_code == 200
    assert time.monotonic() - start < 5.0
