"""ONNX Runtime against eager torch: one comparer per exported graph, on the graphs' own inputs.

`reference_inputs` draws the inputs once (several image sizes; N = 0, 1 and many boxes, with
and without labels) and runs the eager graph wrappers on them; each comparer then runs its
graph's ONNX Runtime session on the same inputs and returns a `GraphParity`:

- `compare_encoder`: each feature map's largest absolute difference;
- `compare_decoder`: mask logits within ``LOGIT_TOL + LOGIT_RTOL * max |logit of that box|``
  (float32 rounding grows with the magnitude of the terms a convolution sums, which is the
  scale of the whole mask's logits, not of the one cell: a cell near 0 in a mask whose logits
  reach 1000 carries the rounding of terms of 1000; a random-weight R50, the tests of imported
  models, has logits in the thousands, and ONNX Runtime's AVX2 kernels sum in another order
  than its AVX-512 ones), the IoU of the thresholded R x R masks at least ``MIN_MASK_IOU``, the
  same labels, ``quality`` within ``QUALITY_TOL``; class scores are measured;
- `compare_labelled_decoder`: its masks against the eager *full* decoder's for the same given
  labels, with the same bars: skipping the box head must not change a mask;
- `compare_detector`: the same detections (boxes, labels, scores and masks measured).

`check_parity` runs them all on an exported directory and fails the export when a graph misses
a bar: a graph that disagrees with its model is a bug. Its `Parity` is what the card records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from boxmask.config import BoxMaskConfig
from boxmask.export.errors import ExportError
from boxmask.export.graphs import DecoderGraph, DetectorGraph, EncoderGraph, graph_names
from boxmask.export.inputs import random_boxes
from boxmask.model import BoxMaskRCNN
from boxmask.runtime.contract import (
    BOXES,
    DECODER,
    DETECTOR,
    DETECTOR_OUTPUTS,
    ENCODER,
    ENCODER_INPUT,
    ENCODER_OUTPUTS,
    IMAGE_SIZE,
    LABELLED_DECODER,
    LABELS,
    LABELS_OUT,
    MASK_LOGITS,
    QUALITY,
    SCORES,
    decoder_outputs,
    graph_file,
)
from boxmask.runtime.prompted_masks import mask_iou

LOGIT_TOL = 1e-3
LOGIT_RTOL = 1e-5
MIN_MASK_IOU = 0.99
# The mask-quality head's IoU may differ this much between ONNX Runtime and torch (it ranks
# masks for review: a thousandth changes no order that matters).
QUALITY_TOL = 1e-3
# Detections within this much of the score threshold may be kept by one runtime and dropped by
# the other (float32 rounding); the detector check compares what both keep above it.
BORDERLINE_SCORE = 1e-3


@dataclass(frozen=True)
class GraphParity:
    """How far one graph's ONNX Runtime outputs lie from eager torch's on the same inputs."""

    graph: str
    #: Output name -> the largest |ONNX Runtime - torch| over every input.
    max_abs: dict[str, float]
    #: The bars it missed, in words; none when it passed.
    failures: tuple[str, ...] = ()
    #: The decoders: the worst IoU of the thresholded R x R masks, and the largest |mask logit|
    #: torch gave (the scale the logit bar grows with).
    min_mask_iou: float | None = None
    largest_logit: float | None = None

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        """The card's record of the graph (``None`` figures left out)."""
        out: dict[str, Any] = {"max_abs": self.max_abs, "failures": list(self.failures)}
        if self.min_mask_iou is not None:
            out["min_mask_iou"] = self.min_mask_iou
        if self.largest_logit is not None:
            out["largest_logit"] = self.largest_logit
        return out


@dataclass(frozen=True)
class Parity:
    """Every graph's `GraphParity`, and the inputs they were measured on."""

    graphs: tuple[GraphParity, ...]
    sizes: tuple[tuple[int, int], ...]
    box_counts: tuple[int, ...]

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.graphs)

    def __getitem__(self, graph: str) -> GraphParity:
        return next(g for g in self.graphs if g.graph == graph)

    @property
    def failures(self) -> list[str]:
        """Every graph's missed bars, each prefixed with the graph's name."""
        return [f"{g.graph}: {failure}" for g in self.graphs for failure in g.failures]

    def as_card(self) -> dict[str, Any]:
        """The card's ``parity``: ``passed``, ``sizes``, ``box_counts`` and ``graphs`` (graph
        name -> `GraphParity.as_dict`)."""
        return {"passed": self.passed, "sizes": [list(s) for s in self.sizes],
                "box_counts": list(self.box_counts),
                "graphs": {g.graph: g.as_dict() for g in self.graphs}}


@dataclass(frozen=True)
class ImageCase:
    """One image as the encoder takes it, and eager torch's features of it by name."""

    image: np.ndarray  # [1, 3, h, w] float32 0..255
    features: dict[str, np.ndarray]


