"""TensorRT engines for the encoder and decoder (GPU only).

Built from the ONNX graphs with dynamic-shape optimisation profiles: the encoder over image sizes
from 32x32 up to ``max_size`` square, the decoder over 0..``max_boxes`` boxes. The detector (NMS
and data-dependent loops) stays on ONNX Runtime. Engines are specific to the GPU and TensorRT
version that built them, so they are built where they will run (``boxmask export --tensorrt``
on the Triton host, or inside the Triton container).
"""

from __future__ import annotations

from pathlib import Path

import torch

from boxmask.config import BoxMaskConfig
from boxmask.export.errors import ExportError
from boxmask.runtime.contract import (
    BOXES,
    DECODER,
    ENCODER,
    ENCODER_INPUT,
    ENCODER_OUTPUTS,
    LABELS,
    PIXEL_MAP,
    file_key,
    graph_file,
)


def check_tensorrt_available() -> None:
    """Raise ExportError with what to do when TensorRT cannot build here."""
    # tensorrt is imported where used: it is the `gpu` extra, absent on most machines.
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        raise ExportError("--tensorrt needs the tensorrt package and an NVIDIA GPU: "
                          "pip install 'boxmask[gpu]' on a CUDA machine (or build inside "
                          "the Triton container, see deploy/)") from exc
    if not torch.cuda.is_available():
        raise ExportError("--tensorrt needs an NVIDIA GPU, and this machine has none; export "
                          "without --tensorrt here and build the engines on the GPU host")


def _build(onnx_path: Path, plan_path: Path, profiles: dict[str, tuple[tuple, tuple, tuple]],
           fp16: bool) -> None:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 4 << 30)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profiles.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ExportError(f"TensorRT failed to build an engine for {onnx_path.name}")
    plan_path.write_bytes(bytes(engine))


def build_engines(model_dir: Path, cfg: BoxMaskConfig, max_boxes: int = 256,
                  fp16: bool = True) -> dict[str, str]:
    """Build ``encoder.plan`` and ``decoder.plan``; returns card ``files`` keys -> file names."""
    m = cfg.model
    side = ((m.max_size + 31) // 32) * 32
    opt_h = ((m.min_size + 31) // 32) * 32
    opt_w = ((int(m.min_size * 1.5) + 31) // 32) * 32
    _build(model_dir / graph_file(ENCODER), model_dir / graph_file(ENCODER, "trt"),
           {ENCODER_INPUT: ((1, 3, 32, 32), (1, 3, opt_h, opt_w), (1, 3, side, side))}, fp16)
    f = m.fpn_channels
    profiles = {}
    for i, name in enumerate(ENCODER_OUTPUTS):
        s = 2 ** (i + 2)
        profiles[name] = ((1, f, 1, 1), (1, f, opt_h // s, opt_w // s), (1, f, side // s, side // s))
    if m.mask_pixel_channels:  # the pixel map: the padded input's own resolution
        c = m.mask_pixel_channels
        profiles[PIXEL_MAP] = ((1, c, 32, 32), (1, c, opt_h, opt_w), (1, c, side, side))
    profiles[BOXES] = ((0, 4), (10, 4), (max_boxes, 4))
    profiles[LABELS] = ((0,), (10,), (max_boxes,))
    _build(model_dir / graph_file(DECODER), model_dir / graph_file(DECODER, "trt"), profiles, fp16)
    return {file_key(g, "trt"): graph_file(g, "trt") for g in (ENCODER, DECODER)}
