"""The TensorRT engines' optimisation profiles name the graphs' own inputs, and the engines
get the contract's file names and card keys (the build itself needs a GPU: test_export.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from boxmask.config import BoxMaskConfig
from boxmask.export import tensorrt
from boxmask.runtime.contract import DECODER_INPUTS, ENCODER_INPUT, PIXEL_MAP


@pytest.mark.parametrize("pixels", [0, 4])
def test_engines_are_built_for_the_encoder_and_decoder_over_their_contract_inputs(
        monkeypatch, tmp_path: Path, pixels: int) -> None:
    built = {}
    monkeypatch.setattr(tensorrt, "_build", lambda onnx_path, plan_path, profiles, fp16:
                        built.__setitem__((onnx_path.name, plan_path.name), profiles))
    cfg = BoxMaskConfig.model_validate({
        "data": {"train_annotations": "a.json", "train_images": "i", "seen": ["a"]},
        "model": {"min_size": 64, "max_size": 96, "mask_pixel_channels": pixels}})
    files = tensorrt.build_engines(tmp_path, cfg, max_boxes=8)
    assert files == {"encoder_trt": "encoder.plan", "decoder_trt": "decoder.plan"}
    assert list(built) == [("encoder.onnx", "encoder.plan"), ("decoder.onnx", "decoder.plan")]
    assert list(built["encoder.onnx", "encoder.plan"]) == [ENCODER_INPUT]
    # Every input with a free axis has a profile; image_size ([2]) has none to give.
    decoder = set(built["decoder.onnx", "decoder.plan"])
    assert decoder == {*DECODER_INPUTS, *([PIXEL_MAP] if pixels else [])} - {"image_size"}
