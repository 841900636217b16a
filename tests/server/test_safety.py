"""Auth, CORS, overload, and failing or missing backends: the process stays up and says why."""

from __future__ import annotations

import asyncio
import base64
import shutil
import socket
import threading
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from boxmask.runtime.errors import BackendUnavailable
from boxmask.server import create_app
from tests.server.conftest import assert_error, make_settings, png_bytes

BOX = [10.0, 10.0, 50.0, 50.0]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: With a token set, what answers without it: the probes (which tell ready or not, nothing
#: more) and the demo page (static files; its API calls carry the token the user enters).
PUBLIC = {"/healthz", "/readyz", "/labelstudio/", "/labelstudio/health", "/", "/static"}
PROTECTED = {("GET", "/metrics"), ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/redoc"),
             ("GET", "/v1/models"), ("GET", "/v1/models/synth-tiny/samples/a.png"),
             ("POST", "/v1/images"), ("POST", "/v1/segment"), ("POST", "/v1/detect"),
             ("POST", "/labelstudio/setup"), ("POST", "/labelstudio/predict"),
             ("POST", "/labelstudio/webhook"), ("GET", "/labelstudio/jobs"),
             ("POST", "/labelstudio/rollback")}


def route_paths(app) -> set[str]:
    """The path of every route the app serves (this FastAPI wraps each included router)."""
    found = set()
    for route in app.routes:
        inner = getattr(route, "original_router", None)
        found |= {r.path for r in (inner.routes if inner is not None else [route])}
    return found


def test_with_a_token_only_the_probes_and_the_demo_page_answer_without_it(model_dir: Path) -> None:
    with TestClient(create_app(make_settings(model_dir, api_token="s3cret-token"))) as client:
        # Every route of the app is one or the other: a new route must be placed.
        assert route_paths(client.app) == PUBLIC | {p.replace("synth-tiny/samples/a.png", "{name}/samples/{filename}")
                                  for _, p in PROTECTED}
        for method, path in PROTECTED:
            assert_error(client.request(method, path, json={}), 401, "unauthorized")
        for path in ("/healthz", "/readyz", "/labelstudio/", "/labelstudio/health", "/",
                     "/static/demo.js"):
            assert client.get(path).status_code == 200, path
        # The probes say whether the server is up, not what it holds.
        assert set(client.get("/readyz").json()["models"]) == set()
        assert client.get("/labelstudio/health").json() == {"status": "UP", "model_class": "boxmask"}
        token = {"Authorization": "Bearer s3cret-token"}
        assert client.get("/readyz", headers=token).json()["models"] == {"synth-tiny": "ready"}
        for path in ("/metrics", "/openapi.json", "/docs", "/redoc", "/v1/models"):
            assert client.get(path, headers=token).status_code == 200, path
        # The docs answer a Basic challenge: a browser asks for the token.
        assert client.get("/docs").headers["www-authenticate"].startswith("Basic")
        assert client.get("/metrics").headers["www-authenticate"] == "Bearer"


def test_the_schema_declares_the_token_on_every_protected_api_route(model_dir: Path) -> None:
    # The inference routes check the token themselves (routing.RequestRoute), not through a
    # dependency: their schema must still say so, as the dependency does for the others.
    schema = create_app(make_settings(model_dir, api_token="s3cret-token")).openapi()
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    documented = [(method, path) for method, path in PROTECTED
                  if path in schema["paths"] and method.lower() in schema["paths"][path]]
    assert {("POST", "/v1/segment"), ("POST", "/v1/detect"), ("POST", "/v1/images")} <= set(documented)
    for method, path in documented:
        assert schema["paths"][path][method.lower()].get("security") == [{"HTTPBearer": []}], path


def test_one_token_check_takes_bearer_or_basic_on_api_and_label_studio_routes(
    model_dir: Path,
) -> None:
    def basic(user_password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(user_password.encode()).decode()}

    setup = {"project": "1.1", "schema": "<View/>"}
    with TestClient(create_app(make_settings(model_dir, api_token="s3cret-token"))) as client:
        for headers in ({"Authorization": "Bearer s3cret-token"}, basic("anyone:s3cret-token")):
            assert client.get("/v1/models", headers=headers).status_code == 200
            assert client.post("/labelstudio/setup", json=setup, headers=headers).status_code == 200
        refused = client.post("/labelstudio/setup", json=setup)
        assert_error(refused, 401, "unauthorized")
        # Label Studio is challenged for Basic (its "Use authentication"), API clients for Bearer.
        assert refused.headers["www-authenticate"].startswith("Basic")
        assert client.get("/v1/models").headers["www-authenticate"] == "Bearer"
        for headers in (basic("anyone:wrong"), basic("s3cret-token"), {"Authorization": "Basic !!"},
                        {"Authorization": "Bearer wrong"}, {"Authorization": "Token s3cret-token"}):
            assert_error(client.post("/labelstudio/setup", json=setup, headers=headers), 401, "unauthorized")
            assert_error(client.get("/v1/models", headers=headers), 401, "unauthorized")


@pytest.mark.parametrize("authorization", [
    "Bearer s3cret-tokeN", "Bearer 0123456789AB", "Basic " + base64.b64encode(b"u:s3cret-tokeN").decode(),
    "Bearer", "Bearer ", "Bearer  ", "Basic " + base64.b64encode(b"u:").decode(), "Basic"])
def test_a_wrong_token_of_the_right_length_or_an_empty_one_is_refused_everywhere(
        model_dir: Path, authorization: str) -> None:
    # "s3cret-tokeN" and "0123456789AB" have the token's length; the others carry no token.
    settings = make_settings(model_dir, api_token="s3cret-token")
    with TestClient(create_app(settings)) as client:
        headers = {"Authorization": authorization}
        assert_error(client.get("/v1/models", headers=headers), 401, "unauthorized")
        assert_error(client.post("/v1/segment", json={"image_id": "x", "boxes": [BOX]},
                                 headers=headers), 401, "unauthorized")
        for path in ("/labelstudio/setup", "/labelstudio/webhook"):
            assert_error(client.post(path, json={}, headers=headers), 401, "unauthorized")
        assert_error(client.get("/metrics", headers=headers), 401, "unauthorized")


def test_cors_allows_only_the_configured_origins(model_dir: Path) -> None:
    settings = make_settings(model_dir, cors_origins=["http://labeler.example"])
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type,authorization"}
    with TestClient(create_app(settings)) as client:
        allowed = client.options("/v1/segment",
                                 headers={"Origin": "http://labeler.example", **preflight})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "http://labeler.example"
        other = client.options("/v1/segment", headers={"Origin": "http://evil.example", **preflight})
        assert "access-control-allow-origin" not in other.headers
        simple = client.get("/v1/models", headers={"Origin": "http://labeler.example"})
        assert simple.headers["access-control-allow-origin"] == "http://labeler.example"
    with TestClient(create_app(make_settings(model_dir))) as client:  # default: no CORS at all
        r = client.get("/v1/models", headers={"Origin": "http://labeler.example"})
        assert "access-control-allow-origin" not in r.headers


@pytest.mark.anyio
async def test_a_full_queue_gets_503_with_retry_after_while_health_still_answers(
        model_dir: Path) -> None:
    app = create_app(make_settings(model_dir, max_concurrency=1, max_queue=1,
                                   queue_timeout_s=0.5, retry_after_s=3))
    async with app.router.lifespan_context(app):
        limiter = app.state.limiter
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://server") as client:
            up = await client.post("/v1/images", content=png_bytes(),
                                   headers={"content-type": "image/png"})
            body = {"image_id": up.json()["image_id"], "boxes": [BOX]}
            # Real work that holds the only slot (in a worker thread) until released.
            release = threading.Event()
            busy = asyncio.create_task(limiter.run(release.wait, 10))
            await asyncio.sleep(0.05)
            queued = asyncio.create_task(client.post("/v1/segment", json=body))
            while limiter.waiting < 1:
                await asyncio.sleep(0.01)
            full = await client.post("/v1/segment", json=body)
            assert_error(full, 503, "overloaded")
            assert full.headers["retry-after"] == "3"
            # The event loop is free while the slot computes: health and metrics answer.
            assert (await client.get("/healthz")).status_code == 200
            assert "boxmask_queue_depth 1.0" in (await client.get("/metrics")).text
            # The queued request gives up after queue_timeout_s instead of hanging.
            waited = await queued
            assert_error(waited, 503, "overloaded")
            assert "waited" in waited.json()["error"]["message"]
            release.set()
            await busy
            after = await client.post("/v1/segment", json=body)
            assert after.status_code == 200, after.text
            metrics = (await client.get("/metrics")).text
            assert 'boxmask_rejected_requests_total{reason="overloaded"} 2.0' in metrics


@pytest.mark.anyio
async def test_inference_runs_in_a_worker_thread_not_on_the_event_loop(model_dir: Path) -> None:
    app = create_app(make_settings(model_dir))
    async with app.router.lifespan_context(app):
        assert await app.state.limiter.run(threading.get_ident) != threading.get_ident()


def test_without_a_model_health_is_ok_readiness_says_how_to_get_one(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path / "empty"))) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "boxmask export" in ready.json()["message"]
        assert_error(client.post("/v1/segment", json={"image_id": "x", "boxes": [BOX]}),
                     503, "no_model")
        assert client.get("/v1/models").json() == {"default": None, "models": []}
        assert client.get("/").status_code == 200


