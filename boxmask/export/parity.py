"""ONNX Runtime against eager torch, on the exported graphs' own inputs.

Checked on several image sizes, on N = 0, 1 and many boxes, with and without labels:
- encoder: max abs difference of each pyramid level;
- decoder: max abs difference of mask logits and class scores, equal labels, and the IoU of the
  thresholded R x R masks (the ``>= 0.99`` bar of issue 4); logits must agree within
  ``LOGIT_TOL + LOGIT_RTOL * max |logit of that box|``: float32 rounding grows with the
  magnitude of the terms a convolution sums, which is the scale of the whole mask's logits, not
  of the one cell (a cell near 0 in a mask whose logits reach 1000 carries the rounding of
  terms of 1000; a random-weight R50, the tests of imported models, has logits in the
  thousands, and ONNX Runtime's AVX2 kernels sum in another order than its AVX-512 ones);
- labelled decoder (when exported): its mask logits against the eager full decoder's for the
  same given labels, with the same bars: skipping the box head must not change a mask;
- detector: the same boxes, labels and scores.
The export fails when a bar is missed: a graph that disagrees with its model is a bug.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from boxmask.config import BoxMaskConfig
from boxmask.export.errors import ExportError
from boxmask.export.graphs import DecoderGraph, DetectorGraph, EncoderGraph
from boxmask.export.inputs import random_boxes
from boxmask.model import BoxMaskRCNN
from boxmask.runtime.contract import (
    BOXES,
    DECODER,
    DECODER_OUTPUTS,
    DETECTOR,
    DETECTOR_OUTPUTS,
    ENCODER,
    ENCODER_INPUT,
    ENCODER_OUTPUTS,
    IMAGE_SIZE,
    LABELLED_DECODER,
    LABELLED_DECODER_OUTPUTS,
    LABELS,
    QUALITY,
    graph_file,
)

LOGIT_TOL = 1e-3
LOGIT_RTOL = 1e-5
MIN_MASK_IOU = 0.99
# Detections within this much of the score threshold may be kept by one runtime and dropped by
# the other (float32 rounding); the detector check compares what both keep above it.
BORDERLINE_SCORE = 1e-3


def _within_tol(diff: np.ndarray, ref: np.ndarray) -> bool:
    """``diff`` and ``ref`` ``[N, ...]`` (one row per box): every cell within ``LOGIT_TOL +
    LOGIT_RTOL x`` the largest ``|ref|`` of its row."""
    scale = np.abs(ref).reshape(ref.shape[0], -1).max(axis=1)
    bound = (LOGIT_TOL + LOGIT_RTOL * scale).reshape((-1,) + (1,) * (ref.ndim - 1))
    return bool((diff <= bound).all())


def _session(path: Path):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


# The mask-quality head's IoU may differ this much between ONNX Runtime and torch (it ranks
# masks for review: a thousandth changes no order that matters).
QUALITY_TOL = 1e-3


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a >= 0, b >= 0  # logits >= 0 <=> probability >= 0.5
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@torch.no_grad()
def check_parity(model: BoxMaskRCNN, model_dir: Path, cfg: BoxMaskConfig,
                 sizes: tuple[tuple[int, int], ...] | None = None,
                 box_counts: tuple[int, ...] = (0, 1, 100), seed: int = 0,
                 raise_on_failure: bool = True) -> dict[str, Any]:
    """Compare the three graphs in ``model_dir`` with eager torch; returns the measured figures."""
    enc_s = _session(model_dir / graph_file(ENCODER))
    dec_s = _session(model_dir / graph_file(DECODER))
    det_s = _session(model_dir / graph_file(DETECTOR))
    labelled_path = model_dir / graph_file(LABELLED_DECODER)
    given_s = _session(labelled_path) if labelled_path.is_file() else None
    m = cfg.model.min_size
    sizes = sizes or ((m, m), (m, int(m * 1.3)), (int(m * 0.75) // 2 * 2 + 1, m))
    enc, det = EncoderGraph(model).eval(), DetectorGraph(model).eval()
    gen = torch.Generator().manual_seed(seed)
    worst = {"encoder_max_abs": 0.0, "decoder_logits_max_abs": 0.0, "decoder_scores_max_abs": 0.0,
             "decoder_logits_max_ref": 0.0, "decoder_logits_within_tol": True,
             "decoder_min_mask_iou": 1.0, "decoder_labels_equal": True,
             "detector_max_abs": 0.0, "detector_same_count": True}
    quality = model.roi_heads.mask_branch.quality is not None
    if quality:
        worst["decoder_quality_max_abs"] = 0.0
    if given_s is not None:
        worst |= {"labelled_decoder_logits_max_abs": 0.0, "labelled_decoder_within_tol": True,
                  "labelled_decoder_min_mask_iou": 1.0}
    for h, w in sizes:
        x = torch.rand(1, 3, h, w, generator=gen) * 255.0
        feats = enc(x)
        # The levels, then the pixel map for a model with one (graphs.py); the other graphs
        # take them by name.
        names = [o.name for o in enc_s.get_outputs()]
        ort_feats = enc_s.run(names, {ENCODER_INPUT: x.numpy()})
        levels, pixel_map = feats[:len(ENCODER_OUTPUTS)], feats[len(ENCODER_OUTPUTS):]
        feature_feed = {k: f.numpy() for k, f in zip(names, feats)}
        for a, b in zip(feats, ort_feats):
            worst["encoder_max_abs"] = max(worst["encoder_max_abs"], float(np.abs(a.numpy() - b).max()))
        dec = DecoderGraph(model, (h, w)).eval()
        for n in box_counts:
            boxes = random_boxes(n, h, w, gen)
            for with_labels in (True, False):
                labels = (torch.randint(1, model.num_classes + 1, (n,), generator=gen)
                          if with_labels else torch.zeros(n, dtype=torch.int64))
                size = torch.tensor([h, w], dtype=torch.int64)
                ref = dec(*levels, boxes, labels, size, *pixel_map)
                feed = {**feature_feed, BOXES: boxes.numpy(), LABELS: labels.numpy(),
                        IMAGE_SIZE: size.numpy()}
                got = dec_s.run(DECODER_OUTPUTS, feed)
                given = None
                if given_s is not None and with_labels:
                    given = given_s.run(LABELLED_DECODER_OUTPUTS, feed)[0]
                if quality and n:
                    # The mask-quality head's IoU, from both decoders (the same masks, so the
                    # same figure).
                    pairs = [(ref[3], dec_s.run([QUALITY], feed)[0])]
                    if given_s is not None and with_labels:
                        pairs.append((ref[3], given_s.run([QUALITY], feed)[0]))
                    for a, b in pairs:
                        worst["decoder_quality_max_abs"] = max(
                            worst["decoder_quality_max_abs"], float(np.abs(a.numpy() - b).max()))
                if n == 0:
                    if any(g.shape[0] != 0 for g in got) or (given is not None and given.shape[0]):
                        raise ExportError("decoder.onnx returns rows for zero boxes")
                    continue
                if given is not None:
                    ref_logits = ref[0].numpy()
                    gdiff = np.abs(ref_logits - given)
                    worst["labelled_decoder_logits_max_abs"] = max(
                        worst["labelled_decoder_logits_max_abs"], float(gdiff.max()))
                    worst["labelled_decoder_within_tol"] &= _within_tol(gdiff, ref_logits)
                    worst["labelled_decoder_min_mask_iou"] = min(
                        worst["labelled_decoder_min_mask_iou"],
                        *(_mask_iou(ref_logits[i], given[i]) for i in range(n)))
                diff = np.abs(ref[0].numpy() - got[0])
                worst["decoder_logits_max_abs"] = max(worst["decoder_logits_max_abs"], float(diff.max()))
                worst["decoder_logits_max_ref"] = max(worst["decoder_logits_max_ref"],
                                                      float(ref[0].abs().max()))
                worst["decoder_logits_within_tol"] &= _within_tol(diff, ref[0].numpy())
                worst["decoder_scores_max_abs"] = max(worst["decoder_scores_max_abs"],
                                                      float(np.abs(ref[1].numpy() - got[1]).max()))
                worst["decoder_labels_equal"] &= bool(np.array_equal(ref[2].numpy(), got[2]))
                for i in range(n):
                    worst["decoder_min_mask_iou"] = min(worst["decoder_min_mask_iou"],
                                                        _mask_iou(ref[0][i].numpy(), got[0][i]))
        size = torch.tensor([h, w], dtype=torch.int64)
        ref_det = det(*levels, size, *pixel_map)
        got_det = det_s.run(DETECTOR_OUTPUTS, {**feature_feed, IMAGE_SIZE: size.numpy()})
        ref_np = [a.numpy() for a in ref_det]
        if ref_np[0].shape[0] != got_det[0].shape[0]:
            # Random images give many detections at the score threshold; one whose score rounds
            # to the other side of it in float32 is not a disagreement. Compare what both find
            # clearly above the threshold.
            floor = cfg.model.box_score_thresh + BORDERLINE_SCORE
            ref_np = [a[ref_np[2] >= floor] for a in ref_np]
            got_det = [b[got_det[2] >= floor] for b in got_det]
            worst["detector_borderline"] = worst.get("detector_borderline", 0) + 1
        if ref_np[0].shape[0] != got_det[0].shape[0]:
            worst["detector_same_count"] = False
        else:
            for a, b in zip(ref_np, got_det):
                if a.size:
                    diff = np.abs(a.astype(np.float64) - b.astype(np.float64)).max()
                    worst["detector_max_abs"] = max(worst["detector_max_abs"], float(diff))
    worst["sizes"] = [list(s) for s in sizes]
    worst["box_counts"] = list(box_counts)
    failures = []
    if not worst["decoder_logits_within_tol"]:
        failures.append(f"decoder logits differ by {worst['decoder_logits_max_abs']:.2e} (largest "
                        f"logit {worst['decoder_logits_max_ref']:.3g}), beyond {LOGIT_TOL} + "
                        f"{LOGIT_RTOL} x the box's largest |logit|")
    if worst["decoder_min_mask_iou"] < MIN_MASK_IOU:
        failures.append(f"decoder mask IoU {worst['decoder_min_mask_iou']:.4f} < {MIN_MASK_IOU}")
    if not worst.get("labelled_decoder_within_tol", True):
        failures.append(f"labelled decoder logits differ from the full decoder's by "
                        f"{worst['labelled_decoder_logits_max_abs']:.2e}")
    if worst.get("labelled_decoder_min_mask_iou", 1.0) < MIN_MASK_IOU:
        failures.append(f"labelled decoder mask IoU {worst['labelled_decoder_min_mask_iou']:.4f} "
                        f"< {MIN_MASK_IOU}")
    if worst.get("decoder_quality_max_abs", 0.0) > QUALITY_TOL:
        failures.append(f"mask quality differs by {worst['decoder_quality_max_abs']:.2e} "
                        f"(more than {QUALITY_TOL})")
    if not worst["decoder_labels_equal"]:
        failures.append("decoder labels differ")
    if not worst["detector_same_count"]:
        failures.append("detector finds a different number of objects")
    worst["passed"] = not failures
    if failures and raise_on_failure:
        raise ExportError("ONNX Runtime disagrees with torch: " + "; ".join(failures))
    return worst
