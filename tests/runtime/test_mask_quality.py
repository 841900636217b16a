"""The mask-quality head and the review score through the runtime: `Prediction.head_quality` is
what the decoders' `quality` output says for each mask, on every path (full decoder, labelled
decoder, detector, runs under a decoder budget, int8), and `Prediction.quality` is the review
score of boxmask.runtime.review on it; a model without the head gets the review score of the
mask's statistics alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from boxmask.runtime import Predictor
from boxmask.runtime.contract import QUALITY
from boxmask.runtime.review import review_score, sample_box_colours, weights_for

BOXES = [[2, 2, 40, 30], [10, 8, 60, 58], [0, 0, 64, 64], [30, 30, 50, 62]]
# The int8 graphs' quality may differ from fp32's by this much (the bar: a review order
# that int8 reshuffles by more is not the model's).
INT8_QUALITY_TOL = 0.02


def _image(tiny_dataset: Path) -> np.ndarray:
    path = min((tiny_dataset / "images" / "val").glob("*.png"))
    return np.asarray(Image.open(path).convert("RGB"))


def _graph_quality(model_dir: Path, graph: str, predictor: Predictor, key: str,
                   boxes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The ``quality`` output of ``graph``.onnx run directly by ONNX Runtime on the predictor's
    cached features (boxes in resized-image pixels, contiguous labels)."""
    _, entry = predictor._entry(key)
    rh, rw = entry.info.resized_size
    session = ort.InferenceSession(str(model_dir / f"{graph}.onnx"),
                                   providers=["CPUExecutionProvider"])
    feed = {**entry.features, "boxes": boxes.astype(np.float32), "labels": labels,
            "image_size": np.array([rh, rw], dtype=np.int64)}
    return session.run([QUALITY], {i.name: feed[i.name] for i in session.get_inputs()})[0]


def _resized(predictor: Predictor, key: str, boxes) -> np.ndarray:
    from boxmask.runtime.transforms import boxes_to_resized

    return boxes_to_resized(np.asarray(boxes, dtype=np.float32), predictor._entry(key)[1].info)


def test_the_card_of_a_model_with_the_head_says_so(quality_model_dir: Path,
                                                   model_dir: Path) -> None:
    assert Predictor.from_dir(quality_model_dir).card.mask_quality is True
    assert Predictor.from_dir(model_dir).card.mask_quality is False


def test_predict_returns_each_masks_quality_from_the_decoder_it_ran(
        quality_model_dir: Path, tiny_dataset: Path) -> None:
    p = Predictor.from_dir(quality_model_dir, intra_op_threads=1)
    key = p.set_image(_image(tiny_dataset))
    labelled = [1, 2, 3, 1]
    full = p.predict(BOXES, labels=[1, None, 3, None], key=key)
    fast = p.predict(BOXES, labels=labelled, key=key, class_scores=False)
    assert full.has_quality and fast.has_quality
    assert np.isnan(fast.scores).all()  # the labelled decoder ran
    contiguous = np.array([p.card.by_id(i).label for i in full.labels.tolist()], np.int64)
    resized = _resized(p, key, BOXES)
    np.testing.assert_allclose(
        full.head_quality,
        _graph_quality(quality_model_dir, "decoder", p, key, resized, contiguous), atol=1e-6)
    given = np.array([p.card.by_id(i).label for i in labelled], np.int64)
    np.testing.assert_allclose(
        fast.head_quality,
        _graph_quality(quality_model_dir, "labelled_decoder", p, key, resized, given), atol=1e-6)
    # The served quality is the review score with the head's IoU as one of its terms.
    colours = sample_box_colours(p._entry(key)[1].pixels, resized, full.mask_probs.shape[-1])
    for pred in (full, fast):
        np.testing.assert_allclose(
            pred.quality, review_score(pred.mask_probs, colours, pred.head_quality), atol=1e-6)
        assert ((pred.quality >= 0) & (pred.quality <= 1)).all()
    # A subset keeps each mask's own quality.
    np.testing.assert_array_equal(full.subset([2, 0]).quality, full.quality[[2, 0]])
    np.testing.assert_array_equal(full.subset([2, 0]).head_quality, full.head_quality[[2, 0]])


