"""Predictor on a contract-conforming model directory (random weights: semantics, not quality)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from boxmask.runtime import BadBoxes, BadImage, NoDetector, Predictor, UnknownImage, UnknownLabel
from boxmask.runtime.errors import RuntimeInputError
from boxmask.runtime.sessions.onnx_runtime import OnnxRuntimeSession, choose_providers


class CountingSession:
    """Wraps a real session to count runs and remember the last inputs."""

    def __init__(self, inner: OnnxRuntimeSession) -> None:
        self.inner = inner
        self.runs = 0
        self.last_inputs: dict[str, np.ndarray] = {}
        self.boxes_per_run: list[int] = []

    input_names = property(lambda self: self.inner.input_names)
    output_names = property(lambda self: self.inner.output_names)

    def run(self, inputs, output_names=None):
        self.runs += 1
        self.last_inputs = dict(inputs)
        if "boxes" in inputs:
            self.boxes_per_run.append(int(inputs["boxes"].shape[0]))
        return self.inner.run(inputs, output_names)

    def describe(self) -> str:
        return self.inner.describe()


@pytest.fixture
def predictor(contract_model_dir: Path) -> Predictor:
    p = Predictor.from_dir(contract_model_dir, intra_op_threads=1, cache_bytes=1 << 20)
    p.encoder = CountingSession(p.encoder)  # type: ignore[assignment]
    p.decoder = CountingSession(p.decoder)  # type: ignore[assignment]
    return p


def _image(h: int = 60, w: int = 90, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


BOXES = [[5, 5, 40, 30], [20, 10, 85, 55], [0, 0, 90, 60]]


def test_masks_come_back_full_size_for_every_box(predictor: Predictor) -> None:
    key = predictor.set_image(_image())
    pred = predictor.predict(BOXES, labels=["disc", 3, None], key=key)
    assert pred.masks.shape == (3, 60, 90) and pred.masks.dtype == bool
    assert pred.mask_probs.shape == (3, 28, 28) and pred.scores.shape == (3,)
    assert pred.boxes.shape == (3, 4) and pred.key == key and pred.image_size == (60, 90)
    assert pred.labels[:2].tolist() == [1, 3]  # given labels are used, as COCO ids
    assert pred.labels[2] in (1, 3, 7) and pred.names[:2] == ["disc", "square"]
    assert ((pred.scores >= 0) & (pred.scores <= 1)).all()
    # Masks never leave their (expanded) boxes.
    assert not pred.masks[0][35:, :].any() and not pred.masks[0][:, 45:].any()


def test_all_boxes_of_a_call_share_one_decoder_run_and_the_encoder_runs_once(
    predictor: Predictor,
) -> None:
    key = predictor.set_image(_image())
    predictor.predict(BOXES, key=key)
    predictor.predict(BOXES[:1], key=key)
    assert predictor.set_image(_image()) == key
    assert predictor.encoder.runs == 1 and predictor.decoder.runs == 2  # type: ignore[attr-defined]
    stats = predictor.cache_stats()
    # One lookup per image set: the predictions that follow use it without counting again.
    assert stats.misses == 1 and stats.hits == 1 and stats.bytes > 0
    # A key from elsewhere (a client sending it back) is a real reuse: one more hit.
    predictor.select_image(key)
    predictor.predict(BOXES, key=key)
    assert predictor.cache_stats().hits == 2


def test_labels_by_name_id_and_none_reach_the_decoder_as_contiguous_labels(
    predictor: Predictor,
) -> None:
    key = predictor.set_image(_image())
    predictor.predict(BOXES, labels=["triangle", 1, None], key=key)
    sent = predictor.decoder.last_inputs  # type: ignore[attr-defined]
    assert sent["labels"].tolist() == [3, 1, 0] and sent["labels"].dtype == np.int64
    # The same category by name or id gives the same mask.
    by_name = predictor.predict(BOXES[:1], labels=["square"], key=key)
    by_id = predictor.predict(BOXES[:1], labels=[np.int64(3)], key=key)
    assert np.array_equal(by_name.mask_probs, by_id.mask_probs)


def test_unlabelled_boxes_get_the_predicted_class(predictor: Predictor) -> None:
    key = predictor.set_image(_image())
    pred = predictor.predict(BOXES, key=key)
    outputs = predictor.decoder.inner.run(predictor.decoder.last_inputs)  # type: ignore[attr-defined]
    predicted = outputs["class_scores"][:, 1:].argmax(1) + 1
    assert pred.labels.tolist() == [[0, 1, 3, 7][i] for i in predicted]
    np.testing.assert_allclose(pred.scores, outputs["class_scores"][np.arange(3), predicted])


def test_unknown_labels_and_label_count_mismatch_are_rejected(predictor: Predictor) -> None:
    key = predictor.set_image(_image())
    with pytest.raises(UnknownLabel) as info:
        predictor.predict(BOXES[:1], labels=["dog"], key=key)
    assert info.value.known_names == ["disc", "square", "triangle"]
    with pytest.raises(UnknownLabel):
        predictor.predict(BOXES[:1], labels=[2], key=key)  # 2 is a contiguous label, not an id
    with pytest.raises(BadBoxes, match="2 labels for 1 boxes"):
        predictor.predict(BOXES[:1], labels=["disc", "disc"], key=key)


def test_no_boxes_give_an_empty_prediction(predictor: Predictor) -> None:
    key = predictor.set_image(_image())
    for empty in ([], np.zeros((0, 4))):
        pred = predictor.predict(empty, key=key)
        assert (
            len(pred) == 0
            and pred.masks.shape == (0, 60, 90)
            and pred.mask_probs.shape == (0, 28, 28)
        )


@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        ([[1, 2, 3]], r"shape \[N, 4\]"),
        ([[0, 0, float("nan"), 5]], "NaN or infinite"),
        ([[0, 0, float("inf"), 5]], "NaN or infinite"),
        ([[10, 10, 5, 20]], "empty or inverted"),
        ([[10, 10, 10, 20]], "empty or inverted"),
        ([[100, 70, 120, 80]], "outside"),
        ([["a", 0, 1, 1]], "numbers"),
        ("nonsense", "numbers"),
    ],
)
def test_bad_boxes_are_rejected_with_the_reason(
    predictor: Predictor, boxes: object, message: str
) -> None:
    key = predictor.set_image(_image())
    with pytest.raises(BadBoxes, match=message):
        predictor.predict(boxes, key=key)


def test_boxes_reaching_outside_the_image_are_clipped(predictor: Predictor) -> None:
    key = predictor.set_image(_image())
    pred = predictor.predict([[-10, -5, 200, 70]], key=key)
    assert pred.boxes.tolist() == [[0, 0, 90, 60]]
    same = predictor.predict([[0, 0, 90, 60]], key=key)
    assert np.array_equal(pred.mask_probs, same.mask_probs)


def test_box_limit(contract_model_dir: Path) -> None:
    p = Predictor.from_dir(contract_model_dir, intra_op_threads=1, max_boxes=2)
    key = p.set_image(_image())
    with pytest.raises(BadBoxes, match="limit of 2"):
        p.predict(BOXES, key=key)


def test_bytes_and_array_of_one_image_give_the_same_masks(predictor: Predictor) -> None:
    a = _image()
    from_array = predictor.predict(BOXES, key=predictor.set_image(a))
    from_png = predictor.predict(BOXES, key=predictor.set_image(_png(a)))
    assert from_array.key != from_png.key
    assert np.array_equal(from_array.masks, from_png.masks)


def test_unknown_and_evicted_images_ask_for_the_image_again(contract_model_dir: Path) -> None:
    p = Predictor.from_dir(contract_model_dir, intra_op_threads=1, cache_bytes=1)  # holds one entry only
    with pytest.raises(UnknownImage, match="no image has been set"):
        p.predict(BOXES)
    first = p.set_image(_image(seed=1))
    p.set_image(_image(seed=2))
    with pytest.raises(UnknownImage, match="send the image again"):
        p.predict(BOXES, key=first)
    assert p.cache_stats().evictions == 1
    assert len(p.predict(BOXES)) == 3  # default: the last image set


def test_an_image_just_set_is_usable_without_a_cache_and_across_threads(
    contract_model_dir: Path,
) -> None:
    # cache_bytes=0 caches nothing; the image a thread just set is still there for its predict.
    p = Predictor.from_dir(contract_model_dir, intra_op_threads=1, cache_bytes=0)
    key = p.set_image(_image(seed=1))
    assert len(p.predict(BOXES, key=key)) == 3
    assert len(p.predict(BOXES)) == 3
    assert p.cache_stats().entries == 0 and p.cache_stats().hits == 0
    # Another thread's image, set in between, does not take this thread's away.
    import threading

    other = threading.Thread(target=p.set_image, args=(_image(seed=2),))
    other.start()
    other.join()
    assert p.predict(BOXES, key=key).key == key
    # A key never set by this thread is still unknown when the cache does not hold it.
    fresh_keys: list[str] = []
    fresh = threading.Thread(target=lambda: fresh_keys.append(p.set_image(_image(seed=3))))
    fresh.start()
    fresh.join()
    with pytest.raises(UnknownImage):
        p.predict(BOXES, key=fresh_keys[0])


def test_predict_without_a_key_uses_this_threads_image_not_another_threads(
    contract_model_dir: Path,
) -> None:
    import threading

    p = Predictor.from_dir(contract_model_dir, intra_op_threads=1)
    mine = p.set_image(_image(seed=1))
    other = threading.Thread(target=p.set_image, args=(_image(seed=2),))
    other.start()
    other.join()
    assert p.predict(BOXES).key == mine
    assert p.image_size() == p.image_size(mine) == _image(seed=1).shape[:2]
    # A thread that set no image has no current one, whatever other threads did.
    errors: list[Exception] = []

    def keyless() -> None:
        try:
            p.predict(BOXES)
        except UnknownImage as exc:
            errors.append(exc)

    t = threading.Thread(target=keyless)
    t.start()
    t.join()
    assert len(errors) == 1 and "this thread" in str(errors[0])


def test_image_size_runs_no_graph_and_needs_a_cached_image(contract_model_dir: Path) -> None:
    p = Predictor.from_dir(contract_model_dir, intra_op_threads=1)
    key = p.set_image(_image(seed=4))
    runs = {"encoder": 0, "decoder": 0}
    for graph in runs:
        session = getattr(p, graph)
        original = session.run

        def counted(*args, _graph=graph, _run=original, **kwargs):
            runs[_graph] += 1
            return _run(*args, **kwargs)

        session.run = counted
    assert p.image_size(key) == _image(seed=4).shape[:2]
    assert runs == {"encoder": 0, "decoder": 0}
    with pytest.raises(UnknownImage):
        p.image_size("0" * 64)


def test_detect_without_a_detector_graph_is_the_callers_error(contract_model_dir: Path) -> None:
    p = Predictor.from_dir(contract_model_dir, intra_op_threads=1)
    p._detector_factory = None  # as for a model exported without its detector
    p._detector = None
    with pytest.raises(NoDetector, match="give boxes"):
        p.detect(image=_image())
    assert isinstance(NoDetector("x"), RuntimeInputError)


def test_bad_images_raise_bad_image(predictor: Predictor) -> None:
    with pytest.raises(BadImage):
        predictor.set_image(b"GIF89a but not really")
    with pytest.raises(BadImage, match="more than the limit"):
        Predictor(predictor.card, predictor.encoder, predictor.decoder, max_pixels=100).set_image(
            _image()
        )


def test_detect_returns_sorted_thresholded_detections_in_image_coordinates(
    predictor: Predictor,
) -> None:
    a = _image(70, 50)
    key = predictor.set_image(a)
    everything = predictor.detect(key=key, score_threshold=0.0)
    assert len(everything) == 5  # the contract test model's fixed grid
    assert (np.diff(everything.scores) <= 0).all()
    assert everything.boxes[:, 2].max() <= 50 and everything.boxes[:, 3].max() <= 70
    np.testing.assert_allclose(
        everything.boxes[everything.boxes[:, 0] == 0].max(0)[2:], [50, 70], atol=0.05
    )
    assert everything.masks.shape == (5, 70, 50)
    assert set(everything.labels.tolist()) <= {1, 3, 7}
    top = predictor.detect(key=key, score_threshold=0.0, max_detections=2)
    assert np.array_equal(top.scores, everything.scores[:2])
    cut = float(everything.scores[2])
    assert len(predictor.detect(key=key, score_threshold=cut)) == 3
    # An image given directly is encoded once and cached, as set_image does.
    direct = predictor.detect(image=_png(a), score_threshold=0.0)
    assert np.array_equal(direct.masks, everything.masks)
    assert direct.key is not None and predictor.cache.get(direct.key) is not None


def test_providers_are_chosen_from_what_onnxruntime_has() -> None:
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers(
        ["CUDAExecutionProvider", "CPUExecutionProvider", "TensorrtExecutionProvider"]
    ) == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(["AzureExecutionProvider"]) == ["CPUExecutionProvider"]


def test_detector_runs_over_the_cached_features_with_the_unpadded_size(
    predictor: Predictor, contract_model_dir: Path
) -> None:
    predictor._detector = CountingSession(
        OnnxRuntimeSession(contract_model_dir / "detector.onnx", intra_op_threads=1)
    )
    key = predictor.set_image(_image(50, 70))  # resized to 64 x 89, padded to 64 x 96
    predictor.detect(key=key)
    predictor.detect(image=_image(50, 70))  # the same image: found in the cache
    assert predictor.encoder.runs == 1  # type: ignore[attr-defined]
    sent = predictor._detector.last_inputs  # type: ignore[attr-defined]
    assert "image" not in sent
    assert sent["p2"].shape == (1, 8, 16, 24)  # the padded 64 x 96 at stride 4
    assert sent["image_size"].tolist() == [64, 89]
    cached = predictor.cache.get(key)
    assert cached is not None and all(sent[p] is cached.features[p] for p in ("p2", "p5"))


def test_masks_never_leave_their_boxes_on_predict_or_detect(predictor: Predictor) -> None:
    # Torchvision's pasting reaches up to a mask cell past the box: with a mask that is
    # certain up to its border (logits +10 everywhere) it always would. Every path crops it.
    decoder_run, detector_run = predictor.decoder.run, predictor.detector.run

    def certain_masks(run, name):
        def patched(inputs, output_names=None):
            out = dict(run(inputs, output_names))
            out[name] = np.full_like(out[name], 10.0 if name == "mask_logits" else 1.0)
            return out
        return patched

    predictor.decoder.run = certain_masks(decoder_run, "mask_logits")
    predictor.detector.run = certain_masks(detector_run, "mask_probs")
    image = _image(h=120, w=160, seed=11)
    key = predictor.set_image(image)
    boxes = np.array([[10.3, 12.7, 50.2, 60.9], [40, 30, 150, 110], [0, 0, 33.5, 17.25]])
    preds = [predictor.predict(boxes, key=key), predictor.detect(key=key, score_threshold=0.0)]
    for pred in preds:
        assert len(pred) > 0
        for mask, (x1, y1, x2, y2) in zip(pred.masks, pred.boxes, strict=True):
            ys, xs = np.nonzero(mask)
            if len(xs):
                assert xs.min() >= np.floor(x1) and xs.max() < np.ceil(x2)
                assert ys.min() >= np.floor(y1) and ys.max() < np.ceil(y2)


def test_many_masks_of_a_large_image_are_made_one_plane_at_a_time(predictor: Predictor) -> None:
    import tracemalloc

    h, w = 1500, 2000
    key = predictor.set_image(_image(h=h, w=w, seed=12))
    boxes = [[i * 30, i * 20, i * 30 + 400, i * 20 + 300] for i in range(40)]
    tracemalloc.start()
    try:
        pred = predictor.predict(boxes, key=key)
        areas = [int(m.sum()) for m in pred.iter_masks()]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(areas) == 40
    # 40 boolean planes would be 40 x 3 MB; one (or two) at a time stays near one plane.
    assert peak < 4 * h * w, peak


def test_a_mask_pixel_budget_refuses_boxes_and_trims_detections(contract_model_dir: Path) -> None:
    from boxmask.runtime.errors import TooManyMaskPixels

    p = Predictor.from_dir(contract_model_dir, intra_op_threads=1, max_mask_pixels=3 * 60 * 90)
    key = p.set_image(_image(seed=13))  # 60 x 90
    assert len(p.predict(BOXES, key=key)) == 3
    with pytest.raises(TooManyMaskPixels, match="budget"):
        p.predict([*BOXES, [1, 1, 9, 9]], key=key)
    assert len(p.detect(key=key, score_threshold=0.0, max_detections=100)) <= 3
    assert isinstance(TooManyMaskPixels("x"), RuntimeInputError)


def test_a_smaller_interactive_input_size_shrinks_the_encoder_input_not_the_masks(
    contract_model_dir: Path,
) -> None:
    # The contract model's card says min_size 64 / max_size 96: a 60x90 image becomes 64x96.
    small = Predictor.from_dir(contract_model_dir, intra_op_threads=1, input_min_size=32,
                               input_max_size=48)
    small.encoder = CountingSession(small.encoder)  # type: ignore[assignment]
    pred = small.predict(BOXES, key=small.set_image(_image()))
    assert small.encoder.last_inputs["image"].shape[-2:] == (32, 64)  # 32x48, padded to 32s
    assert pred.masks.shape == (3, 60, 90)
    default = Predictor.from_dir(contract_model_dir, intra_op_threads=1)
    assert (default.input_min_size, default.input_max_size) == (64, 96)


@pytest.mark.parametrize("graph", ["decoder", "labelled_decoder"])
def test_a_decoder_budget_decodes_many_boxes_in_runs_with_the_same_masks(
    contract_model_dir: Path, graph: str,
) -> None:
    from boxmask.runtime.predictor import decoder_bytes_per_box
    from tests.conftest import BUNDLED_MODEL

    # The contract model has no labelled decoder; the bundled one has both.
    model_dir = contract_model_dir if graph == "decoder" else BUNDLED_MODEL
    whole = Predictor.from_dir(model_dir, intra_op_threads=1)
    per_box = decoder_bytes_per_box(whole.card)
    budgeted = Predictor.from_dir(model_dir, intra_op_threads=1,
                                  decoder_budget_bytes=7 * per_box + per_box // 2)
    counted = CountingSession(getattr(budgeted, graph))
    setattr(budgeted, graph, counted)
    assert whole.boxes_per_run is None and budgeted.boxes_per_run == 7

    image = _image(120, 160)
    rng = np.random.default_rng(4)
    xy = rng.uniform(0, 120, (50, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(4, 40, (50, 2))], axis=1)
    names = whole.card.names
    labels = [names[i % len(names)] for i in range(50)]
    if graph == "decoder":
        labels[::3] = [None] * len(labels[::3])  # the predicted class, too
    a = whole.predict(boxes, labels=labels, key=whole.set_image(image), class_scores=False)
    b = budgeted.predict(boxes, labels=labels, key=budgeted.set_image(image), class_scores=False)
    assert counted.boxes_per_run == [7] * 7 + [1]
    # Each box is decoded on its own: the runs change nothing.
    np.testing.assert_array_equal(a.mask_probs, b.mask_probs)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.masks, b.masks)


def test_the_decoder_estimate_grows_with_the_cards_channels_and_mask_resolution() -> None:
    from boxmask.runtime.card import ModelCard
    from boxmask.runtime.predictor import DEFAULT_CHANNELS, decoder_bytes_per_box
    from tests.conftest import BUNDLED_MODEL

    card = json.loads((BUNDLED_MODEL / "model.json").read_text())
    base = decoder_bytes_per_box(ModelCard.model_validate(card))
    wider = json.loads(json.dumps(card))
    for shape in wider["onnx"]["decoder"]["inputs"].values():
        if len(shape) == 4:
            shape[1] = str(int(shape[1]) * 4)
    wider["provenance"]["config"]["model"]["mask_head_channels"] *= 4
    assert decoder_bytes_per_box(ModelCard.model_validate(wider)) > 3 * base
    finer = {**card, "mask_resolution": card["mask_resolution"] * 2}
    assert decoder_bytes_per_box(ModelCard.model_validate(finer)) > 3 * base
    # A card that states no widths is taken to be as wide as torchvision's Mask R-CNN.
    silent = {**card, "onnx": {}, "provenance": {}}
    r = card["mask_resolution"]
    assert decoder_bytes_per_box(ModelCard.model_validate(silent)) >= 4 * r * r * DEFAULT_CHANNELS


def test_each_precision_opens_its_own_graph_files() -> None:
    # fp32 and int8 masks of the bundled model are too close for a figure test to tell which
    # graph ran: check the file each session was created from.
    from tests.conftest import BUNDLED_MODEL

    def files(p: Predictor) -> dict[str, str]:
        sessions = {"encoder": p.encoder, "decoder": p.decoder,
                    "labelled_decoder": p.labelled_decoder, "detector": p.detector}
        return {graph: Path(s.path).name for graph, s in sessions.items()}  # type: ignore[union-attr]

    fp32 = Predictor.from_dir(BUNDLED_MODEL, precision="fp32", intra_op_threads=1)
    assert files(fp32) == {"encoder": "encoder.onnx", "decoder": "decoder.onnx",
                           "labelled_decoder": "labelled_decoder.onnx",
                           "detector": "detector.onnx"}
    int8 = Predictor.from_dir(BUNDLED_MODEL, precision="int8", intra_op_threads=1)
    # The bundle has no int8 detector: that one stays fp32.
    assert files(int8) == {"encoder": "encoder.int8.onnx", "decoder": "decoder.int8.onnx",
                           "labelled_decoder": "labelled_decoder.int8.onnx",
                           "detector": "detector.onnx"}