def test_a_corrupt_model_fails_readiness_with_the_reason(model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "decoder.onnx").write_bytes(b"not onnx")
    with TestClient(create_app(make_settings(broken))) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "checksum" in ready.json()["message"]
        assert_error(client.post("/v1/images", content=png_bytes(),
                                 headers={"content-type": "image/png"}), 503, "backend_unavailable")
        assert client.get("/v1/models").json()["models"][0]["status"] == "failed"
        assert client.get("/healthz").status_code == 200


def test_an_unreachable_triton_fails_readiness_and_requests_503(model_dir: Path) -> None:
    settings = make_settings(model_dir, triton_url=f"127.0.0.1:{closed_port()}")
    assert settings.effective_backend == "triton"
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "Triton" in ready.json()["message"] or "tritonclient" in ready.json()["message"]
        r = client.post("/v1/segment", json={"image_id": "x", "boxes": [BOX]})
        assert_error(r, 503, "backend_unavailable")
        assert "retry-after" in r.headers
        assert client.get("/healthz").status_code == 200


def test_a_backend_failing_mid_request_fails_readiness_until_a_reload_works(
        model_dir: Path) -> None:
    with TestClient(create_app(make_settings(model_dir, reload_interval_s=0.0))) as client:
        predictor = client.app.state.registry.slot(None).predictor

        class FailingEncoder:  # fault injection: the backend dies under the next request
            def run(self, inputs, outputs=None):
                raise BackendUnavailable("encoder session lost (injected)")

        predictor.encoder = FailingEncoder()
        r = client.post("/v1/images", content=png_bytes(seed=5), headers={"content-type": "image/png"})
        assert_error(r, 503, "backend_unavailable")
        # Until readiness is checked again, the model refuses requests instead of failing each.
        assert client.app.state.registry.readiness()[0] is False
        # /readyz reloads the model (reload_interval_s=0): a fresh session works again.
        assert client.get("/readyz").status_code == 200
        r = client.post("/v1/images", content=png_bytes(seed=5), headers={"content-type": "image/png"})
        assert r.status_code == 200, r.text