@dataclass(frozen=True)
class GraphCase:
    """One call of a graph that takes the features: its inputs by name (torch's features, so
    each graph is held to torch on its own), and eager torch's outputs by name."""

    feed: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]

    @property
    def labelled(self) -> bool:
        """Every box has a label (1..C): a call the labelled decoder can take too."""
        return bool((self.feed[LABELS] > 0).all())


@dataclass(frozen=True)
class ReferenceInputs:
    """What every comparer runs its graph on, drawn once."""

    images: list[ImageCase]
    boxes: list[GraphCase]  # decoder calls; expected: the eager full decoder's outputs
    detections: list[GraphCase]  # detector calls, one per image


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0


def _within_tol(diff: np.ndarray, ref: np.ndarray) -> bool:
    """``diff`` and ``ref`` ``[N, ...]`` (one row per box): every cell within ``LOGIT_TOL +
    LOGIT_RTOL x`` the largest ``|ref|`` of its row."""
    scale = np.abs(ref).reshape(ref.shape[0], -1).max(axis=1)
    bound = (LOGIT_TOL + LOGIT_RTOL * scale).reshape((-1,) + (1,) * (ref.ndim - 1))
    return bool((diff <= bound).all())


def _run(session: ort.InferenceSession, names: Sequence[str], feed: dict[str, np.ndarray]
         ) -> dict[str, np.ndarray]:
    return dict(zip(names, session.run(list(names), feed), strict=True))


@torch.no_grad()
def reference_inputs(model: BoxMaskRCNN, sizes: Sequence[tuple[int, int]],
                     box_counts: Sequence[int], seed: int = 0) -> ReferenceInputs:
    """Random images of ``sizes``, ``box_counts`` random boxes on each with random labels and
    without (all 0), and eager torch's encoder, decoder and detector outputs for them."""
    names = graph_names(model)
    features, (_, dec_out) = names[ENCODER][1], names[DECODER]
    enc, det = EncoderGraph(model).eval(), DetectorGraph(model).eval()
    gen = torch.Generator().manual_seed(seed)
    inputs = ReferenceInputs([], [], [])
    for h, w in sizes:
        x = torch.rand(1, 3, h, w, generator=gen) * 255.0
        feats = enc(x)
        # The levels, then the pixel map for a model with one (graphs.py).
        levels, pixel_map = feats[:len(ENCODER_OUTPUTS)], feats[len(ENCODER_OUTPUTS):]
        by_name = {n: f.numpy() for n, f in zip(features, feats, strict=True)}
        inputs.images.append(ImageCase(x.numpy(), by_name))
        size = torch.tensor([h, w], dtype=torch.int64)
        dec = DecoderGraph(model, (h, w)).eval()
        for n in box_counts:
            boxes = random_boxes(n, h, w, gen)
            for with_labels in (True, False):
                labels = (torch.randint(1, model.num_classes + 1, (n,), generator=gen)
                          if with_labels else torch.zeros(n, dtype=torch.int64))
                ref = dec(*levels, boxes, labels, size, *pixel_map)
                feed = {**by_name, BOXES: boxes.numpy(), LABELS: labels.numpy(),
                        IMAGE_SIZE: size.numpy()}
                inputs.boxes.append(GraphCase(
                    feed, {k: v.numpy() for k, v in zip(dec_out, ref, strict=True)}))
        ref_det = det(*levels, size, *pixel_map)
        inputs.detections.append(GraphCase(
            {**by_name, IMAGE_SIZE: size.numpy()},
            {k: v.numpy() for k, v in zip(DETECTOR_OUTPUTS, ref_det, strict=True)}))
    return inputs


def compare_encoder(session: ort.InferenceSession, images: Sequence[ImageCase]) -> GraphParity:
    """Each feature map of the encoder against torch's (measured; the decoders' bars judge)."""
    max_abs: dict[str, float] = {}
    for case in images:
        got = _run(session, list(case.features), {ENCODER_INPUT: case.image})
        for name, want in case.features.items():
            max_abs[name] = max(max_abs.get(name, 0.0), _max_abs(want, got[name]))
    return GraphParity(ENCODER, max_abs)


def compare_decoder(session: ort.InferenceSession, cases: Sequence[GraphCase]) -> GraphParity:
    """The decoder against the eager decoder: masks, labels, class scores, quality."""
    quality = QUALITY in cases[0].expected if cases else False
    return _compare_masks(DECODER, session, cases, decoder_outputs(quality))


def compare_labelled_decoder(session: ort.InferenceSession, cases: Sequence[GraphCase]
                             ) -> GraphParity:
    """The labelled decoder against the eager *full* decoder, on the calls whose boxes all
    have labels: the same masks (and quality) for the same given labels."""
    labelled = [c for c in cases if c.labelled]
    quality = QUALITY in labelled[0].expected if labelled else False
    return _compare_masks(LABELLED_DECODER, session, labelled,
                          decoder_outputs(quality, labelled=True))