def test_detections_carry_the_quality_of_their_own_masks(quality_model_dir: Path,
                                                        tiny_dataset: Path) -> None:
    """The detector has no quality output: the labelled decoder scores the detections' boxes
    with their labels, which give the detector's very masks."""
    p = Predictor.from_dir(quality_model_dir, intra_op_threads=1)
    key = p.set_image(_image(tiny_dataset))
    det = p.detect(key=key, score_threshold=0.0)
    assert len(det) > 1 and det.has_quality
    again = p.predict(det.boxes, labels=det.labels.tolist(), key=key, class_scores=False)
    # The boxes went to original pixels and back: equal up to float rounding.
    np.testing.assert_allclose(det.head_quality, again.head_quality, atol=1e-4)
    np.testing.assert_allclose(det.quality, again.quality, atol=1e-4)
    np.testing.assert_allclose(det.mask_probs, again.mask_probs, atol=1e-4)


def test_runs_under_a_decoder_budget_give_the_same_quality(quality_model_dir: Path,
                                                           tiny_dataset: Path) -> None:
    from boxmask.runtime.predictor import decoder_bytes_per_box

    whole = Predictor.from_dir(quality_model_dir, intra_op_threads=1)
    budget = Predictor.from_dir(quality_model_dir, intra_op_threads=1,
                                decoder_budget_bytes=decoder_bytes_per_box(whole.card))
    assert budget.boxes_per_run == 1
    image = _image(tiny_dataset)
    for p in (whole, budget):
        p.set_image(image)
    np.testing.assert_allclose(budget.predict(BOXES).quality, whole.predict(BOXES).quality,
                               atol=1e-6)
    np.testing.assert_allclose(budget.detect(score_threshold=0.0).quality,
                               whole.detect(score_threshold=0.0).quality, atol=1e-6)


@pytest.mark.parametrize("refine", ["crf", "crf_wide"])
def test_a_refined_mask_is_scored_by_its_own_colours_and_the_decoders_confidence(
        quality_model_dir: Path, tiny_dataset: Path, refine: str) -> None:
    """Served refined by the CRF, a mask's quality is the review score of the decoder's mask
    (its confidence) with the refined mask's colour separation and edge contrast, weighed as
    fitted for that finish: the decoder's masks come from the same model served without
    refinement."""
    from boxmask.runtime.crf import KERNELS, refine_boxes

    plain = Predictor.from_dir(quality_model_dir, intra_op_threads=1, mask_refine="none")
    refined = Predictor.from_dir(quality_model_dir, intra_op_threads=1, mask_refine=refine)
    image = _image(tiny_dataset)
    key = plain.set_image(image)
    assert refined.set_image(image) == key
    decoded, served = plain.predict(BOXES, key=key), refined.predict(BOXES, key=key)
    pixels = plain._entry(key)[1].pixels
    resized = _resized(plain, key, BOXES)
    want = refine_boxes(pixels, resized, decoded.mask_probs, KERNELS[refine])
    np.testing.assert_allclose(served.mask_probs, want, atol=1e-6)
    colours = sample_box_colours(pixels, resized, decoded.mask_probs.shape[-1])
    np.testing.assert_allclose(
        served.quality, review_score(decoded.mask_probs, colours, decoded.head_quality,
                                     served=want, weights=weights_for(refine)), atol=1e-6)
    np.testing.assert_array_equal(served.head_quality, decoded.head_quality)


