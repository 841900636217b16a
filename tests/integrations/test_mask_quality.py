"""Mask quality in the annotation tools: Label Studio's predictions carry each mask's predicted
IoU as the region's `score` and the lowest of a task's as the prediction's `score` (what Label
Studio sorts tasks by, so the worst come first); CVAT's detector and interactor give it where
CVAT reads a confidence. A model without the head answers as before.

The model with the head is tests/conftest.py's `quality_model_dir` (barely trained: its
qualities sit near 0.5, a little apart, which is all an order needs); the model without it is
this folder's `model_dir`, the contract model.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from boxmask.runtime import Predictor
from tests.integrations.test_cvat_functions import call, nuclio_context
from tests.integrations.test_labelstudio_backend import CONFIG, POLYGON_CONFIG, decode_brush

SIZE = 64  # the tiny dataset's images
# Per task, the boxes of its stored annotation (pixels) and their labels.
TASK_BOXES = [
    ([[2, 2, 40, 30], [10, 8, 60, 58]], ["disc", "square"]),
    ([[0, 0, 64, 64]], ["square"]),
    ([[5, 30, 50, 62], [20, 2, 62, 40], [1, 1, 30, 30]], ["disc", "disc", "square"]),
    ([[12, 12, 52, 52]], ["disc"]),
]


def _rect(box: list[float], label: str, rid: str) -> dict:
    x1, y1, x2, y2 = box
    return {"id": rid, "type": "rectanglelabels", "from_name": "boxes", "to_name": "pic",
            "original_width": SIZE, "original_height": SIZE,
            "value": {"x": 100 * x1 / SIZE, "y": 100 * y1 / SIZE, "width": 100 * (x2 - x1) / SIZE,
                      "height": 100 * (y2 - y1) / SIZE, "rotation": 0,
                      "rectanglelabels": [label]}}


@pytest.fixture(scope="module")
def images(tiny_dataset: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((tiny_dataset / "images" / "val").glob("*.png"))]


def _uri(image: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(image).decode()


def _tasks(images: list[bytes]) -> list[dict]:
    return [{"id": 100 + t, "data": {"photo": _uri(images[t % len(images)])},
             "annotations": [{"id": t + 1, "was_cancelled": False,
                              "result": [_rect(b, label, f"t{t}r{i}")
                                         for i, (b, label)
                                         in enumerate(zip(boxes, labels, strict=True))]}],
             "predictions": []}
            for t, (boxes, labels) in enumerate(TASK_BOXES)]


def _ls_client(model_dir: Path, **ls_settings) -> TestClient:
    from boxmask.server.app import create_app
    from boxmask.server.settings import LabelStudioSettings, ServerSettings

    return TestClient(create_app(ServerSettings(model_dir=model_dir, demo=False, log_json=False),
                                 LabelStudioSettings(**ls_settings)))


@pytest.fixture(scope="module")
def ls_quality(quality_model_dir: Path) -> Iterator[TestClient]:
    with _ls_client(quality_model_dir) as client:
        yield client


def _retrieve(client: TestClient, tasks: list[dict], config: str = CONFIG) -> list[dict]:
    """"Retrieve Predictions" for `tasks`: one prediction per task."""
    response = client.post("/labelstudio/predict", json={
        "tasks": tasks, "project": "3.1", "label_config": config, "params": {"context": None}})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == len(tasks) and all("result" in r for r in results), results
    return results


def test_label_studio_orders_tasks_by_their_worst_mask(ls_quality: TestClient,
                                                       quality_model_dir: Path,
                                                       images: list[bytes]) -> None:
    """Each mask region's score is the runtime's quality of that mask; a prediction's score is
    the lowest of its regions', so sorting tasks by score (what Label Studio's Data Manager and
    uncertainty sampling do, ascending) puts the task with the worst mask first."""
    tasks = _tasks(images)
    results = _retrieve(ls_quality, tasks, POLYGON_CONFIG)
    p = Predictor.from_dir(quality_model_dir)
    worst = []
    for task, result, (boxes, labels) in zip(tasks, results, TASK_BOXES, strict=True):
        image = images[(task["id"] - 100) % len(images)]
        expected = p.predict(boxes, labels=labels, key=p.set_image(image))
        assert expected.has_quality
        brushes = [r for r in result["result"] if r["type"] == "brushlabels"]
        assert [r["score"] for r in brushes] == pytest.approx(expected.quality.tolist(), abs=1e-6)
        for item, mask in zip(brushes, expected.iter_masks(), strict=True):
            np.testing.assert_array_equal(decode_brush(item), mask)  # the mask scored
        # Polygons of a mask carry its score too.
        polygons = [r for r in result["result"] if r["type"] == "polygonlabels"]
        assert polygons and {r["score"] for r in polygons} <= {r["score"] for r in brushes}
        assert result["score"] == pytest.approx(float(expected.quality.min()), abs=1e-6)
        assert result["score"] == min(r["score"] for r in result["result"])
        worst.append(float(expected.quality.min()))
    by_score = sorted(range(len(tasks)), key=lambda t: results[t]["score"])
    assert by_score == sorted(range(len(tasks)), key=lambda t: worst[t])
    assert len(set(worst)) == len(worst)  # a real order, not ties


def test_a_drawn_box_gets_its_masks_quality_as_score(ls_quality: TestClient,
                                                     quality_model_dir: Path,
                                                     images: list[bytes]) -> None:
    box = [10, 8, 60, 58]
    response = ls_quality.post("/labelstudio/predict", json={
        "tasks": [{"id": 7, "data": {"photo": _uri(images[0])}}], "project": "3.1",
        "label_config": CONFIG, "params": {"context": {"result": [_rect(box, "square", "d")]}}})
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["results"]
    p = Predictor.from_dir(quality_model_dir)
    quality = float(p.predict([box], labels=["square"], key=p.set_image(images[0])).quality[0])
    (region,) = prediction["result"]
    assert region["score"] == pytest.approx(quality, abs=1e-6) == prediction["score"]


def test_detector_masks_carry_quality_and_their_rectangles_the_class_score(
        quality_model_dir: Path, images: list[bytes]) -> None:
    # Every category of the model in the config: no detection is left out for want of a label.
    names = "".join(f'<Label value="{n}"/>' for n in Predictor.from_dir(quality_model_dir).card.names)
    config = (CONFIG.replace('<Label value="disc"/><Label value="square"/><Label value="Triangle"/>',
                             names))
    with _ls_client(quality_model_dir, score_threshold=0.0, max_detections=5) as client:
        (result,) = _retrieve(client, [{"id": 11, "data": {"photo": _uri(images[1])}}], config)
    detections = Predictor.from_dir(quality_model_dir).detect(
        image=images[1], score_threshold=0.0, max_detections=5)
    rects = [r for r in result["result"] if r["type"] == "rectanglelabels"]
    masks = [r for r in result["result"] if r["type"] == "brushlabels"]
    assert len(rects) == len(masks) == len(detections) > 0
    assert [r["score"] for r in rects] == pytest.approx(detections.scores.tolist(), abs=1e-6)
    assert [r["score"] for r in masks] == pytest.approx(detections.quality.tolist(), abs=1e-6)
    assert result["score"] == pytest.approx(float(detections.quality.min()), abs=1e-6)


def test_without_the_head_label_studio_scores_are_the_review_score_of_the_masks(
        model_dir: Path, images: list[bytes]) -> None:
    """A model without the mask-quality head still ranks its masks for review (the mask's
    confidence and colour separation, boxmask.runtime.review): the worst task comes first."""
    tasks = _tasks(images)
    with _ls_client(model_dir) as client:
        results = _retrieve(client, tasks)
    p = Predictor.from_dir(model_dir)
    for task, result, (boxes, labels) in zip(tasks, results, TASK_BOXES, strict=True):
        image = images[(task["id"] - 100) % len(images)]
        expected = p.predict(boxes, labels=labels, key=p.set_image(image))
        assert expected.has_quality and np.isnan(expected.head_quality).all()
        assert [r["score"] for r in result["result"]] == pytest.approx(
            expected.quality.tolist(), abs=1e-6)
        assert result["score"] == pytest.approx(float(expected.quality.min()), abs=1e-6)


# -- CVAT -------------------------------------------------------------------------------------

def test_cvat_detector_confidence_is_the_masks_quality(monkeypatch, quality_model_dir: Path,
                                                       images: list[bytes]) -> None:
    module, context = nuclio_context(monkeypatch, quality_model_dir, "detector")
    status, reply = call(module, context, {"image": base64.b64encode(images[0]).decode(),
                                           "threshold": "0"})
    assert status == 200
    expected = Predictor.from_dir(quality_model_dir).detect(image=images[0], score_threshold=0.0)
    nonempty = [i for i, m in enumerate(expected.iter_masks()) if m.any()]
    assert len(reply) == len(nonempty) > 0
    for item, i in zip(reply, nonempty, strict=True):
        assert item["label"] == expected.names[i]
        assert float(item["confidence"]) == pytest.approx(float(expected.quality[i]), abs=1e-4)


def test_cvat_interactor_gives_the_quality_as_the_shapes_confidence(
        monkeypatch, quality_model_dir: Path, model_dir: Path, images: list[bytes]) -> None:
    """The attribute cvat-sdk's interaction functions use for a confidence; the SDK's own
    result type accepts the shape as replied."""
    import cvat_sdk.auto_annotation as cvataa
    from cvat_sdk import models

    body = {"image": base64.b64encode(images[0]).decode(), "pos_points": [], "neg_points": [],
            "obj_bbox": [[10.0, 8.0], [60.0, 58.0]]}
    module, context = nuclio_context(monkeypatch, quality_model_dir, "interactor")
    status, reply = call(module, context, body)
    assert status == 200
    (shape,) = reply["shapes"]
    p = Predictor.from_dir(quality_model_dir)
    quality = float(p.predict([[10, 8, 60, 58]], key=p.set_image(images[0])).quality[0])
    (attribute,) = shape["attributes"]
    assert attribute["spec_id"] == cvataa.InteractionResultAttributes.CONFIDENCE
    assert float(attribute["value"]) == pytest.approx(quality, abs=1e-4)
    cvataa.InteractionResultShape(
        type=shape["type"], points=shape["points"],
        attributes=[models.AttributeValRequest(**a) for a in shape["attributes"]])

    # Without the head: the review score of the mask's statistics alone.
    module, context = nuclio_context(monkeypatch, model_dir, "interactor")
    status, reply = call(module, context, body)
    assert status == 200
    (shape,) = reply["shapes"]
    p = Predictor.from_dir(model_dir)
    plain = p.predict([[10, 8, 60, 58]], key=p.set_image(images[0]))
    assert np.isnan(plain.head_quality).all()
    assert float(shape["attributes"][0]["value"]) == pytest.approx(float(plain.quality[0]),
                                                                   abs=1e-4)
