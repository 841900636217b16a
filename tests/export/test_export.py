"""The exporter against eager torch, and the torch-free runtime against both."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from boxmask.export.exporter import ExportError, load_trained_model, sha256_file
from boxmask.runtime.prompted_masks import mask_iou

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def eager(tiny_checkpoint: Path):
    model, cfg, categories, _ = load_trained_model(tiny_checkpoint)
    return model, cfg, categories


def test_card_describes_the_model_and_its_files(exported_model_dir: Path, tiny_checkpoint: Path):
    card = json.loads((exported_model_dir / "model.json").read_text())
    assert card["format_version"] == 2
    assert card["name"] == "synth-tiny"
    assert [c["label"] for c in card["categories"]] == list(range(1, card["num_classes"] + 1))
    assert {c["name"] for c in card["categories"] if not c["seen"]}  # the split is recorded
    assert card["mask_resolution"] == 28
    assert card["preprocess"]["min_size"] == 64 and card["preprocess"]["size_divisible"] == 32
    for entry in card["files"].values():
        assert sha256_file(exported_model_dir / entry["path"]) == entry["sha256"]
    assert card["provenance"]["checkpoint_sha256"] == sha256_file(tiny_checkpoint)
    assert card["provenance"]["config"]["model"]["mode"] == "teacher_student"
    assert card["onnx"]["opset"] == 17


def test_parity_with_eager_meets_the_bars(exported_model_dir: Path):
    parity = json.loads((exported_model_dir / "model.json").read_text())["parity"]
    assert parity["passed"]
    graphs = parity["graphs"]
    assert list(graphs) == ["encoder", "decoder", "labelled_decoder", "detector"]
    assert not any(g["failures"] for g in graphs.values())
    assert graphs["decoder"]["max_abs"]["mask_logits"] <= 1e-3
    assert graphs["decoder"]["min_mask_iou"] >= 0.99
    assert set(graphs["decoder"]["max_abs"]) == {"mask_logits", "class_scores"}
    assert set(graphs["encoder"]["max_abs"]) == {"p2", "p3", "p4", "p5"}
    assert 0 in parity["box_counts"] and 1 in parity["box_counts"] and 100 in parity["box_counts"]
    assert len(parity["sizes"]) >= 3


def _eager_masks_in_boxes(model, image: np.ndarray, boxes: np.ndarray,
                          labels: torch.Tensor) -> np.ndarray:
    """Eager ``segment_boxes`` masks (>= 0.5) of ``image`` ``[H, W, 3]`` uint8, cut to each
    box's pixels: the runtime's masks never leave their boxes, torchvision's pasting reaches a
    mask cell past them, so they are compared on the box's pixels, as the runtime promises."""
    from boxmask.runtime.masks import box_pixels

    h, w = image.shape[:2]
    img_t = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
    ref = model.segment_boxes([img_t], [torch.from_numpy(boxes)], [labels])[0][:, 0].numpy() >= 0.5
    for mask, box in zip(ref, boxes, strict=True):
        y0, y1, x0, x1 = box_pixels(box, h, w)
        inside = np.zeros_like(mask)
        inside[y0:y1, x0:x1] = True
        mask &= inside
    return ref


@pytest.mark.parametrize("hw", [(64, 64), (48, 80), (100, 70)])
@pytest.mark.parametrize("n", [1, 12])
@pytest.mark.parametrize("with_labels", [True, False])
def test_runtime_masks_match_eager_segment_boxes(exported_model_dir, eager, hw, n, with_labels):
    """Full path: numpy preprocessing + ONNX Runtime + numpy pasting vs torchvision eager."""
    from boxmask.runtime import Predictor

    model, _, categories = eager
    rng = np.random.default_rng(hw[0] * 7 + n)
    h, w = hw
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    x1 = rng.uniform(0, w * 0.6, n)
    y1 = rng.uniform(0, h * 0.6, n)
    boxes = np.stack([x1, y1, np.minimum(x1 + rng.uniform(8, w * 0.5, n), w),
                      np.minimum(y1 + rng.uniform(8, h * 0.5, n), h)], 1).astype(np.float32)
    cat_ids = [c["id"] for c in categories]
    labels = [int(rng.choice(cat_ids)) for _ in range(n)] if with_labels else None

    predictor = Predictor.from_dir(exported_model_dir)
    key = predictor.set_image(image)
    pred = predictor.predict(boxes, labels=labels, key=key)

    cat_to_label = {c["id"]: c["label"] for c in categories}
    lab = torch.tensor([cat_to_label[c] for c in labels]) if labels else torch.zeros(n, dtype=torch.int64)
    img_t = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
    ref = _eager_masks_in_boxes(model, image, boxes, lab)
    _, _, used = model.decode_in_image(img_t, torch.from_numpy(boxes), lab)
    label_to_cat = {c["label"]: c["id"] for c in categories}
    assert list(pred.labels) == [label_to_cat[int(u)] for u in used]
    ious = [mask_iou(a, b) for a, b in zip(pred.masks, ref, strict=True)]
    assert min(ious) >= 0.99, ious


