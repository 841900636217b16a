"""``boxmask export``: a training checkpoint -> the exported model directory (contracts §4).

Writes ``encoder.onnx``, ``decoder.onnx``, ``labelled_decoder.onnx`` (the decoder for boxes
that come with their class: no box head), ``detector.onnx`` and ``model.json``; optionally fp16
graphs, an int8 encoder for CPU (static quantisation calibrated on training images, with its
accuracy cost measured against fp32 and written into the card), TensorRT engines and a Triton
model repository. After export the ONNX graphs are run in ONNX Runtime and compared with eager
torch (``boxmask.export.parity``); a mismatch fails the export.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import torch
from onnxconverter_common import float16

from boxmask.config import BoxMaskConfig
from boxmask.export.errors import ExportError
from boxmask.export.graphs import (
    DecoderGraph,
    DetectorGraph,
    EncoderGraph,
    LabelledDecoderGraph,
    graph_names,
    has_pixel_map,
)
from boxmask.export.inputs import example_image, resized_input
from boxmask.export.parity import check_parity
from boxmask.export.quantize import quantize_encoder_int8
from boxmask.export.rewrites import export_rewrites
from boxmask.export.tensorrt import build_engines, check_tensorrt_available
from boxmask.export.triton import write_triton_repository
from boxmask.files import sha256_file
from boxmask.model import BoxMaskRCNN
from boxmask.model.checkpoint import load_checkpoint, model_from_checkpoint
from boxmask.runtime.contract import (
    BOXES,
    CARD_NAME,
    CLASS_SCORES,
    DECODER,
    DETECTOR,
    ENCODER,
    ENCODER_INPUT,
    ENCODER_OUTPUTS,
    GRAPHS,
    IMAGE_SIZE,
    LABELLED_DECODER,
    LABELS,
    LABELS_OUT,
    MASK_LOGITS,
    MASK_PROBS,
    PIXEL_MAP,
    QUALITY,
    SCORES,
    file_key,
    graph_file,
)
from boxmask.runtime.crf import mask_refine_name

# 2: the detector takes the encoder's features (p2..p5, image_size) instead of the image.
FORMAT_VERSION = 2

#: Told the name of each stage as it starts ("exporting the encoder", "checking parity", ...):
#: an export takes minutes, and the caller (the CLI) shows where it is.
Progress = Callable[[str], None]


def _quiet(stage: str) -> None:
    pass


def load_trained_model(checkpoint: Path) -> tuple[BoxMaskRCNN, BoxMaskConfig, list[dict], dict]:
    """Rebuild the model a checkpoint was trained as, with its weights, in eval mode on CPU."""
    ckpt = load_checkpoint(checkpoint)
    model, categories = model_from_checkpoint(ckpt, source=checkpoint)
    cfg = BoxMaskConfig.model_validate(ckpt["config"])
    cfg.model.backbone_weights = None
    return model, cfg, categories, ckpt


def _export(module: torch.nn.Module, args: tuple, path: Path, input_names: list[str],
            output_names: list[str], dynamic_axes: dict, opset: int) -> None:
    # The TorchScript-based exporter: torchvision's detection ops (RoIAlign level merging,
    # batched NMS, dynamic padding) carry symbolic functions for it.
    with warnings.catch_warnings():
        # The tracer warns about every Python-side shape read; the parity check is the judge.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic_axes,
                          opset_version=opset, do_constant_folding=True, dynamo=False)


def export_onnx(model: BoxMaskRCNN, cfg: BoxMaskConfig, out: Path, opset: int = 17,
                progress: Progress = _quiet) -> dict[str, Any]:
    """Write the graphs into ``out``; returns their I/O description for the card."""
    image = example_image(cfg)
    x, size = resized_input(model, image)
    enc = EncoderGraph(model).eval()
    names = graph_names(model)
    features = names[ENCODER][1]

    def export(graph: str, module: torch.nn.Module, args: tuple) -> None:
        progress(f"exporting the {graph.replace('_', ' ')}")
        inputs, outputs = names[graph]
        _export(module, args, out / graph_file(graph), inputs, outputs,
                _dynamic_axes(graph, inputs, outputs, features), opset)

    with torch.no_grad():
        export(ENCODER, enc, (x,))
        feats = enc(x)
        # The per-box graphs take the levels first and the pixel map (if any) last.
        levels, pixel_map = feats[:len(ENCODER_OUTPUTS)], feats[len(ENCODER_OUTPUTS):]
        # The per-box graphs in the operators ONNX Runtime runs fast (boxmask/export/rewrites.py).
        with export_rewrites(model):
            h, w = size
            boxes = torch.tensor([[0.1 * w, 0.1 * h, 0.6 * w, 0.7 * h],
                                  [0.3 * w, 0.2 * h, 0.9 * w, 0.9 * h],
                                  [0.0, 0.0, 0.5 * w, 0.5 * h]], dtype=torch.float32)
            labels = torch.tensor([1, 0, min(2, model.num_classes)], dtype=torch.int64)
            hw = torch.tensor([h, w], dtype=torch.int64)
            export(DECODER, DecoderGraph(model, size).eval(),
                   (*levels, boxes, labels, hw, *pixel_map))
            export(LABELLED_DECODER, LabelledDecoderGraph(model, size).eval(),
                   (*levels, boxes, labels.clamp(min=1), hw, *pixel_map))
            export(DETECTOR, DetectorGraph(model).eval(), (*levels, hw, *pixel_map))
    return {"opset": opset, **_io_description(model, cfg, names)}


def _dynamic_axes(graph: str, inputs: list[str], outputs: list[str], features: list[str]
                  ) -> dict[str, dict[int, str]]:
    """The free axes of one graph's tensors: every feature map's (the FPN levels, the pixel
    map) and the image's spatial axes, and the rows of the boxes and of what comes out per box
    (per detection for the detector)."""
    rows = {0: "num_detections" if graph == DETECTOR else "num_boxes"}
    axes: dict[str, dict[int, str]] = {n: {2: f"{n}_h", 3: f"{n}_w"}
                                       for n in (*inputs, *outputs) if n in features}
    if ENCODER_INPUT in inputs:
        axes[ENCODER_INPUT] = {2: "height", 3: "width"}
    axes |= {n: rows for n in inputs if n in (BOXES, LABELS)}
    if graph != ENCODER:
        axes |= dict.fromkeys(outputs, rows)
    return axes


def _io_description(model: BoxMaskRCNN, cfg: BoxMaskConfig,
                    names: dict[str, tuple[list[str], list[str]]]) -> dict[str, Any]:
    """The card's ``onnx``: each graph's inputs and outputs with their shapes (H, W: the
    resized image; h, w: a feature map's own size; N boxes; K detections)."""
    r = str(model.roi_heads.mask_branch.output_resolution)
    f = str(cfg.model.fpn_channels)
    pc = str(cfg.model.mask_pixel_channels) if has_pixel_map(model) else None
    taken: dict[str, list[str]] = {
        ENCODER_INPUT: ["1", "3", "H", "W"], **{n: ["1", f, "h", "w"] for n in ENCODER_OUTPUTS},
        BOXES: ["N", "4"], LABELS: ["N"], IMAGE_SIZE: ["2"]}
    given: dict[str, dict[str, list[str]]] = {
        ENCODER: {n: ["1", f, f"H/{2 ** (i + 2)}", f"W/{2 ** (i + 2)}"]
                  for i, n in enumerate(ENCODER_OUTPUTS)},
        DECODER: {MASK_LOGITS: ["N", "1", r, r], CLASS_SCORES: ["N", str(model.num_classes + 1)],
                  LABELS_OUT: ["N"], QUALITY: ["N"]},
        DETECTOR: {BOXES: ["K", "4"], LABELS: ["K"], SCORES: ["K"],
                   MASK_PROBS: ["K", "1", r, r]}}
    given[LABELLED_DECODER] = given[DECODER]
    if pc is not None:
        taken[PIXEL_MAP] = ["1", pc, "h", "w"]
        given[ENCODER][PIXEL_MAP] = ["1", pc, "H", "W"]
    return {graph: {"inputs": {n: taken[n] for n in inputs},
                    "outputs": {n: given[graph][n] for n in outputs}}
            for graph, (inputs, outputs) in names.items()}


def convert_fp16(src: Path, dst: Path) -> None:
    """fp16 weights and arithmetic with fp32 inputs/outputs (for GPU execution providers)."""
    model = onnx.load(str(src))
    # RoiAlign and the NMS/TopK family stay fp32: their fp16 kernels are missing on CPU and
    # inexact on box coordinates.
    converted = float16.convert_float_to_float16(
        model, keep_io_types=True, op_block_list=["RoiAlign", "NonMaxSuppression", "TopK"])
    onnx.save(converted, str(dst))


def export_checkpoint(checkpoint: Path, out: Path, name: str | None = None, fp16: bool = False,
                      int8: bool = False, calibration_images: int = 16, tensorrt: bool = False,
                      triton_repo: Path | None = None, opset: int = 17, check: bool = True,
                      overwrite: bool = True, images: Path | None = None,
                      provenance: dict[str, Any] | None = None,
                      served_crf: bool | None = None,
                      crf_kernel: str | None = None,
                      progress: Progress | None = None) -> dict[str, Any]:
    """Export a checkpoint; returns the model card written to ``out/model.json``.

    ``served_crf``: whether the runtime refines the masks with the dense CRF (the card's
    ``mask_refine``); None: as the checkpoint's ``model.served_crf``. ``crf_kernel``: its
    kernel, "local" or "wide" (boxmask.runtime.crf); None: the checkpoint's
    ``model.served_crf_kernel``.

    ``progress``: called with each stage's name as it starts (nothing is printed here).

    ``provenance``: more to record under the card's ``provenance`` (`boxmask finetune` names the
    checkpoint it started from and the data, by hash).

    ``images``: a folder of images for int8 calibration (and its held-out check) instead of the
    checkpoint's ``data.train_images`` / ``val_images``: an imported checkpoint's training data
    (COCO) is rarely at hand, and the user's own images are the better calibration anyway.

    The directory is built in a temporary sibling and moved into place at the end, so a failed
    export never leaves a half-written model where a server would load it.
    """
    checkpoint = Path(checkpoint)
    out = Path(out)
    progress = progress or _quiet
    if tensorrt:
        check_tensorrt_available()  # fail before the slow part
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    progress("loading the checkpoint")
    model, cfg, categories, ckpt = load_trained_model(checkpoint)
    if served_crf is not None:
        cfg.model.served_crf = served_crf
    if crf_kernel is not None:
        if crf_kernel not in ("local", "wide"):
            raise ExportError(f"the CRF's kernel must be local or wide, got {crf_kernel!r}")
        cfg.model.served_crf_kernel = crf_kernel  # type: ignore[assignment]
    # The graphs are the decoder's masks as they are: the runtime applies the CRF after them
    # (the card's mask_refine), so the parity check compares the graphs with the unrefined model.
    model.served_crf = False
    if images is not None:
        if not Path(images).is_dir():
            raise ExportError(f"--images {str(images)!r} is not a folder")
        cfg.data.train_images, cfg.data.val_images = Path(images), None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        io = export_onnx(model, cfg, tmp, opset, progress)
        files: dict[str, dict[str, str]] = {file_key(g): {"path": graph_file(g)} for g in GRAPHS}
        parity: dict[str, Any] = {}
        if check:
            progress("checking parity (ONNX Runtime against torch)")
            parity = check_parity(model, tmp, cfg).as_card()
        quantization: dict[str, Any] = {}
        if int8:
            progress("quantising to int8 (calibration and its accuracy cost)")
            quantization["int8"] = quantize_encoder_int8(model, cfg, tmp, calibration_images)
            for g in (ENCODER, DECODER, LABELLED_DECODER):
                files[file_key(g, "int8")] = {"path": graph_file(g, "int8")}
        if fp16:
            # The detector stays fp32: onnxconverter-common's cast clean-up fails on its NMS
            # graph ("'list' object has no attribute 'input'"), and pre-annotation is not the
            # latency-critical path; the encoder and decoder are.
            progress("converting to fp16")
            for g in (ENCODER, DECODER, LABELLED_DECODER):
                convert_fp16(tmp / graph_file(g), tmp / graph_file(g, "fp16"))
                files[file_key(g, "fp16")] = {"path": graph_file(g, "fp16")}
        if tensorrt:
            progress("building TensorRT engines")
            for key, path in build_engines(tmp, cfg).items():
                files[key] = {"path": path}
        progress("writing model.json")
        for entry in files.values():
            entry["sha256"] = sha256_file(tmp / entry["path"])
        card = _card(name or _default_name(checkpoint), cfg, categories, model, ckpt, checkpoint,
                     files, io, parity, quantization)
        card["provenance"].update(provenance or {})
        (tmp / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it private; the served model must be readable
        if out.exists():
            if not overwrite:
                raise ExportError(f"{out} exists; pass overwrite=True to replace it")
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if triton_repo is not None:
        progress("writing the Triton repository")
        write_triton_repository(out, Path(triton_repo))
    return card


def _default_name(checkpoint: Path) -> str:
    return checkpoint.parent.name or "boxmask"


def _card(name: str, cfg: BoxMaskConfig, categories: list[dict], model: BoxMaskRCNN, ckpt: dict,
          checkpoint: Path, files: dict, io: dict, parity: dict, quantization: dict) -> dict:
    t = model.transform
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "categories": [{"id": int(c["id"]), "name": str(c["name"]), "label": int(c["label"]),
                        "seen": bool(c["seen"])} for c in categories],
        "num_classes": len(categories),
        "mask_resolution": model.roi_heads.mask_branch.output_resolution,
        "mask_grid": "aligned" if cfg.model.mask_target_aligned else "torchvision",
        "mode": cfg.model.mode,
        # The decoders' `quality` output: each mask's predicted IoU (model.mask_quality).
        "mask_quality": model.roi_heads.mask_branch.quality is not None,
        # model.served_crf (and its kernel): the runtime refines the masks after the decoders
        # (not in the graphs).
        "mask_refine": mask_refine_name(cfg.model.served_crf, cfg.model.served_crf_kernel),
        "backbone": cfg.model.backbone,
        "preprocess": {
            "min_size": int(t.min_size[-1]), "max_size": int(t.max_size),
            "size_divisible": int(t.size_divisible),
            "mean": [float(v) for v in t.image_mean], "std": [float(v) for v in t.image_std],
            "input": "RGB float32 0..255, resized as torchvision's GeneralizedRCNNTransform; "
                     "the graphs normalise and zero-pad to size_divisible themselves",
        },
        "detector_defaults": {"score_threshold": cfg.model.box_score_thresh,
                              "nms_threshold": cfg.model.box_nms_thresh,
                              "max_detections": cfg.model.box_detections_per_img},
        "files": files,
        "onnx": io,
        "parity": parity,
        "quantization": quantization,
        "provenance": {
            "checkpoint": checkpoint.name,
            "checkpoint_sha256": sha256_file(checkpoint),
            "epoch": int(ckpt.get("epoch", 0)),
            "iteration": int(ckpt.get("iteration", 0)),
            "config": json.loads(cfg.model_dump_json()),
            "eval": ckpt.get("metrics"),
            # Where imported weights came from (boxmask import torchvision); None if trained here.
            "source": ckpt.get("source"),
            "torch": torch.__version__,
        },
    }
