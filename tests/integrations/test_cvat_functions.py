"""CVAT's side: the nuclio handlers in deploy/cvat/ called with real nuclio-sdk objects, the
cvat-sdk auto-annotation function validated by cvat-sdk's own annotation mapper, and CVAT's mask
encoding decoded back to the runtime's masks.

A real CVAT needs docker and cannot run here; these tests hold each piece to the format CVAT
reads, as documented in findings and in CVAT's and cvat-sdk's source.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import logging
from pathlib import Path
from types import ModuleType

import cvat_sdk.auto_annotation as cvataa
import nuclio_sdk
import numpy as np
import pytest
import yaml
from cvat_sdk import models
from cvat_sdk.auto_annotation.driver import _AnnotationMapper, _DetectionFunctionContextImpl
from cvat_sdk.masks import decode_mask as sdk_decode_mask
from cvat_sdk.masks import encode_mask
from PIL import Image

from boxmask.integrations.cvat import auto_annotation
from boxmask.integrations.cvat.masks import decode_detector_mask, decode_mask
from boxmask.integrations.cvat.serverless import function_spec
from boxmask.runtime import ModelCard, Predictor
from boxmask.runtime.masks import polygons_to_mask

ROOT = Path(__file__).resolve().parents[2]
W, H = 72, 56


def png_bytes(seed: int = 0) -> bytes:
    rng = np.random.RandomState(seed)
    buf = io.BytesIO()
    Image.fromarray((rng.rand(H, W, 3) * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def predictor(model_dir: Path) -> Predictor:
    return Predictor.from_dir(model_dir)


# -- CVAT's mask format -----------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_our_decoder_reads_what_cvat_sdk_encodes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = rng.integers(3, 40, size=2)
    mask = rng.random((h, w)) < rng.uniform(0.1, 0.9)
    mask[0, 0] = bool(seed % 2)  # both "first run is background" and "first run is 0" cases
    if not mask.any():
        mask[h // 2, w // 2] = True
    np.testing.assert_array_equal(decode_mask(encode_mask(mask), w, h), mask)
    # With an explicit box (the whole image here) as well.
    np.testing.assert_array_equal(decode_mask(encode_mask(mask, [0, 0, w, h]), w, h), mask)


def test_decoder_refuses_runs_that_do_not_fill_the_box() -> None:
    with pytest.raises(ValueError, match="run lengths"):
        decode_mask([1, 2, 0, 0, 1, 1], 4, 4)
    with pytest.raises(ValueError, match="inside"):
        decode_mask([0, 4, 2, 2, 3, 3], 3, 3)


# -- nuclio handlers ----------------------------------------------------------------------------

def load_handler(kind: str) -> ModuleType:
    path = ROOT / "deploy" / "cvat" / kind / "main.py"
    spec = importlib.util.spec_from_file_location(f"cvat_{kind}_main", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def nuclio_context(monkeypatch: pytest.MonkeyPatch, model_dir: Path, kind: str, **env: str):
    monkeypatch.setenv("BOXMASK_MODEL_DIR", str(model_dir))
    monkeypatch.delenv("BOXMASK_TRITON_URL", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    module = load_handler(kind)
    context = nuclio_sdk.Context(logger=nuclio_sdk.Logger(logging.INFO, f"test-{kind}"))
    module.init_context(context)
    return module, context


def call(module: ModuleType, context, body: object) -> tuple[int, object]:
    # nuclio hands CVAT's JSON body to the handler already parsed.
    response = module.handler(context, nuclio_sdk.Event(body=body, content_type="application/json"))
    assert isinstance(response, nuclio_sdk.Response)
    assert response.content_type == "application/json"
    return response.status_code, json.loads(response.body)


def test_detector_function_replies_cvat_masks_equal_to_the_runtime_detections(
        monkeypatch, model_dir, predictor) -> None:
    module, context = nuclio_context(monkeypatch, model_dir, "detector")
    image = png_bytes(2)
    status, reply = call(module, context, {"image": base64.b64encode(image).decode(), "threshold": "0"})
    assert status == 200
    expected = predictor.detect(image=image, score_threshold=0.0)
    nonempty = [i for i in range(len(expected)) if expected.masks[i].any()]
    assert len(reply) == len(nonempty) > 0
    for item, i in zip(reply, nonempty, strict=True):
        assert item["type"] == "mask" and item["label"] == expected.names[i]
        # The mask's review score (boxmask.runtime.review): the masks to check first.
        assert float(item["confidence"]) == pytest.approx(float(expected.quality[i]), abs=1e-4)
        assert len(item["mask"]) == ((item["mask"][-2] - item["mask"][-4] + 1)
                                     * (item["mask"][-1] - item["mask"][-3] + 1) + 4)
        np.testing.assert_array_equal(decode_detector_mask(item["mask"], W, H), expected.masks[i])
        # The polygon CVAT uses for "convert masks to polygons" outlines the same object.
        outline = polygons_to_mask([item["points"]], H, W)
        assert (outline & expected.masks[i]).sum() > 0


def test_detector_threshold_defaults_when_cvat_sends_none(monkeypatch, model_dir) -> None:
    module, context = nuclio_context(monkeypatch, model_dir, "detector", BOXMASK_SCORE_THRESHOLD="1.0")
    status, reply = call(module, context, {"image": base64.b64encode(png_bytes(2)).decode()})
    assert status == 200 and reply == []  # nothing scores above 1.0


def _threshold_between_scores(predictor: Predictor, image: bytes) -> tuple[float, int]:
    """A threshold halfway between two of the model's detection scores on ``image``, and how
    many non-empty masks score above it: a function that ignores the threshold, or falls back
    to 0 or to the default 0.5, gets a different count."""
    found = predictor.detect(image=image, score_threshold=0.0)
    scores = sorted({round(float(s), 6) for s in found.scores})
    assert len(scores) >= 2, f"the test model needs two distinct scores, got {scores}"
    mid = len(scores) // 2
    threshold = (scores[mid - 1] + scores[mid]) / 2
    assert 0.0 < threshold < 0.5  # the test model's scores lie below the default 0.5
    kept = [i for i in range(len(found)) if found.scores[i] >= threshold and found.masks[i].any()]
    everything = [i for i in range(len(found)) if found.masks[i].any()]
    assert 0 < len(kept) < len(everything)
    return threshold, len(kept)


def test_detector_uses_the_score_threshold_of_its_environment(monkeypatch, model_dir, predictor) -> None:
    image = png_bytes(2)
    threshold, expected = _threshold_between_scores(predictor, image)
    module, context = nuclio_context(monkeypatch, model_dir, "detector",
                                     BOXMASK_SCORE_THRESHOLD=str(threshold))
    status, reply = call(module, context, {"image": base64.b64encode(image).decode()})
    assert status == 200 and len(reply) == expected
    # The threshold applies to the detector's class scores; `confidence` is the review score.
    found = predictor.detect(image=image, score_threshold=threshold)
    kept = [float(found.quality[i]) for i in range(len(found)) if found.masks[i].any()]
    assert [float(item["confidence"]) for item in reply] == pytest.approx(kept, abs=1e-4)
    # CVAT's own threshold field, when the user typed one, wins over the environment.
    status, reply = call(module, context, {"image": base64.b64encode(image).decode(), "threshold": 0.0})
    assert status == 200 and len(reply) > expected


def test_detector_function_rejects_bad_requests_with_400(monkeypatch, model_dir) -> None:
    module, context = nuclio_context(monkeypatch, model_dir, "detector")
    assert call(module, context, {"image": "not base64!"})[0] == 400
    assert call(module, context, {"image": base64.b64encode(b"not an image").decode()})[0] == 400
    status, reply = call(module, context, {"image": base64.b64encode(png_bytes()).decode(),
                                           "threshold": "high"})
    assert status == 400 and "threshold" in reply["error"]


def test_interactor_function_replies_the_mask_of_the_box_for_cvat_260(monkeypatch, model_dir, predictor) -> None:
    module, context = nuclio_context(monkeypatch, model_dir, "interactor")
    image = png_bytes(1)
    body = {"image": base64.b64encode(image).decode(), "pos_points": [], "neg_points": [],
            "obj_bbox": [[8.0, 6.0], [60.0, 50.0]]}
    status, reply = call(module, context, body)
    assert status == 200
    expected = predictor.predict([[8.0, 6.0, 60.0, 50.0]], labels=None,
                                 key=predictor.set_image(image)).masks[0]
    assert expected.any()
    (shape,) = reply["shapes"]
    assert shape["type"] == "mask"
    np.testing.assert_array_equal(decode_mask(shape["points"], W, H), expected)
    np.testing.assert_array_equal(sdk_decode_mask(shape["points"], image_width=W, image_height=H), expected)


def test_interactor_can_answer_cvat_259_and_needs_a_box(monkeypatch, model_dir, predictor) -> None:
    module, context = nuclio_context(monkeypatch, model_dir, "interactor",
                                     BOXMASK_CVAT_INTERACTOR_REPLY="mask")
    image = png_bytes(1)
    body = {"image": base64.b64encode(image).decode(), "pos_points": [[20, 20]], "neg_points": [],
            "obj_bbox": [[8.0, 6.0], [60.0, 50.0]]}
    status, reply = call(module, context, body)
    assert status == 200
    expected = predictor.predict([[8.0, 6.0, 60.0, 50.0]], key=predictor.set_image(image)).masks[0]
    np.testing.assert_array_equal(np.asarray(reply["mask"], dtype=bool), expected)
    status, reply = call(module, context, {"image": body["image"], "pos_points": [[3, 3]]})
    assert status == 400 and "obj_bbox" in reply["error"]


@pytest.mark.parametrize("kind", ["detector", "interactor"])
def test_function_yaml_carries_cvats_annotations_as_strings(kind: str) -> None:
    doc = yaml.safe_load((ROOT / "deploy" / "cvat" / kind / "function.yaml").read_text())
    annotations = doc["metadata"]["annotations"]
    assert all(isinstance(v, str) for v in annotations.values())
    assert annotations["type"] == kind
    assert doc["spec"]["handler"] == "main:handler"
    if kind == "interactor":
        assert (annotations["startswith_box"], annotations["min_pos_points"], annotations["version"]) \
            == ("true", "0", "2")
    else:
        labels = json.loads(annotations["spec"])
        assert all(label["type"] == "mask" for label in labels)
        names = [label["name"] for label in labels]
        assert len(set(names)) == len(names)


def test_function_spec_lists_the_model_categories_as_masks(model_dir) -> None:
    card = ModelCard.load(model_dir, verify=False)
    assert function_spec(card) == [{"id": c.id, "name": c.name, "type": "mask"} for c in card.categories]


# -- cvat-sdk auto-annotation function ------------------------------------------------------------

def task_labels(names: list[str]) -> list[models.Label]:
    return [models.Label(id=100 + i, name=n, type="any", attributes=[], sublabels=[])
            for i, n in enumerate(names)]


@pytest.mark.parametrize("to_poly", [False, True])
def test_auto_annotation_function_passes_cvat_sdks_own_checks(model_dir, predictor, to_poly) -> None:
    function = auto_annotation.create(model_dir=str(model_dir), score_threshold=0.0)
    assert isinstance(function.spec, cvataa.DetectionFunctionSpec)
    names = [c.name for c in predictor.card.categories]
    mapper = _AnnotationMapper(logging.getLogger("test"), function.spec.labels, task_labels(names),
                               allow_unmatched_labels=False, conv_mask_to_poly=to_poly)
    image = Image.open(io.BytesIO(png_bytes(2)))
    shapes = function.detect(_DetectionFunctionContextImpl(frame_name="f.png", conf_threshold=0.0,
                                                            conv_mask_to_poly=to_poly), image)
    _, remapped = mapper.validate_and_remap(shapes, ds_frame=3)  # raises BadFunctionError if wrong
    assert remapped and all(s.frame == 3 for s in remapped)
    expected = predictor.detect(image=png_bytes(2), score_threshold=0.0)
    if to_poly:
        assert all(s.type.value == "polygon" for s in remapped)
        return
    nonempty = [i for i in range(len(expected)) if expected.masks[i].any()]
    assert len(remapped) == len(nonempty)
    for shape, i in zip(remapped, nonempty, strict=True):
        assert shape.type.value == "mask"
        assert shape.label_id == 100 + names.index(expected.names[i])
        np.testing.assert_array_equal(decode_mask(shape.points, W, H), expected.masks[i])


def test_auto_annotation_uses_its_score_threshold_unless_cvat_sends_one(model_dir, predictor) -> None:
    threshold, expected = _threshold_between_scores(predictor, png_bytes(2))
    function = auto_annotation.create(model_dir=str(model_dir), score_threshold=threshold)
    image = Image.open(io.BytesIO(png_bytes(2)))
    unset = _DetectionFunctionContextImpl(frame_name="f.png", conf_threshold=None, conv_mask_to_poly=False)
    assert len(function.detect(unset, image)) == expected
    zero = _DetectionFunctionContextImpl(frame_name="f.png", conf_threshold=0.0, conv_mask_to_poly=False)
    assert len(function.detect(zero, image)) > expected


def test_auto_annotation_needs_a_model(monkeypatch) -> None:
    monkeypatch.delenv("BOXMASK_MODEL_DIR", raising=False)
    with pytest.raises(ValueError, match="model_dir"):
        auto_annotation.create()


# -- settings -----------------------------------------------------------------------------------

def test_the_cvat_functions_read_their_environment_in_one_place() -> None:
    from boxmask.integrations.cvat.settings import CvatSettings
    from boxmask.runtime import PredictorOptions

    settings = CvatSettings.from_env({
        "BOXMASK_MODEL_DIR": "/m", "BOXMASK_TRITON_URL": "grpc://triton:8001",
        "BOXMASK_PRECISION": "int8", "BOXMASK_CACHE_BYTES": "1024",
        "BOXMASK_SCORE_THRESHOLD": "0.25", "BOXMASK_CVAT_INTERACTOR_REPLY": "mask"})
    assert settings == CvatSettings(model_dir="/m", triton_url="grpc://triton:8001",
                                    precision="int8", cache_bytes=1024, score_threshold=0.25,
                                    interactor_reply="mask")
    assert settings.predictor_options() == PredictorOptions(
        backend="triton", triton_url="grpc://triton:8001", precision="int8", cache_bytes=1024)
    # A cvat-cli parameter wins over the environment; an empty URL is no Triton.
    given = CvatSettings.from_env({"BOXMASK_MODEL_DIR": "/m", "BOXMASK_TRITON_URL": ""},
                                  model_dir="/given", triton_url=None)
    assert (given.model_dir, given.predictor_options().backend) == ("/given", "onnxruntime")
    # Nothing else of the integration, nor the nuclio handlers, reads the environment.
    readers = [path for path in [*(ROOT / "boxmask" / "integrations" / "cvat").glob("*.py"),
                                 *(ROOT / "deploy" / "cvat").glob("*/main.py")]
               if "os.environ" in path.read_text() and path.name != "settings.py"]
    assert readers == []
