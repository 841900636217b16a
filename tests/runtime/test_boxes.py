"""The box policy (`boxmask.runtime.boxes`): its rules and their order, its two halves, and a
predictor that decodes checked boxes without checking them again; `PredictorOptions`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from boxmask.runtime import (
    BadBoxes,
    BoxLimits,
    CheckedBoxes,
    ModelCard,
    Predictor,
    PredictorOptions,
    TooManyBoxes,
    TooManyMaskPixels,
    UnknownLabel,
    check_boxes,
)
from boxmask.runtime.boxes import prepare_boxes

H, W = 60, 90  # (height, width) of the image the boxes are checked against


@pytest.fixture(scope="module")
def card(contract_model_dir: Path) -> ModelCard:
    # Categories disc (id 1), square (3), triangle (7): contiguous labels 1, 2, 3.
    return ModelCard.load(contract_model_dir, verify=False)


def _check(card: ModelCard, boxes: object, labels: object = None, **kwargs: object) -> CheckedBoxes:
    return check_boxes(boxes, labels, card=card, image_size=(H, W), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("boxes", "kwargs", "error", "words", "index"), [
    ("nonsense", {}, BadBoxes, "numbers", None),
    ([[1, 2, 3]], {}, BadBoxes, r"shape \[N, 4\]", None),
    ([[0, 0, 5, 5]] * 3, {"limits": BoxLimits(max_boxes=2)}, TooManyBoxes,
     "3 boxes in one request, more than the limit of 2", None),
    ([[0, 0, 5, 5], [0, 0, float("nan"), 5]], {}, BadBoxes, "box 1 has a NaN or infinite", 1),
    ([[0, 0, 5, 5], [10, 10, -5, 20]], {"box_format": "xywh"}, BadBoxes,
     "box 1 has width -5.0 and height 20.0; both must be positive", 1),
    ([[0, 0, 5, 5], [10, 10, 10, 20]], {}, BadBoxes, "box 1 is empty or inverted", 1),
    ([[0, 0, 5, 5], [50, 10, 10, 20]], {}, BadBoxes, "box 1 is empty or inverted", 1),
    ([[0, 0, 5, 5]] * 3, {"limits": BoxLimits(max_mask_pixels=2 * H * W)}, TooManyMaskPixels,
     "3 boxes on a 90x60 image make 16,200 mask pixels", None),
    ([[0, 0, 5, 5], [-3, 10, 40, 50]], {"clip": False}, BadBoxes,
     r"box 1 \[-3.0, 10.0, 40.0, 50.0\] sticks out of the 90x60 image", 1),
    ([[0, 0, 5, 5], [100, 70, 120, 80]], {}, BadBoxes, "box 1 lies outside the 90x60 image", 1),
])
def test_each_rule_refuses_with_its_words_and_names_the_box(
        card: ModelCard, boxes: object, kwargs: dict, error: type, words: str,
        index: int | None) -> None:
    with pytest.raises(error, match=words) as info:
        _check(card, boxes, **kwargs)
    assert getattr(info.value, "box_index", None) == index


def test_the_first_broken_rule_is_the_error(card: ModelCard) -> None:
    # Too many, and the last is inverted and unlabelled: the count is said first.
    with pytest.raises(TooManyBoxes) as info:
        _check(card, [[0, 0, 5, 5], [9, 9, 1, 1]], ["disc", "dog"],
               limits=BoxLimits(max_boxes=1))
    assert (info.value.count, info.value.limit) == (2, 1)
    # An inverted box is said before an unknown label, a label before the image's frame.
    with pytest.raises(BadBoxes, match="inverted"):
        _check(card, [[9, 9, 1, 1]], ["dog"])
    with pytest.raises(UnknownLabel):
        _check(card, [[500, 500, 600, 600]], ["dog"])


def test_boxes_are_converted_clipped_and_labels_resolved_once(card: ModelCard) -> None:
    checked = _check(card, [[-10, -5, 200, 70], [5, 5, 10, 20]], ["square", None],
                     box_format="xywh")
    assert checked.xyxy.dtype == np.float32 and checked.labels.dtype == np.int64
    assert checked.xyxy.tolist() == [[0, 0, W, H], [5, 5, 15, 25]]
    assert checked.labels.tolist() == [2, 0] and checked.image_size == (H, W)
    assert checked.kept == (0, 1) and checked.outside == ()
    by_id = _check(card, [[1, 1, 9, 9]] * 3, [7, np.int64(1), card.categories[1]])
    assert by_id.labels.tolist() == [3, 1, 2]
    empty = _check(card, [])
    assert empty.xyxy.shape == (0, 4) and len(empty) == 0


def test_a_category_already_mapped_is_not_resolved_again(card: ModelCard, monkeypatch) -> None:
    def no_resolving(label: object) -> None:
        raise AssertionError(f"{label!r} resolved a second time")

    monkeypatch.setattr(type(card), "resolve", lambda self, label: no_resolving(label))
    assert _check(card, [[1, 1, 9, 9]], [card.categories[2]]).labels.tolist() == [3]


def test_labels_must_pair_with_the_boxes(card: ModelCard) -> None:
    with pytest.raises(BadBoxes, match="2 labels for 1 boxes"):
        _check(card, [[1, 1, 9, 9]], ["disc", "disc"])
    with pytest.raises(BadBoxes, match="one entry"):
        _check(card, [[1, 1, 9, 9]], "disc")
    with pytest.raises(UnknownLabel):
        _check(card, [[1, 1, 9, 9]], [2])  # 2 is a contiguous label, not an id


def test_a_dataset_sets_boxes_outside_the_image_aside_instead_of_failing(card: ModelCard) -> None:
    checked = _check(card, [[1, 1, 9, 9], [100, 70, 120, 80], [80, 50, 95, 65]], [1, 3, 7],
                     drop_outside=True)
    assert checked.kept == (0, 2) and checked.outside == (1,)
    assert checked.labels.tolist() == [1, 3] and checked.xyxy[1].tolist() == [80, 50, 90, 60]
    assert checked.take([1]).kept == (2,)


def test_the_two_halves_are_the_whole_policy(card: ModelCard) -> None:
    boxes, labels = [[-3, 10, 40, 50], [5, 5, 30, 30]], ["disc", None]
    whole = _check(card, boxes, labels)
    halves = prepare_boxes(boxes, labels, card=card, image_size=(H, W)).fit((H, W))
    assert np.array_equal(whole.xyxy, halves.xyxy) and np.array_equal(whole.labels, halves.labels)
    # The mask-pixel limit waits for the image when its size was not known on arrival.
    limits = BoxLimits(max_mask_pixels=H * W)
    waiting = prepare_boxes(boxes, labels, card=card, limits=limits)
    with pytest.raises(TooManyMaskPixels, match="budget of 5,400"):
        waiting.fit((H, W))
    with pytest.raises(TooManyMaskPixels):
        prepare_boxes(boxes, labels, card=card, limits=limits, image_size=(H, W))


def test_detections_are_trimmed_to_the_same_limits() -> None:
    assert BoxLimits().masks_that_fit(50, 100) == 50
    assert BoxLimits(max_boxes=20).masks_that_fit(50, 100) == 20
    assert BoxLimits(max_boxes=20, max_mask_pixels=1000).masks_that_fit(50, 100) == 10
    assert BoxLimits(max_mask_pixels=1000).masks_that_fit(50, 0) == 50  # size unknown
    assert BoxLimits().masks_that_fit(-1, 100) == 0


def test_the_predictor_decodes_checked_boxes_without_checking_them_again(
        contract_model_dir: Path, monkeypatch) -> None:
    import boxmask.runtime.predictor as predictor_module

    p = Predictor.from_dir(contract_model_dir, PredictorOptions(intra_op_threads=1))
    image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    key = p.set_image(image)
    boxes, labels = [[-10, -5, 200, 70], [5, 5, 40, 30]], ["square", None]
    plain = p.predict(boxes, labels=labels, key=key)
    checked = check_boxes(boxes, labels, card=p.card, image_size=(H, W), limits=p.limits)

    def checked_twice(*args: object, **kwargs: object) -> None:
        raise AssertionError("the predictor checked boxes the policy had checked")

    monkeypatch.setattr(predictor_module, "check_boxes", checked_twice)
    trusted = p.predict(checked, key=key)
    assert np.array_equal(trusted.mask_probs, plain.mask_probs)
    assert np.array_equal(trusted.boxes, plain.boxes) and trusted.labels.tolist() == plain.labels.tolist()
    # Boxes checked against another image's frame are not this image's.
    other = check_boxes(boxes, labels, card=p.card, image_size=(W, H))
    with pytest.raises(ValueError, match="cannot be decoded"):
        p.predict(other, key=key)


def test_predictor_options_are_one_value(contract_model_dir: Path) -> None:
    options = PredictorOptions(intra_op_threads=1, cache_bytes=1 << 20, max_boxes=2,
                               max_mask_pixels=10_000, mask_threshold=0.4, input_min_size=32)
    p = Predictor.from_dir(contract_model_dir, options)
    assert p.options == options and p.limits == BoxLimits(2, 10_000)
    assert (p.cache.stats().max_bytes, p.mask_threshold, p.input_min_size) == (1 << 20, 0.4, 32)
    # Overrides name fields of the options, for a caller without an options object.
    q = Predictor.from_dir(contract_model_dir, intra_op_threads=1, max_boxes=2)
    assert q.options == PredictorOptions(intra_op_threads=1, max_boxes=2)
    assert options.replace(max_boxes=None).limits == BoxLimits(None, 10_000)
    for bad in ({"backend": "tensorflow"}, {"precision": "int4"}, {"backend": "triton"},
                {"decoder_budget_bytes": 0}):
        with pytest.raises(ValueError):
            PredictorOptions(**bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Predictor.from_dir(contract_model_dir, max_boxs=2)
