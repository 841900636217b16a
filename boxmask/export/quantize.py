"""int8 encoder for CPU: ONNX Runtime static quantisation, calibrated on training images.

The encoder (backbone + FPN) is most of the per-image cost (docs/benchmarks.md, runtime table:
2.3 s in ORT fp32 for R50-FPN at 800x1216, against 15 ms for one box's decoder), so it is the
graph worth quantising first. The decoder's paper-width mask head (four 3x3 256-channel convolutions per box) is the
per-box cost; ``quantize_decoder_int8`` writes ``decoder.int8.onnx`` too, calibrated on the
fp32 encoder's features of the same images and boxes drawn on them, and its cost is measured
the same way (int8 encoder + int8 decoder against fp32 + fp32).

The accuracy cost is measured on held-out images (validation images when the config has them):
the int8 encoder's masks for ground-truth-like boxes against the fp32 encoder's, as mean mask
IoU, written into the card. For a model with the mask-quality head, the int8 graphs' ``quality``
(int8 encoder and int8 decoders, what ``precision="int8"`` serves) against the fp32 graphs' on
the same boxes, as the largest and mean absolute difference: a review order built on int8
scores is only as good as that. Mask AP of both precisions is in ``benchmarks/runtime.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from PIL import Image

from boxmask.config import BoxMaskConfig
from boxmask.export.errors import ExportError
from boxmask.export.inputs import random_boxes, resized_input
from boxmask.model import BoxMaskRCNN
from boxmask.runtime.contract import (
    BOXES,
    DECODER,
    DECODER_OUTPUTS,
    ENCODER,
    ENCODER_INPUT,
    IMAGE_SIZE,
    LABELLED_DECODER,
    LABELS,
    QUALITY,
    graph_file,
)
from boxmask.runtime.prompted_masks import mask_iou


def _image_files(folder: Path | None) -> list[Path]:
    if folder is None or not Path(folder).is_dir():
        return []
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def _encoder_inputs(model: BoxMaskRCNN, files: list[Path]) -> Iterator[np.ndarray]:
    for f in files:
        img = np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255.0
        x, _ = resized_input(model, torch.from_numpy(img).permute(2, 0, 1).contiguous())
        yield x.numpy()


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over a list of encoder inputs."""

    def __init__(self, inputs: list[np.ndarray]) -> None:
        self._it = iter(inputs)

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        return None if x is None else {ENCODER_INPUT: x}


def quantize_encoder_int8(model: BoxMaskRCNN, cfg: BoxMaskConfig, model_dir: Path,
                          num_images: int = 16) -> dict[str, Any]:
    """Write ``encoder.int8.onnx`` beside ``encoder.onnx`` (and the decoders' int8 twins,
    `quantize_decoder_int8`); return the measured accuracy cost."""
    train_files = _image_files(cfg.data.train_images)
    if not train_files:
        raise ExportError("--int8 calibrates on training images, but data.train_images of the "
                          f"checkpoint's config ({cfg.data.train_images}) is not a folder of images")
    step = max(1, len(train_files) // num_images)
    calib_files = train_files[::step][:num_images]
    held_out = _image_files(cfg.data.val_images)[:8] or [f for f in train_files if f not in calib_files][:8]

    pre = model_dir / f"{ENCODER}.pre.onnx"
    quant_pre_process(str(model_dir / graph_file(ENCODER)), str(pre), skip_symbolic_shape=True)
    quantize_static(
        str(pre), str(model_dir / graph_file(ENCODER, "int8")),
        _Calibration(list(_encoder_inputs(model, calib_files))),
        quant_format=QuantFormat.QDQ, per_channel=True,
        # Convolutions are the cost; quantising normalisation constants only adds error.
        op_types_to_quantize=["Conv"],
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    pre.unlink(missing_ok=True)
    quantize_decoder_int8(model_dir, list(_encoder_inputs(model, calib_files)), model.num_classes)
    cost = measure_int8_cost(model_dir, list(_encoder_inputs(model, held_out)), model.num_classes)
    return {"calibration_images": len(calib_files), "method": "static QDQ, per-channel int8 "
            "weights, uint8 activations, MinMax calibration", **cost}


def quantize_decoder_int8(model_dir: Path, encoder_inputs: list[np.ndarray], num_classes: int,
                          boxes_per_image: int = 32, seed: int = 0) -> None:
    """Write ``decoder.int8.onnx`` (and ``labelled_decoder.int8.onnx`` when the labelled decoder
    was exported): convolutions and the box head's matrix products in int8.

    Calibration feeds are the fp32 encoder's features of ``encoder_inputs`` with random boxes
    (every size the decoder sees) and random labels (1..C for the labelled decoder, which takes
    no 0); RoIAlign and the softmax stay fp32.
    """
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    enc = ort.InferenceSession(str(model_dir / graph_file(ENCODER)), opts,
                               providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(seed)
    feeds = []
    for x in encoder_inputs:
        h, w = x.shape[-2:]
        names = [o.name for o in enc.get_outputs()]  # the levels, and the pixel map if any
        feats = enc.run(names, {ENCODER_INPUT: x})
        boxes = random_boxes(boxes_per_image, h, w, gen).numpy()
        labels = torch.randint(0, num_classes + 1, (boxes_per_image,), generator=gen).numpy()
        feeds.append({**dict(zip(names, feats, strict=True)), BOXES: boxes, LABELS: labels,
                      IMAGE_SIZE: np.array([h, w], np.int64)})
    _quantize_decoder(model_dir / graph_file(DECODER), model_dir / graph_file(DECODER, "int8"),
                      feeds)
    labelled = model_dir / graph_file(LABELLED_DECODER)
    if labelled.is_file():
        given = [{**f, LABELS: np.maximum(f[LABELS], 1)} for f in feeds]
        _quantize_decoder(labelled, model_dir / graph_file(LABELLED_DECODER, "int8"), given)


def _quantize_decoder(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]]) -> None:
    pre = dst.with_name(src.stem + ".pre.onnx")
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)

    class _Feeds:
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    quantize_static(
        str(pre), str(dst), _Feeds(),
        quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        op_types_to_quantize=["Conv", "ConvTranspose", "Gemm", "MatMul"],
    )
    pre.unlink(missing_ok=True)