def test_runtime_detector_matches_eager_detections(exported_model_dir, eager):
    from boxmask.runtime import Predictor

    model, _, _categories = eager
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    predictor = Predictor.from_dir(exported_model_dir)
    det = predictor.detect(image=image, score_threshold=0.0, max_detections=1000)
    with torch.no_grad():
        ref = model([torch.from_numpy(image).permute(2, 0, 1).float() / 255.0])[0]
    assert len(det.scores) == len(ref["scores"])
    if len(ref["scores"]):
        order = np.argsort(-det.scores)
        np.testing.assert_allclose(det.scores[order], ref["scores"].numpy(), atol=1e-3)
        np.testing.assert_allclose(det.boxes[order], ref["boxes"].numpy(), atol=0.5)


def test_int8_graphs_are_written_with_their_measured_cost(tiny_checkpoint, tmp_path):
    from boxmask.export.exporter import export_checkpoint

    out = tmp_path / "int8"
    card = export_checkpoint(tiny_checkpoint, out, int8=True, calibration_images=4, check=False)
    for graph in ("encoder", "decoder"):
        assert card["files"][f"{graph}_int8"]["sha256"] == sha256_file(out / f"{graph}.int8.onnx")
    q = card["quantization"]["int8"]
    assert q["calibration_images"] == 4 and q["held_out_images"] > 0
    assert 0.0 <= q["mask_iou_vs_fp32_mean"] <= 1.0
    assert 0.0 <= q["int8_decoder_mask_iou_vs_fp32_mean"] <= 1.0
    from boxmask.runtime import Predictor

    p = Predictor.from_dir(out, precision="int8")
    pred = p.predict(np.array([[2, 2, 40, 40]], np.float32), key=p.set_image(
        np.zeros((64, 64, 3), np.uint8)))
    assert pred.masks.shape == (1, 64, 64)


def test_triton_repository_serves_the_contract_names(exported_model_dir, tmp_path):
    from boxmask.export.triton import write_triton_repository

    repo = write_triton_repository(exported_model_dir, tmp_path / "repo")
    for name in ("boxmask_encoder", "boxmask_decoder", "boxmask_detector"):
        cfg = (repo / name / "config.pbtxt").read_text()
        assert f'name: "{name}"' in cfg and 'backend: "onnxruntime"' in cfg
        assert "max_batch_size: 0" in cfg and "KIND_GPU" in cfg
        assert (repo / name / "1" / "model.onnx").is_file()
    dec = (repo / "boxmask_decoder" / "config.pbtxt").read_text()
    for tensor in ("p2", "boxes", "labels", "image_size", "mask_logits", "class_scores", "labels_out"):
        assert f'name: "{tensor}"' in dec
    assert 'name: "boxes" data_type: TYPE_FP32 dims: [ -1, 4 ]' in dec
    assert json.loads((repo / "model.json").read_text())["name"] == "synth-tiny"


