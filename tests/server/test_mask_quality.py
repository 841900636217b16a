"""`quality` and `tight_box` in `/v1/segment` and `/v1/detect`: a model with the mask-quality
head answers each mask's predicted IoU on every path (JSON, multipart, the labelled fast path,
the detector); one without it answers as before, with `quality` null; the tight box comes on
request, beside the box that was sent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from boxmask.runtime import Predictor
from boxmask.runtime.masks import mask_box
from boxmask.server import create_app
from tests.server.conftest import make_settings
from tests.server.test_api import decode_rle

BOXES = [[2.0, 2.0, 40.0, 30.0], [10.0, 8.0, 60.0, 58.0], [0.0, 0.0, 64.0, 64.0]]
LABELS = ["disc", "square", "triangle"]


@pytest.fixture(scope="module")
def image(tiny_dataset: Path) -> bytes:
    return min((tiny_dataset / "images" / "val").glob("*.png")).read_bytes()


@pytest.fixture(scope="module")
def quality_client(quality_model_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(quality_model_dir))) as c:
        yield c


@pytest.fixture(scope="module")
def plain_client(model_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(model_dir))) as c:
        yield c


def _segment(client: TestClient, image: bytes, **fields) -> list[dict]:
    """``/v1/segment`` as JSON (image uploaded first) and as multipart; both answers, checked
    to be the same, as the instances."""
    up = client.post("/v1/images", content=image, headers={"content-type": "image/png"})
    assert up.status_code == 200, up.text
    by_json = client.post("/v1/segment", json={"image_id": up.json()["image_id"], **fields})
    # Form fields are text: lists as JSON, booleans as true/false.
    form = {k: json.dumps(v) if isinstance(v, list) else str(v).lower() for k, v in fields.items()}
    by_form = client.post("/v1/segment", files={"image": ("x.png", image, "image/png")},
                          data=form)
    assert by_json.status_code == by_form.status_code == 200, (by_json.text, by_form.text)
    assert by_json.json() == by_form.json()
    return by_json.json()["instances"]


@pytest.mark.parametrize("labels", [None, LABELS], ids=["predicted-class", "labelled-fast-path"])
def test_segment_returns_each_masks_quality(quality_client: TestClient, quality_model_dir: Path,
                                            image: bytes, labels) -> None:
    fields = {"boxes": BOXES} | ({"labels": labels} if labels else {})
    got = _segment(quality_client, image, **fields)
    p = Predictor.from_dir(quality_model_dir)
    expected = p.predict(BOXES, labels=labels, key=p.set_image(image), class_scores=False)
    if labels:
        assert all(inst["score"] is None for inst in got)  # the labelled decoder ran
    assert [inst["quality"] for inst in got] == pytest.approx(expected.quality.tolist(), abs=1e-5)
    assert all(0.0 <= inst["quality"] <= 1.0 for inst in got)
    assert all(inst["tight_box"] is None for inst in got)  # not asked for


def test_detect_returns_each_detections_quality(quality_client: TestClient,
                                                quality_model_dir: Path, image: bytes) -> None:
    r = quality_client.post("/v1/detect", files={"image": ("x.png", image, "image/png")},
                            data={"score_threshold": "0"})
    assert r.status_code == 200, r.text
    got = r.json()["instances"]
    p = Predictor.from_dir(quality_model_dir)
    expected = p.detect(image=image, score_threshold=0.0)
    assert len(got) == len(expected) > 0
    assert [inst["quality"] for inst in got] == pytest.approx(expected.quality.tolist(), abs=1e-5)


@pytest.mark.parametrize("labels", [None, LABELS], ids=["predicted-class", "labelled-fast-path"])
def test_the_tight_box_is_the_masks_box_beside_the_drawn_box(
        quality_client: TestClient, image: bytes, labels) -> None:
    fields = {"boxes": BOXES, "tight_box": True} | ({"labels": labels} if labels else {})
    got = _segment(quality_client, image, **fields)
    for inst, box in zip(got, BOXES, strict=True):
        assert inst["box"] == box  # the drawn box is kept, never replaced
        mask = decode_rle(inst["mask"])
        expected = mask_box(mask)
        assert inst["tight_box"] == (None if expected is None else list(expected))
        if expected is not None:
            x1, y1, x2, y2 = inst["tight_box"]
            assert box[0] <= x1 < x2 <= box[2] and box[1] <= y1 < y2 <= box[3]
    assert any(inst["tight_box"] is not None for inst in got)


def test_a_model_without_the_head_answers_with_the_review_score_of_its_masks(
        plain_client: TestClient, model_dir: Path, image: bytes) -> None:
    got = _segment(plain_client, image, boxes=BOXES)
    p = Predictor.from_dir(model_dir)
    expected = p.predict(BOXES, key=p.set_image(image))
    assert np.isnan(expected.head_quality).all()
    assert [inst["score"] for inst in got] == pytest.approx(expected.scores.tolist(), abs=1e-5)
    assert [inst["quality"] for inst in got] == pytest.approx(expected.quality.tolist(),
                                                              abs=1e-5)
    for inst, mask in zip(got, expected.iter_masks(), strict=True):
        assert 0 <= inst["quality"] <= 1 and inst["tight_box"] is None
        assert np.array_equal(decode_rle(inst["mask"]), mask)
    # The tight box does not need the head.
    tight = _segment(plain_client, image, boxes=BOXES, labels=LABELS, tight_box=True)
    assert [inst["tight_box"] for inst in tight] == [
        None if (b := mask_box(decode_rle(inst["mask"]))) is None else list(b) for inst in tight]
    detected = plain_client.post("/v1/detect", files={"image": ("x.png", image, "image/png")},
                                 data={"score_threshold": "0"})
    assert detected.status_code == 200, detected.text
    assert all(0 <= inst["quality"] <= 1 for inst in detected.json()["instances"])


def test_the_openapi_schema_documents_quality_and_tight_box(plain_client: TestClient) -> None:
    schemas = plain_client.get("/openapi.json").json()["components"]["schemas"]
    instance = schemas["Instance"]["properties"]
    assert {"quality", "tight_box"} <= set(instance)
    assert "mask-quality head" in instance["quality"]["description"]
    assert "tight_box" in schemas["SegmentParams"]["properties"]