def measure_int8_cost(model_dir: Path, inputs: list[np.ndarray], num_classes: int,
                      boxes_per_image: int = 20, seed: int = 0) -> dict[str, Any]:
    """Masks from int8 vs fp32 features for the same boxes: mean/min IoU, feature error."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    cpu = ["CPUExecutionProvider"]
    fp32 = ort.InferenceSession(str(model_dir / graph_file(ENCODER)), opts, providers=cpu)
    int8 = ort.InferenceSession(str(model_dir / graph_file(ENCODER, "int8")), opts, providers=cpu)
    dec = ort.InferenceSession(str(model_dir / graph_file(DECODER)), opts, providers=cpu)
    dec8_path = model_dir / graph_file(DECODER, "int8")
    dec8 = (ort.InferenceSession(str(dec8_path), opts, providers=cpu)
            if dec8_path.is_file() else None)
    # The mask-quality head's IoU, fp32 against int8, from each decoder that has an int8 twin.
    quality_pairs = []
    if QUALITY in [o.name for o in dec.get_outputs()]:
        for graph in (DECODER, LABELLED_DECODER):
            if (model_dir / graph_file(graph, "int8")).is_file():
                quality_pairs.append(tuple(
                    ort.InferenceSession(str(model_dir / graph_file(graph, variant)), opts,
                                         providers=cpu) for variant in (None, "int8")))
    gen = torch.Generator().manual_seed(seed)
    ious, rel, ious_full, quality_diff = [], [], [], []
    for x in inputs:
        h, w = x.shape[-2:]
        names = [o.name for o in fp32.get_outputs()]
        f32 = fp32.run(names, {ENCODER_INPUT: x})
        f8 = int8.run(names, {ENCODER_INPUT: x})
        rel.append(float(np.mean([np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-12)
                                  for a, b in zip(f32, f8, strict=True)])))
        boxes = random_boxes(boxes_per_image, h, w, gen).numpy()
        labels = torch.randint(1, num_classes + 1, (boxes_per_image,), generator=gen).numpy()
        size = np.array([h, w], dtype=np.int64)
        per_box = {BOXES: boxes, LABELS: labels, IMAGE_SIZE: size}
        feed32 = {**dict(zip(names, f32, strict=True)), **per_box}
        feed8 = {**dict(zip(names, f8, strict=True)), **per_box}
        m32 = dec.run(DECODER_OUTPUTS, feed32)[0] >= 0
        m8 = dec.run(DECODER_OUTPUTS, feed8)[0] >= 0
        ious += [mask_iou(a, b) for a, b in zip(m32, m8, strict=True)]
        if dec8 is not None:
            m88 = dec8.run(DECODER_OUTPUTS, feed8)[0] >= 0
            ious_full += [mask_iou(a, b) for a, b in zip(m32, m88, strict=True)]
        for fp32_dec, int8_dec in quality_pairs:
            q32 = fp32_dec.run([QUALITY], feed32)[0]
            q8 = int8_dec.run([QUALITY], feed8)[0]
            quality_diff += np.abs(q32.astype(np.float64) - q8).tolist()
    if not ious:
        return {"held_out_images": 0}
    out = {"held_out_images": len(inputs), "mask_iou_vs_fp32_mean": float(np.mean(ious)),
           "mask_iou_vs_fp32_min": float(np.min(ious)),
           "feature_relative_error_mean": float(np.mean(rel))}
    if ious_full:
        out["int8_decoder_mask_iou_vs_fp32_mean"] = float(np.mean(ious_full))
    if quality_diff:
        # int8 encoder + int8 decoders against fp32 + fp32, the same boxes and labels.
        out["int8_quality_max_abs_vs_fp32"] = float(np.max(quality_diff))
        out["int8_quality_mean_abs_vs_fp32"] = float(np.mean(quality_diff))
    return out