class _NoQualitySession:
    """A decoder session that fails if asked for ``quality`` (a model without the head has
    no such output: ONNX Runtime would refuse the name)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    input_names = property(lambda self: self.inner.input_names)
    output_names = property(lambda self: self.inner.output_names)

    def run(self, inputs, output_names=None):
        assert QUALITY not in (output_names or ()), "asked a model without the head for quality"
        return self.inner.run(inputs, output_names)

    def describe(self) -> str:
        return self.inner.describe()


def test_a_model_without_the_head_gets_the_review_score_of_its_masks_alone(
        model_dir: Path, tiny_dataset: Path) -> None:
    p = Predictor.from_dir(model_dir, intra_op_threads=1)
    p.decoder = _NoQualitySession(p.decoder)  # type: ignore[assignment]
    p.labelled_decoder = _NoQualitySession(p.labelled_decoder)  # type: ignore[assignment]
    key = p.set_image(_image(tiny_dataset))
    for pred in (p.predict(BOXES, key=key),
                 p.predict(BOXES, labels=[1, 1, 2, 2], key=key, class_scores=False),
                 p.detect(key=key, score_threshold=0.0)):
        assert pred.quality is not None and pred.quality.shape == (len(pred),)
        assert np.isnan(pred.head_quality).all()
        assert pred.has_quality and ((pred.quality >= 0) & (pred.quality <= 1)).all()
        _, entry = p._entry(key)
        colours = sample_box_colours(entry.pixels, _resized(p, key, pred.boxes),
                                     pred.mask_probs.shape[-1])
        np.testing.assert_allclose(pred.quality, review_score(pred.mask_probs, colours),
                                   atol=1e-6)


def test_int8_quality_stays_within_002_of_fp32(quality_model_dir: Path,
                                              tiny_dataset: Path) -> None:
    """The export measures it on held-out images and writes it into the card; the predictor at
    int8 gives the same order of difference on boxes of another image."""
    card = json.loads((quality_model_dir / "model.json").read_text())
    figures = card["quantization"]["int8"]
    assert figures["int8_quality_max_abs_vs_fp32"] <= INT8_QUALITY_TOL, figures
    assert 0 <= figures["int8_quality_mean_abs_vs_fp32"] <= figures["int8_quality_max_abs_vs_fp32"]
    image = _image(tiny_dataset)
    fp32 = Predictor.from_dir(quality_model_dir, intra_op_threads=1)
    int8 = Predictor.from_dir(quality_model_dir, intra_op_threads=1, precision="int8")
    assert "int8" in int8.describe()["decoder"] and "int8" in int8.describe()["labelled_decoder"]
    for class_scores in (True, False):
        a = fp32.predict(BOXES, labels=[1, 2, 3, 1], key=fp32.set_image(image),
                         class_scores=class_scores)
        b = int8.predict(BOXES, labels=[1, 2, 3, 1], key=int8.set_image(image),
                         class_scores=class_scores)
        assert np.abs(a.head_quality - b.head_quality).max() <= INT8_QUALITY_TOL
        assert np.abs(a.quality - b.quality).max() <= INT8_QUALITY_TOL


@pytest.mark.parametrize("fill", [0.0, 1.0])
def test_the_tight_box_is_the_box_of_the_masks_pixels_beside_the_drawn_box(
        quality_model_dir: Path, fill: float) -> None:
    p = Predictor.from_dir(quality_model_dir, intra_op_threads=1)
    drawn = (4.5, 6.2, 30.7, 40.1)
    pred = p.predict([drawn], labels=[1], key=p.set_image(np.zeros((48, 64, 3), np.uint8)))
    pred.mask_probs[0] = fill  # an empty mask, or one filling its box
    mask = pred.mask(0)
    if fill:
        ys, xs = np.nonzero(mask)
        expected = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert pred.tight_box(0) == expected == pred.tight_box(0, mask)
        assert drawn[0] - 1 < expected[0] and expected[2] < drawn[2] + 1  # inside the box
    else:
        assert pred.tight_box(0) is None
    assert tuple(pred.boxes[0]) == pytest.approx(drawn)  # the drawn box is kept as it was