def _compare_masks(graph: str, session: ort.InferenceSession, cases: Sequence[GraphCase],
                   outputs: Sequence[str]) -> GraphParity:
    max_abs = {name: 0.0 for name in outputs if name != LABELS_OUT}
    failures: list[str] = []
    min_iou, largest, within_tol, labels_equal = 1.0, 0.0, True, True
    for case in cases:
        got = _run(session, outputs, case.feed)
        n = case.feed[BOXES].shape[0]
        if n == 0:
            if any(v.shape[0] for v in got.values()) and "rows for zero boxes" not in failures:
                failures.append("rows for zero boxes")
            continue
        want = case.expected
        for name, worst in max_abs.items():
            max_abs[name] = max(worst, _max_abs(want[name], got[name]))
        logits = want[MASK_LOGITS]
        largest = max(largest, float(np.abs(logits).max()))
        within_tol &= _within_tol(np.abs(logits - got[MASK_LOGITS]), logits)
        min_iou = min(min_iou, *(mask_iou(a >= 0, b >= 0)  # logit >= 0 <=> probability >= 0.5
                                 for a, b in zip(logits, got[MASK_LOGITS], strict=True)))
        if LABELS_OUT in got:
            labels_equal &= bool(np.array_equal(want[LABELS_OUT], got[LABELS_OUT]))
    if not within_tol:
        failures.append(f"mask logits differ by {max_abs[MASK_LOGITS]:.2e} (largest logit "
                        f"{largest:.3g}), beyond {LOGIT_TOL} + {LOGIT_RTOL} x the box's largest "
                        "|logit|")
    if min_iou < MIN_MASK_IOU:
        failures.append(f"mask IoU {min_iou:.4f} < {MIN_MASK_IOU}")
    if max_abs.get(QUALITY, 0.0) > QUALITY_TOL:
        failures.append(f"mask quality differs by {max_abs[QUALITY]:.2e} (more than "
                        f"{QUALITY_TOL})")
    if not labels_equal:
        failures.append("labels differ")
    return GraphParity(graph, max_abs, tuple(failures), min_mask_iou=min_iou,
                       largest_logit=largest)


def compare_detector(session: ort.InferenceSession, cases: Sequence[GraphCase],
                     score_floor: float) -> GraphParity:
    """The detector against the eager detector: the same detections. Random images give many
    detections at the score threshold, and one whose score rounds to the other side of it in
    float32 is no disagreement: where the counts differ, what both find at ``score_floor`` or
    above is compared."""
    max_abs = dict.fromkeys(DETECTOR_OUTPUTS, 0.0)
    failures: list[str] = []
    for case in cases:
        want, got = case.expected, _run(session, DETECTOR_OUTPUTS, case.feed)
        if want[SCORES].shape[0] != got[SCORES].shape[0]:
            want = {k: v[want[SCORES] >= score_floor] for k, v in want.items()}
            got = {k: v[got[SCORES] >= score_floor] for k, v in got.items()}
        if want[SCORES].shape[0] != got[SCORES].shape[0]:
            h, w = case.feed[IMAGE_SIZE].tolist()
            failures.append(f"{got[SCORES].shape[0]} detections where torch has "
                            f"{want[SCORES].shape[0]} ({h}x{w})")
            continue
        for name in DETECTOR_OUTPUTS:
            max_abs[name] = max(max_abs[name], _max_abs(want[name], got[name]))
    return GraphParity(DETECTOR, max_abs, tuple(failures))


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def check_parity(model: BoxMaskRCNN, model_dir: Path, cfg: BoxMaskConfig,
                 sizes: Sequence[tuple[int, int]] | None = None,
                 box_counts: Sequence[int] = (0, 1, 100), seed: int = 0,
                 raise_on_failure: bool = True) -> Parity:
    """Compare each graph in ``model_dir`` (the labelled decoder where there is one) with
    eager torch; raises `ExportError` naming every missed bar unless ``raise_on_failure`` is
    False. ``sizes``: image sizes (h, w), by default three around ``model.min_size``, one of
    them odd."""
    m = cfg.model.min_size
    sizes = tuple(sizes or ((m, m), (m, int(m * 1.3)), (int(m * 0.75) // 2 * 2 + 1, m)))
    inputs = reference_inputs(model, sizes, box_counts, seed)
    graphs = [compare_encoder(_session(model_dir / graph_file(ENCODER)), inputs.images),
              compare_decoder(_session(model_dir / graph_file(DECODER)), inputs.boxes)]
    labelled = model_dir / graph_file(LABELLED_DECODER)
    if labelled.is_file():
        graphs.append(compare_labelled_decoder(_session(labelled), inputs.boxes))
    graphs.append(compare_detector(_session(model_dir / graph_file(DETECTOR)), inputs.detections,
                                   cfg.model.box_score_thresh + BORDERLINE_SCORE))
    parity = Parity(tuple(graphs), sizes, tuple(box_counts))
    if raise_on_failure and not parity.passed:
        raise ExportError("ONNX Runtime disagrees with torch: " + "; ".join(parity.failures))
    return parity
