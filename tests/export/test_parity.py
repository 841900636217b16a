"""One comparer per exported graph: each holds its graph's ONNX Runtime outputs to eager torch's
and says which bar it missed (sessions faked here; tests/export/test_export.py runs the real
ones)."""

from __future__ import annotations

import numpy as np
import pytest

from boxmask.export.parity import (
    GraphCase,
    ImageCase,
    Parity,
    compare_decoder,
    compare_detector,
    compare_encoder,
    compare_labelled_decoder,
)


class Replay:
    """A session whose outputs are the expected ones, passed through ``change``."""

    def __init__(self, cases, change=lambda name, value: value) -> None:
        self.cases, self.change, self.calls = cases, change, []

    def run(self, names, feed):
        case = next(c for c in self.cases if c.feed is feed)
        self.calls.append((list(names), case))
        return [self.change(name, case.expected[name].copy()) for name in names]


def _decoder_case(n: int, labelled: bool, seed: int = 0) -> GraphCase:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 5, (n, 1, 4, 4)).astype(np.float32)
    labels = rng.integers(1, 3, n) if labelled else np.zeros(n, np.int64)
    feed = {"boxes": rng.random((n, 4), np.float32), "labels": labels.astype(np.int64),
            "image_size": np.array([32, 32])}
    expected = {"mask_logits": logits, "class_scores": rng.random((n, 3), np.float32),
                "labels_out": np.maximum(labels, 1).astype(np.int64)}
    return GraphCase(feed, expected)


CASES = [_decoder_case(n, labelled, seed) for seed, (n, labelled) in
         enumerate([(0, True), (0, False), (1, True), (5, True), (5, False)])]


def test_a_decoder_that_gives_torchs_outputs_passes_and_reports_each_output():
    got = compare_decoder(Replay(CASES), CASES)
    assert got.passed and got.graph == "decoder"
    assert got.max_abs == {"mask_logits": 0.0, "class_scores": 0.0}
    assert got.min_mask_iou == 1.0 and got.largest_logit > 0


def test_a_decoder_whose_logits_drift_misses_the_logit_bar_and_says_by_how_much():
    drift = Replay(CASES, lambda name, v: v + 0.5 if name == "mask_logits" else v)
    got = compare_decoder(drift, CASES)
    assert not got.passed and got.max_abs["mask_logits"] == pytest.approx(0.5)
    assert any(f.startswith("mask logits differ by 5.00e-01") for f in got.failures)


def test_labels_that_differ_and_rows_for_zero_boxes_are_failures():
    def wrong(name, value):
        if name == "labels_out":
            return value + 1
        return value

    assert compare_decoder(Replay(CASES, wrong), CASES).failures == ("labels differ",)

    def rows(name, value):
        return np.zeros((2, *value.shape[1:]), value.dtype) if value.shape[0] == 0 else value

    assert "rows for zero boxes" in compare_decoder(Replay(CASES, rows), CASES).failures


def test_the_labelled_decoder_is_held_to_the_full_decoders_masks_on_labelled_calls_only():
    session = Replay(CASES)
    got = compare_labelled_decoder(session, CASES)
    assert got.passed and got.graph == "labelled_decoder"
    assert got.max_abs == {"mask_logits": 0.0}
    assert all(names == ["mask_logits"] and case.labelled for names, case in session.calls)
    assert len(session.calls) == sum(c.labelled for c in CASES)


def test_the_encoder_reports_each_feature_map():
    image = ImageCase(np.zeros((1, 3, 8, 8), np.float32),
                      {"p2": np.ones((1, 2, 2, 2), np.float32), "p3": np.ones((1, 2, 1, 1))})

    class Encoder:
        def run(self, names, feed):
            assert list(feed) == ["image"]
            return [image.features[n] + (0.25 if n == "p3" else 0.0) for n in names]

    got = compare_encoder(Encoder(), [image])
    assert got.passed and got.max_abs == {"p2": 0.0, "p3": 0.25}


def _detections(scores: list[float]) -> dict[str, np.ndarray]:
    k = len(scores)
    return {"boxes": np.ones((k, 4), np.float32), "labels": np.ones(k, np.int64),
            "scores": np.array(scores, np.float32), "mask_probs": np.zeros((k, 1, 4, 4))}


@pytest.mark.parametrize(("ort_scores", "passed"), [
    ([0.9, 0.6], True),  # the same detections
    ([0.9, 0.6, 0.0505], True),  # one more at the threshold: float32 rounding, not a disagreement
    ([0.9], False),  # one missing well above it
])
def test_the_detector_must_find_the_same_objects_above_the_borderline(ort_scores, passed):
    case = GraphCase({"image_size": np.array([32, 40])}, _detections([0.9, 0.6]))

    class Detector:
        def run(self, names, feed):
            out = _detections(ort_scores)
            return [out[n] for n in names]

    got = compare_detector(Detector(), [case], score_floor=0.051)
    assert got.passed is passed, got.failures
    if not passed:
        assert got.failures == ("1 detections where torch has 2 (32x40)",)


def test_the_card_records_every_graph_and_the_error_names_the_graph():
    good = compare_decoder(Replay(CASES), CASES)
    bad = compare_labelled_decoder(
        Replay(CASES, lambda name, v: v + 0.5 if name == "mask_logits" else v), CASES)
    parity = Parity((good, bad), sizes=((32, 32),), box_counts=(0, 1, 5))
    card = parity.as_card()
    assert card["passed"] is False and card["sizes"] == [[32, 32]]
    assert card["box_counts"] == [0, 1, 5]
    assert list(card["graphs"]) == ["decoder", "labelled_decoder"]
    assert card["graphs"]["decoder"] == {"max_abs": {"mask_logits": 0.0, "class_scores": 0.0},
                                         "failures": [], "min_mask_iou": 1.0,
                                         "largest_logit": good.largest_logit}
    assert parity["labelled_decoder"] is bad
    assert parity.failures[0].startswith("labelled_decoder: mask logits differ by 5.00e-01")