def test_a_request_over_the_mask_pixel_budget_is_a_422_before_any_mask_is_made(model_dir: Path) -> None:
    from tests.server.conftest import IMAGE_H, IMAGE_W

    settings = make_settings(model_dir, max_mask_pixels=5 * IMAGE_H * IMAGE_W)
    with TestClient(create_app(settings)) as client:
        image_id = client.post("/v1/images", content=png_bytes(),
                               headers={"content-type": "image/png"}).json()["image_id"]
        five = client.post("/v1/segment", json={"image_id": image_id, "boxes": [BOX] * 5})
        assert five.status_code == 200, five.text
        six = client.post("/v1/segment", json={"image_id": image_id, "boxes": [BOX] * 6})
        assert_error(six, 422, "too_many_mask_pixels")
        detect = client.post("/v1/detect", json={"image_id": image_id, "score_threshold": 0.0,
                                                 "max_detections": 50})
        assert detect.status_code == 200 and len(detect.json()["instances"]) <= 5


def test_public_answers_carry_no_local_paths(model_dir: Path, tmp_path: Path) -> None:
    import json
    import re

    card = json.loads((model_dir / "model.json").read_text())
    card.setdefault("provenance", {})["config"] = {"data": {"train_images": "/srv/secret/train"}}
    private = tmp_path / "deep" / "private" / "model"
    shutil.copytree(model_dir, private)
    (private / "model.json").write_text(json.dumps(card))
    with TestClient(create_app(make_settings(private, api_token="t"))) as client:
        models = client.get("/v1/models", headers={"Authorization": "Bearer t"})
        assert models.status_code == 200
        assert not re.search(r'"(~?/)', models.text), "a JSON string holds an absolute path"
        assert str(tmp_path) not in models.text and "/srv/secret" not in models.text
        assert "train" in models.text  # what the path named is still there
    with TestClient(create_app(make_settings(tmp_path / "nowhere"))) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and str(tmp_path) not in ready.text


def test_a_broken_models_local_path_is_in_the_log_and_in_no_answer(
        model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken = tmp_path / "private" / "models" / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "decoder.onnx").write_bytes(b"not onnx")
    with TestClient(create_app(make_settings(broken))) as client:
        answers = [client.get("/labelstudio/health"), client.get("/labelstudio/"),
                   client.post("/v1/segment", json={"image_id": "x", "boxes": [BOX]}),
                   client.post("/v1/images", content=png_bytes(),
                               headers={"content-type": "image/png"}),
                   client.post("/labelstudio/predict", json={"tasks": [{"data": {}}]}),
                   client.get("/readyz"), client.get("/v1/models")]
        assert client.get("/labelstudio/health").json()["status"] == "DOWN"
        assert_error(answers[2], 503, "backend_unavailable")
        assert "checksum" in answers[2].json()["error"]["message"]  # the reason, without where
        for answer in answers:
            assert str(tmp_path) not in answer.text and "/private/" not in answer.text, answer.text
    assert any(str(broken) in str(getattr(r, "error", "")) for r in caplog.records)
