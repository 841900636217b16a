"""The work a request and a caller may cost: refused before it queues, so a flood of costly
requests cannot hold every inference slot (issue item 3: 55 full-image boxes on a 6000x6000
image held a slot for a minute, and every other request got 503)."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from boxmask.server import create_app
from boxmask.server.settings import ServerSettings
from tests.server.conftest import assert_error, make_settings, png_bytes

BOX = [10.0, 10.0, 50.0, 50.0]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def flat_png(width: int, height: int) -> bytes:
    """A large PNG that is small on the wire (one colour compresses to almost nothing)."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 40)).save(buf, format="PNG")
    return buf.getvalue()


def as_client(app, address: str) -> httpx.AsyncClient:
    """A client calling `app` from `address` (each address is one caller)."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://server", timeout=60)


def test_the_default_budget_refuses_the_issues_body_before_decoding_the_image(
        model_dir: Path) -> None:
    # Item 3's request: 55 full-image boxes on a 6000x6000 image, 1.98e9 mask pixels.
    from fastapi.testclient import TestClient

    defaults = ServerSettings()
    settings = make_settings(model_dir, max_boxes=defaults.max_boxes,
                             max_mask_pixels=defaults.max_mask_pixels)
    image = base64.b64encode(flat_png(6000, 6000)).decode()
    with TestClient(create_app(settings)) as client:
        start = time.monotonic()
        refused = client.post("/v1/segment", json={"image": image,
                                                   "boxes": [[0, 0, 6000, 6000]] * 55})
        error = assert_error(refused, 422, "too_many_mask_pixels")
        assert time.monotonic() - start < 5.0
        assert "BOXMASK_MAX_MASK_PIXELS" in error["message"]
        assert error["details"]["mask_pixels"] == 55 * 6000 * 6000
        # Nothing was decoded or encoded: the refusal came from the image's header.
        assert client.app.state.registry.slot(None).predictor.cache_stats().misses == 0


@pytest.mark.anyio
async def test_a_request_over_the_mask_pixel_budget_is_refused_before_it_queues(
        model_dir: Path) -> None:
    settings = make_settings(model_dir, max_concurrency=1, max_queue=0, queue_timeout_s=5,
                             max_mask_pixels=5 * 96 * 128)
    app = create_app(settings)
    async with app.router.lifespan_context(app), as_client(app, "10.0.0.1") as client:
        up = await client.post("/v1/images", content=png_bytes(),
                               headers={"content-type": "image/png"})
        image_id = up.json()["image_id"]
        release = threading.Event()
        busy = asyncio.create_task(app.state.limiter.run(release.wait, 10))
        await asyncio.sleep(0.05)
        try:
            # The only slot is busy and nothing may queue: a request that got as far as the
            # queue would be told 503 overloaded.
            refused = await client.post("/v1/segment", json={"image_id": image_id,
                                                             "boxes": [BOX] * 6})
            assert_error(refused, 422, "too_many_mask_pixels")
        finally:
            release.set()
            await busy


@pytest.mark.anyio
async def test_a_caller_over_its_budget_gets_429_with_retry_after_and_others_are_served(
        model_dir: Path) -> None:
    plane = 96 * 128
    settings = make_settings(model_dir, caller_mask_pixels_burst=6 * plane,
                             caller_mask_pixels_per_minute=60 * plane)  # one plane a second
    app = create_app(settings)
    async with app.router.lifespan_context(app), as_client(app, "10.0.0.1") as first, \
            as_client(app, "10.0.0.2") as second:
        up = await first.post("/v1/images", content=png_bytes(),
                              headers={"content-type": "image/png"})  # one plane
        body = {"image_id": up.json()["image_id"], "boxes": [BOX] * 4}
        assert (await first.post("/v1/segment", json=body)).status_code == 200  # 5 of 6 spent
        refused = await first.post("/v1/segment", json=body)
        error = assert_error(refused, 429, "caller_budget_exhausted")
        assert int(refused.headers["retry-after"]) >= 2  # 3 planes short, one a second
        assert "BOXMASK_CALLER_MASK_PIXELS_PER_MINUTE" in error["message"]
        # Another caller has its own budget.
        assert (await second.post("/v1/segment", json=body)).status_code == 200
        metrics = (await first.get("/metrics")).text
        assert 'boxmask_rejected_requests_total{reason="caller_budget"} 1.0' in metrics


@pytest.mark.anyio
async def test_a_cost_flood_from_four_callers_leaves_ordinary_requests_answered_within_a_second(
        model_dir: Path) -> None:
    # Item 3 scaled down: each flooder sends, as fast as it is answered, the costliest body the
    # per-request budget allows (full-image boxes on an uploaded image), four at a time.
    side, boxes = 1000, 20
    plane = side * side
    costly = boxes * plane
    settings = make_settings(
        model_dir, max_boxes=boxes, max_mask_pixels=costly, max_concurrency=2, max_queue=8,
        caller_mask_pixels_burst=costly + plane,
        caller_mask_pixels_per_minute=30 * costly)  # one costly request per 2 s and caller
    app = create_app(settings)
    flood_seconds = 4.0
    statuses: dict[str, list[int]] = {"flood": [], "ordinary": []}
    latencies: list[float] = []
    async with app.router.lifespan_context(app):
        async with as_client(app, "10.0.1.1") as setup:
            big = (await setup.post("/v1/images", content=flat_png(side, side),
                                    headers={"content-type": "image/png"})).json()["image_id"]
        async with as_client(app, "10.0.2.1") as ordinary:
            small = (await ordinary.post("/v1/images", content=png_bytes(seed=3),
                                         headers={"content-type": "image/png"})).json()["image_id"]
        flood_body = {"image_id": big, "boxes": [[0, 0, side, side]] * boxes}
        stop = time.monotonic() + flood_seconds

        async def flooder(client: httpx.AsyncClient) -> None:
            while time.monotonic() < stop:
                r = await client.post("/v1/segment", json=flood_body)
                statuses["flood"].append(r.status_code)
                if r.status_code != 200:
                    await asyncio.sleep(0.1)  # a refusal is answered at once: don't spin

        async def ordinary_requests(client: httpx.AsyncClient) -> None:
            while time.monotonic() < stop:
                start = time.monotonic()
                r = await client.post("/v1/segment", json={"image_id": small, "boxes": [BOX]})
                latencies.append(time.monotonic() - start)
                statuses["ordinary"].append(r.status_code)
                await asyncio.sleep(0.2)

        clients = [as_client(app, f"10.0.3.{i}") for i in range(4)]
        async with as_client(app, "10.0.2.1") as ordinary:
            try:
                await asyncio.gather(ordinary_requests(ordinary),
                                     *(flooder(c) for c in clients for _ in range(4)))
            finally:
                for c in clients:
                    await c.aclose()
    assert len(latencies) >= 10
    assert set(statuses["ordinary"]) == {200}, statuses["ordinary"]
    assert max(latencies) < 1.0, [round(t, 3) for t in latencies]
    assert statuses["flood"].count(200) >= 8, statuses["flood"]  # the flood did run
    assert 429 in statuses["flood"]


def test_a_caller_budget_refills_at_its_rate_and_work_under_way_may_overdraw_it() -> None:
    from boxmask.server.budget import CallerBudget
    from boxmask.server.errors import ApiError
    from boxmask.server.metrics import ServerMetrics

    now = [0.0]
    budget = CallerBudget(per_minute=600, burst=100, metrics=ServerMetrics(),
                          clock=lambda: now[0])  # 10 a second
    budget.take("a", 100)
    with pytest.raises(ApiError) as refused:
        budget.take("a", 30)
    assert refused.value.status == 429 and refused.value.headers["Retry-After"] == "3"
    now[0] = 3.0
    budget.take("a", 30)
    budget.charge("a", 50)  # a Label Studio task, charged once its cost is known
    with pytest.raises(ApiError):
        budget.check("a")
    now[0] = 8.1
    budget.check("a")
    budget.refund("a", 1000)  # never above the burst
    budget.take("a", 100)
    with pytest.raises(ApiError):
        budget.take("a", 1)
    budget.take("b", 100)  # callers are apart
    off = CallerBudget(per_minute=0, burst=1, metrics=ServerMetrics())
    off.take("a", 10**12)
    off.check("a")


def test_refused_or_failed_requests_give_their_cost_back(model_dir: Path) -> None:
    from fastapi.testclient import TestClient

    plane = 96 * 128
    settings = make_settings(model_dir, caller_mask_pixels_burst=3 * plane,
                             caller_mask_pixels_per_minute=1)
    with TestClient(create_app(settings)) as client:
        image_id = client.post("/v1/images", content=png_bytes(),
                               headers={"content-type": "image/png"}).json()["image_id"]
        for _ in range(5):  # an unknown label is refused in the slot: nothing is charged
            r = client.post("/v1/segment", json={"image_id": image_id, "boxes": [BOX],
                                                 "labels": ["zebra"]})
            assert_error(r, 422, "unknown_label")
        assert client.post("/v1/segment", json={"image_id": image_id,
                                                "boxes": [BOX] * 2}).status_code == 200
        assert_error(client.post("/v1/segment", json={"image_id": image_id, "boxes": [BOX]}),
                     429, "caller_budget_exhausted")


def test_detections_are_charged_for_the_masks_they_return(model_dir: Path) -> None:
    from fastapi.testclient import TestClient

    plane = 96 * 128
    settings = make_settings(model_dir, caller_mask_pixels_burst=30 * plane,
                             caller_mask_pixels_per_minute=1, max_detections=20)
    image = np.zeros((96, 128, 3), np.uint8)  # nothing to find
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    with TestClient(create_app(settings)) as client:
        image_id = client.post("/v1/images", content=buf.getvalue(),
                               headers={"content-type": "image/png"}).json()["image_id"]
        for _ in range(5):  # 20 masks reserved each time, none used: given back
            r = client.post("/v1/detect", json={"image_id": image_id, "score_threshold": 1.0})
            assert r.status_code == 200 and r.json()["instances"] == []
        assert client.post("/v1/detect", json={"image_id": image_id}).status_code == 200
