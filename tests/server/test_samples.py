"""Sample images shipped in a model directory: listed by /v1/models, served by name only."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from boxmask.server import create_app
from tests.server.conftest import assert_error, make_settings, png_bytes

BUNDLED = Path(__file__).resolve().parents[2] / "boxmask" / "assets" / "models" / "synthetic-demo"


@pytest.fixture(scope="module")
def with_samples(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("samples_model")
    model = root / "synth-tiny"
    shutil.copytree(model_dir, model)
    (model / "samples").mkdir()
    (model / "samples" / "b.png").write_bytes(png_bytes(seed=1))
    (model / "samples" / "a.png").write_bytes(png_bytes(seed=2))
    (model / "samples" / "notes.txt").write_text("not an image")
    (root / "secret.png").write_bytes(png_bytes(seed=3))
    (model / "samples" / "link.png").symlink_to(root / "secret.png")  # points out of the model
    return model


def test_models_lists_only_the_plain_image_files_of_samples_and_serves_them(with_samples):
    with TestClient(create_app(make_settings(with_samples))) as client:
        (model,) = client.get("/v1/models").json()["models"]
        assert model["samples"] == ["/v1/models/synth-tiny/samples/a.png",
                                    "/v1/models/synth-tiny/samples/b.png"]
        r = client.get(model["samples"][0])
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.content == png_bytes(seed=2)
        # The sample segments like any upload: the page sends its bytes to /v1/images.
        up = client.post("/v1/images", content=r.content, headers={"content-type": "image/png"})
        assert up.status_code == 200, up.text


@pytest.mark.parametrize("name", ["link.png", "notes.txt", "c.png", ".model.json"])
def test_anything_not_listed_is_a_404(with_samples, name):
    with TestClient(create_app(make_settings(with_samples))) as client:
        assert_error(client.get(f"/v1/models/synth-tiny/samples/{name}"), 404, "unknown_sample")
        assert_error(client.get("/v1/models/nope/samples/a.png"), 404, "unknown_model")
        # Dot segments and encoded slashes make other paths, which no route serves.
        for path in ("..%2Fmodel.json", "..", "%2E%2E", "../model.json"):
            r = client.get(f"/v1/models/synth-tiny/samples/{path}")
            assert r.status_code == 404 and b"format_version" not in r.content, path


def test_samples_need_the_token_when_the_server_has_one(with_samples):
    with TestClient(create_app(make_settings(with_samples, api_token="s3cret"))) as client:
        assert client.get("/v1/models/synth-tiny/samples/a.png").status_code == 401
        ok = client.get("/v1/models/synth-tiny/samples/a.png",
                        headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200


def test_a_model_without_samples_lists_none(model_dir):
    with TestClient(create_app(make_settings(model_dir))) as client:
        assert client.get("/v1/models").json()["models"][0]["samples"] == []


def test_the_bundled_demo_model_ships_samples_of_its_own_domain():
    files = sorted(p.name for p in (BUNDLED / "samples").iterdir())
    assert len(files) >= 3 and all(f.endswith(".png") for f in files)
