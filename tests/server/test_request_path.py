"""What a cached request costs the server besides its inference: one thread hand-off."""

from __future__ import annotations

import anyio.to_thread
import pytest
from fastapi.testclient import TestClient

from boxmask.server import create_app
from tests.server.conftest import make_settings, png_bytes


def test_a_cached_segment_request_hands_off_to_a_thread_once(
        client: TestClient, image_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The inference runs in a worker thread (a single box, by default, on the loop itself:
    none); nothing else of the request does. A plain `def` dependency (settings, registry,
    limiter, metrics, budget, the token check) would run in the thread pool too: six hand-offs
    more per request, each a wake-up of a worker thread (milliseconds of a cached box on a
    busy machine)."""
    calls: list[str] = []
    real = anyio.to_thread.run_sync

    async def counting(func, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(getattr(func, "__qualname__", repr(func)))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    assert client.app.state.services.settings.inline_boxes == 1  # type: ignore[attr-defined]
    for body, hand_offs in (
            ({"image_id": image_id, "boxes": [[10, 10, 60, 50]], "labels": [1]}, 0),
            ({"image_id": image_id, "boxes": [[10, 10, 60, 50]], "mask_format": "png"}, 1),
            ({"image_id": image_id, "boxes": [[10, 10, 60, 50], [20, 5, 90, 70]]}, 1)):
        calls.clear()
        r = client.post("/v1/segment", json=body)
        assert r.status_code == 200, r.text
        assert len(calls) == hand_offs, (body, calls)


def test_the_servers_onnx_runtime_threads_do_not_spin(client: TestClient) -> None:
    """Spinning threads burn the cores the server's other work needs (its concurrent requests,
    its event loop, the training jobs it starts): off unless BOXMASK_INTRA_OP_SPINNING says."""
    registry = client.app.state.registry  # type: ignore[attr-defined]
    assert registry.options.intra_op_spinning is False
    for slot in registry.slots.values():
        for session in (slot.predictor.encoder, slot.predictor.decoder):
            options = session._session.get_session_options()
            assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_short_cached_requests_run_on_the_loop_when_the_setting_says(
        model_dir, monkeypatch: pytest.MonkeyPatch) -> None:
    """``inline_boxes``: a cached request of at most that many boxes with RLE masks is
    decoded on the event loop (no hand-off); a longer one, a new image, or another mask format
    still goes to a worker thread. The answer is the same either way."""
    calls: list[str] = []
    real = anyio.to_thread.run_sync

    async def counting(func, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(getattr(func, "__qualname__", repr(func)))
        return await real(func, *args, **kwargs)

    answers = []
    for inline_boxes in (0, 1):
        with TestClient(create_app(make_settings(model_dir,
                                                 inline_boxes=inline_boxes))) as c:
            r = c.post("/v1/images", content=png_bytes(), headers={"content-type": "image/png"})
            key = r.json()["image_id"]
            one = {"image_id": key, "boxes": [[10, 10, 60, 50]], "labels": [1]}
            answers.append(c.post("/v1/segment", json=one).json())
    threaded = answers[0]
    with TestClient(create_app(make_settings(model_dir, inline_boxes=1))) as c:
        r = c.post("/v1/images", content=png_bytes(), headers={"content-type": "image/png"})
        assert r.json()["image_id"] == key
        monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
        inline = c.post("/v1/segment", json=one)
        assert inline.status_code == 200, inline.text
        assert calls == []
        assert inline.json()["instances"] == threaded["instances"]
        for body in ({"image_id": key, "boxes": [[10, 10, 60, 50], [20, 5, 90, 70]]},
                     {**one, "mask_format": "polygons"}):
            calls.clear()
            assert c.post("/v1/segment", json=body).status_code == 200
            assert len(calls) == 1, body
        # An unknown image: the same 404 on the loop.
        missing = c.post("/v1/segment", json={**one, "image_id": "0" * 64})
        assert missing.status_code == 404, missing.text