def test_triton_configs_parse_as_tritons_model_config_and_match_the_graphs(exported_model_dir,
                                                                          tmp_path):
    """Each config.pbtxt read by Triton's own protobuf schema (tritonclient's model_config_pb2),
    its tensors checked against the ONNX graph beside it. The configs are also loaded by a real
    tritonserver in tests/runtime/test_triton_session.py (where one is installed)."""
    import onnx
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from boxmask.export.triton import write_triton_repository

    repo = write_triton_repository(exported_model_dir, tmp_path / "repo", gpu=False)
    types = {onnx.TensorProto.FLOAT: mc.TYPE_FP32, onnx.TensorProto.INT64: mc.TYPE_INT64}
    for name in ("boxmask_encoder", "boxmask_decoder", "boxmask_detector"):
        config = text_format.Parse((repo / name / "config.pbtxt").read_text(), mc.ModelConfig())
        assert (config.name, config.backend, config.max_batch_size) == (name, "onnxruntime", 0)
        assert [g.kind for g in config.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
        graph = onnx.load(str(repo / name / "1" / "model.onnx"), load_external_data=False).graph
        for declared, actual in ((config.input, graph.input), (config.output, graph.output)):
            assert [t.name for t in declared] == [v.name for v in actual]
            for t, v in zip(declared, actual, strict=True):
                tensor = v.type.tensor_type
                assert t.data_type == types[tensor.elem_type], t.name
                assert list(t.dims) == [d.dim_value if d.HasField("dim_value") else -1
                                        for d in tensor.shape.dim], t.name


def test_tensorrt_without_a_gpu_says_what_to_do(tiny_checkpoint, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the TensorRT build is tested by test_tensorrt_engines_build")
    from boxmask.export.exporter import export_checkpoint

    with pytest.raises(ExportError, match=r"GPU|tensorrt"):
        export_checkpoint(tiny_checkpoint, tmp_path / "trt", tensorrt=True)
    assert not (tmp_path / "trt").exists()


@pytest.mark.gpu
def test_tensorrt_engines_build(tiny_checkpoint, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU and the tensorrt package (boxmask[gpu])")
    pytest.importorskip("tensorrt")
    from boxmask.export.exporter import export_checkpoint

    card = export_checkpoint(tiny_checkpoint, tmp_path / "trt", tensorrt=True, check=False)
    assert (tmp_path / "trt" / "encoder.plan").is_file() and "decoder_trt" in card["files"]


def test_a_failed_export_leaves_no_directory_behind(tmp_path):
    from boxmask.config import ConfigError
    from boxmask.export.exporter import export_checkpoint

    bad = tmp_path / "bad.pt"
    torch.save({"not": "a checkpoint"}, bad)
    with pytest.raises(ConfigError):
        export_checkpoint(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_export_replaces_an_existing_directory_whole(exported_model_dir, tiny_checkpoint, tmp_path):
    from boxmask.export.exporter import export_checkpoint

    out = tmp_path / "m"
    shutil.copytree(exported_model_dir, out)
    (out / "stale.onnx").write_bytes(b"old")
    export_checkpoint(tiny_checkpoint, out, check=False)
    assert not (out / "stale.onnx").exists()



@pytest.fixture(scope="module")
def pixel_model(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> tuple[Path, Path]:
    """A tiny teacher-student model whose mask heads fuse a pixel map
    (model.mask_pixel_channels), trained two steps: its checkpoint and its export (the
    exporter's parity check included)."""
    from boxmask.export.exporter import export_checkpoint
    from boxmask.training.trainer import train
    from tests.conftest import tiny_train_config

    checkpoint = train(tiny_train_config(tiny_dataset, tmp_path_factory.mktemp("pixel_run"),
                                         "model.mask_pixel_channels=4"))
    out = tmp_path_factory.mktemp("pixel_export") / "pixels"
    export_checkpoint(checkpoint, out, name="pixels")
    return checkpoint, out


def test_a_pixel_map_model_exports_with_the_map_last_and_serves_the_eager_masks(pixel_model):
    """The encoder gives the pixel map after the levels, the decoders and the detector take it
    last, and the torch-free runtime's masks and detections are the eager model's."""
    import onnx

    from boxmask.runtime import Predictor
    from boxmask.runtime.contract import ENCODER_OUTPUTS, PIXEL_MAP

    checkpoint, model_dir = pixel_model
    card = json.loads((model_dir / "model.json").read_text())
    assert card["parity"]["passed"]
    graphs = {g: onnx.load(str(model_dir / f"{g}.onnx")).graph
              for g in ("encoder", "decoder", "labelled_decoder", "detector")}
    assert [o.name for o in graphs["encoder"].output] == [*ENCODER_OUTPUTS, PIXEL_MAP]
    for g in ("decoder", "labelled_decoder", "detector"):
        assert graphs[g].input[-1].name == PIXEL_MAP
    assert list(card["onnx"]["encoder"]["outputs"])[-1] == PIXEL_MAP
    assert list(card["onnx"]["decoder"]["inputs"])[-1] == PIXEL_MAP

    model, _, categories, _ = load_trained_model(checkpoint)
    assert model.roi_heads.mask_branch.pixel_stem is not None
    rng = np.random.default_rng(5)
    # Not square, and padded from 38 to 64 rows: torchvision's MultiScaleRoIAlign would infer
    # 1/2 for P2 from this first image and keep it; boxmask's pools have the strides fixed
    # (model.build.pyramid_roi_align), as the exported graphs do.
    h, w = 38, 64
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    boxes = np.array([[2, 3, 40, 30], [20, 10, 62, 37], [0, 0, 30, 38]], dtype=np.float32)
    predictor = Predictor.from_dir(model_dir)
    cat_ids = [c["id"] for c in categories]
    for labels in (None, [cat_ids[0], cat_ids[-1], cat_ids[0]]):
        pred = predictor.predict(boxes, labels=labels, key=predictor.set_image(image),
                                 class_scores=labels is None)
        cat_to_label = {c["id"]: c["label"] for c in categories}
        lab = (torch.tensor([cat_to_label[c] for c in labels]) if labels
               else torch.zeros(len(boxes), dtype=torch.int64))
        ref = _eager_masks_in_boxes(model, image, boxes, lab)
        ious = [mask_iou(a, b) for a, b in zip(pred.masks, ref, strict=True)]
        assert min(ious) >= 0.99, ious
    det = predictor.detect(image=image, score_threshold=0.0, max_detections=1000)
    with torch.no_grad():
        ref_det = model([torch.from_numpy(image).permute(2, 0, 1).float() / 255.0])[0]
    assert len(det.scores) == len(ref_det["scores"])


def test_a_model_with_the_mask_quality_head_exports_it_in_both_decoders(tiny_dataset, tmp_path):
    """``quality`` is the last output of the decoder and the labelled decoder, within the parity
    tolerance of torch, and the card says the model has it."""
    import json

    import onnxruntime as ort
    import torch

    from boxmask.export.exporter import export_checkpoint
    from boxmask.training.trainer import train
    from tests.conftest import tiny_train_config

    torch.set_num_threads(1)
    ckpt = train(tiny_train_config(tiny_dataset, tmp_path / "run", "model.mask_quality=true"))
    card = export_checkpoint(ckpt, tmp_path / "model")
    assert card["mask_quality"] is True
    for graph in ("decoder", "labelled_decoder"):
        assert card["parity"]["graphs"][graph]["max_abs"]["quality"] <= 1e-3
    for graph in ("decoder", "labelled_decoder"):
        session = ort.InferenceSession(str(tmp_path / "model" / f"{graph}.onnx"))
        assert session.get_outputs()[-1].name == "quality"
    assert json.loads((tmp_path / "model" / "model.json").read_text())["mask_quality"] is True


def test_the_served_crf_is_the_eager_models_in_the_runtime(exported_model_dir, eager,
                                                           tiny_checkpoint, tmp_path):
    """model.served_crf: the card says so, the runtime refines what the decoder gives with the
    same CRF the eager model applies (boxmask.runtime.crf), on every path, and a card's choice
    can be overridden by the options."""
    from boxmask.export.exporter import export_checkpoint
    from boxmask.runtime import Predictor
    from boxmask.runtime.card import ModelCard

    assert ModelCard.load(exported_model_dir).mask_refine == "none"
    model, _, categories = eager
    rng = np.random.default_rng(11)
    h, w = 60, 76
    # Two flat colours with an edge through the boxes: something for the CRF to follow.
    image = np.where((np.arange(w) < 40)[None, :, None], [200, 40, 40], [30, 60, 220])
    image = np.clip(image + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
    boxes = np.array([[4, 5, 50, 40], [20, 10, 70, 58], [0, 0, 76, 60]], dtype=np.float32)
    lab = torch.tensor([categories[0]["label"]] * 3)
    labels = [categories[0]["id"]] * 3
    plain = Predictor.from_dir(exported_model_dir)
    refined = Predictor.from_dir(exported_model_dir, mask_refine="crf")
    before = plain.predict(boxes, labels=labels, key=plain.set_image(image))
    after = refined.predict(boxes, labels=labels, key=refined.set_image(image))
    assert not np.array_equal(before.mask_probs, after.mask_probs)
    model.served_crf = True
    try:
        ref = _eager_masks_in_boxes(model, image, boxes, lab)
    finally:
        model.served_crf = False
    ious = [mask_iou(a, b) for a, b in zip(after.masks, ref, strict=True)]
    assert min(ious) >= 0.97, ious
    # The wide kernel (model.served_crf_kernel: wide; the card's crf_wide) likewise.
    wide = Predictor.from_dir(exported_model_dir, mask_refine="crf_wide")
    after_wide = wide.predict(boxes, labels=labels, key=wide.set_image(image))
    assert not np.array_equal(after_wide.mask_probs, after.mask_probs)
    model.served_crf, model.crf_kernel = True, "wide"
    try:
        ref = _eager_masks_in_boxes(model, image, boxes, lab)
    finally:
        model.served_crf, model.crf_kernel = False, "local"
    ious = [mask_iou(a, b) for a, b in zip(after_wide.masks, ref, strict=True)]
    assert min(ious) >= 0.97, ious

    # Exported from a config that asks for it: the card says crf_wide, and the runtime follows
    # it (`--crf` alone, the local kernel's "crf": tests/test_cli.py).
    out = tmp_path / "crf"
    export_checkpoint(tiny_checkpoint, out, name="crf", served_crf=True, crf_kernel="wide")
    assert ModelCard.load(out).mask_refine == "crf_wide"
    served = Predictor.from_dir(out)
    pred = served.predict(boxes, labels=labels, key=served.set_image(image))
    np.testing.assert_allclose(pred.mask_probs, after_wide.mask_probs, atol=1e-5)
    off = Predictor.from_dir(out, mask_refine="none")
    np.testing.assert_allclose(off.predict(boxes, labels=labels, key=off.set_image(image)).mask_probs,
                               before.mask_probs, atol=1e-5)
