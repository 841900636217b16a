"""Encoder and decoder latency: torch eager vs ONNX Runtime fp32 vs ONNX Runtime int8.

For each backbone (ResNet-50-FPN at the paper's widths, ResNet-18-FPN, MobileNetV3-FPN) a model
with random weights (timing does not depend on weight values) is exported by the real exporter,
then, in one process and on the same inputs:
- encoder at 800x1216 (eager backbone+FPN vs encoder.onnx vs encoder.int8.onnx);
- decoder at 1, 10 and 100 boxes (eager ``decode_boxes`` vs decoder.onnx vs decoder.int8.onnx);
- detector over the encoder's features (eager ``detect_features`` vs detector.onnx): the cost
  of pre-annotating an image already encoded.
Ratios are against eager torch measured in the same run. ``--accuracy MODEL_DIR`` adds the
int8 encoder's accuracy cost on a trained model: box-prompted mask AP and mean IoU on a COCO
validation set, fp32 vs int8, through the torch-free runtime. ``--quality-cost`` is what the
mask-quality head (``model.mask_quality``) adds to the decoders: the same random model (ResNet-50-FPN
by default) without the head, with it at its default widths and at the mask head's width, the
label-given and full decoders (fp32 and int8) at 1 and 10 boxes, ratios against no head.

    .venv/bin/python benchmarks/runtime.py [--threads 2] [--repeats 3] [--backbones ...]
    .venv/bin/python benchmarks/runtime.py --quality-cost [--threads 1] [--repeats 5]
    .venv/bin/python benchmarks/runtime.py --checkpoint models/coco_r50.pt   # a real checkpoint
    .venv/bin/python benchmarks/runtime.py --accuracy boxmask/assets/models/synthetic-demo \\
        --coco data/synth128/annotations/instances_val.json --images data/synth128/images/val
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import markdown_table, median_seconds

BACKBONES = {
    # name: (backbone, fpn channels, mask head channels, representation size)
    "resnet50_fpn": ("resnet50_fpn", 256, 256, 1024),
    "resnet18_fpn": ("resnet18_fpn", 256, 256, 1024),
    "mobilenet_v3_fpn": ("mobilenet_v3_fpn", 256, 256, 1024),
}
H, W = 800, 1216
NUM_CLASSES = 80


def _calibration_images(root: Path, size: tuple[int, int] = (H, W)) -> Path:
    """Four noise images of ``size`` (h, w): int8 calibration inputs (timing does not depend
    on them)."""
    from PIL import Image

    images = root / "images"
    images.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(images / f"{i}.png")
    return images


def random_checkpoint(name: str, root: Path, spec: tuple[str, int, int, int] | None = None,
                      size: tuple[int, int] = (H, W), overrides: dict | None = None,
                      like: Path | None = None) -> Path:
    """A checkpoint file of a random-init model, in the format `boxmask train` writes.

    ``spec``: (backbone, fpn, mask head, representation size) instead of ``BACKBONES[name]``
    (then ``name`` only names the file); ``size``: the images' (h, w), the model's min side
    being h; ``overrides``: more of the config's ``model`` section; ``like``: a checkpoint whose
    weights this model takes wherever it has the same parameter (its own extra parts, e.g. the
    mask-quality head, keep their seeded initialisation)."""
    import torch

    from boxmask.config import BoxMaskConfig
    from boxmask.model import build_model

    backbone, fpn, mask, rep = spec or BACKBONES[name]
    images = _calibration_images(root, size)
    cfg = BoxMaskConfig.model_validate({
        "data": {"train_annotations": str(root / "none.json"), "train_images": str(images)},
        "model": {"backbone": backbone, "fpn_channels": fpn, "mask_head_channels": mask,
                  "representation_size": rep, "min_size": size[0],
                  "max_size": max(1333, size[1]), **(overrides or {})},
    })
    categories = [{"id": i + 1, "name": f"c{i + 1}", "label": i + 1, "seen": i < 20}
                  for i in range(NUM_CLASSES)]
    torch.manual_seed(0)
    model = build_model(cfg.model, NUM_CLASSES, set(range(1, 21)))
    if like is not None:
        shared = torch.load(like, map_location="cpu", weights_only=False)["model"]
        unexpected = model.load_state_dict(shared, strict=False).unexpected_keys
        if unexpected:
            raise ValueError(f"{like} has weights this model lacks: {unexpected[:3]}")
    path = root / f"{name}.pt"
    torch.save({"model": model.state_dict(), "config": cfg.model_dump(mode="json"),
                "categories": categories, "epoch": 0, "iteration": 0, "optimizer": {},
                "lr_scheduler": {}}, path)
    return path


def bench_backbone(name: str, threads: int, repeats: int, checkpoint: Path | None = None) -> list[dict]:
    """The table's rows for one model: a random one of ``BACKBONES[name]``, or ``checkpoint``
    (e.g. an imported torchvision Mask R-CNN; then ``name`` only labels the rows)."""
    import onnxruntime as ort
    import torch

    from boxmask.export.exporter import export_checkpoint, load_trained_model
    from boxmask.export.graphs import EncoderGraph
    from boxmask.export.inputs import random_boxes
    from boxmask.runtime.contract import (
        DECODER_INPUTS,
        DECODER_OUTPUTS,
        DETECTOR_INPUTS,
        DETECTOR_OUTPUTS,
        ENCODER_OUTPUTS,
    )

    torch.set_num_threads(threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpt = checkpoint or random_checkpoint(name, root)
        out = root / "model"
        export_checkpoint(ckpt, out, int8=True, calibration_images=4, check=False,
                          images=_calibration_images(root))
        torch.set_num_threads(threads)
        model, _, _, _ = load_trained_model(ckpt)
        opts = _ort_options(threads)
        cpu = ["CPUExecutionProvider"]
        enc32 = ort.InferenceSession(str(out / "encoder.onnx"), opts, providers=cpu)
        enc8 = ort.InferenceSession(str(out / "encoder.int8.onnx"), opts, providers=cpu)
        dec = ort.InferenceSession(str(out / "decoder.onnx"), opts, providers=cpu)
        dec8 = ort.InferenceSession(str(out / "decoder.int8.onnx"), opts, providers=cpu)
        x = torch.rand(1, 3, H, W) * 255
        eager_enc = EncoderGraph(model).eval()
        with torch.no_grad():
            t_eager = median_seconds(lambda: eager_enc(x), repeats)
        xn = x.numpy()
        t32 = median_seconds(lambda: enc32.run(ENCODER_OUTPUTS, {"image": xn}), repeats)
        t8 = median_seconds(lambda: enc8.run(ENCODER_OUTPUTS, {"image": xn}), repeats)
        rows.append({"backbone": name, "stage": f"encoder {H}x{W}", "eager_ms": t_eager * 1e3,
                     "ort_fp32_ms": t32 * 1e3, "ort_int8_ms": t8 * 1e3})
        with torch.no_grad():
            feats = eager_enc(x)
        np_feats = [f.numpy() for f in feats]
        gen = torch.Generator().manual_seed(0)
        from collections import OrderedDict

        fdict = OrderedDict(zip(("0", "1", "2", "3"), feats, strict=False))
        num_classes = model.num_classes
        for n in (1, 10, 100):
            boxes = random_boxes(n, H, W, gen)
            labels = torch.randint(1, num_classes + 1, (n,), generator=gen)
            with torch.no_grad():
                te = median_seconds(lambda: model.roi_heads.decode_boxes(fdict, boxes, labels, (H, W)),
                             repeats * 3)
            feed = dict(zip(DECODER_INPUTS, [*np_feats, boxes.numpy(), labels.numpy(),
                                             np.array([H, W], np.int64)], strict=True))
            to = median_seconds(lambda: dec.run(DECODER_OUTPUTS, feed), repeats * 3)
            t8 = median_seconds(lambda: dec8.run(DECODER_OUTPUTS, feed), repeats * 3)
            rows.append({"backbone": name, "stage": f"decoder {n} box{'es' if n > 1 else ''}",
                         "eager_ms": te * 1e3, "ort_fp32_ms": to * 1e3, "ort_int8_ms": t8 * 1e3,
                         "per_box_ms": to * 1e3 / n, "per_box_int8_ms": t8 * 1e3 / n})
        # Automatic pre-annotation over the cached features (RPN, box head, masks of the K
        # detections; random weights give K up to box_detections_per_img).
        det = ort.InferenceSession(str(out / "detector.onnx"), opts, providers=cpu)
        size = np.array([H, W], np.int64)
        with torch.no_grad():
            k = len(model.detect_features(fdict, (H, W))["scores"])
            te = median_seconds(lambda: model.detect_features(fdict, (H, W)), repeats)
        feed = dict(zip(DETECTOR_INPUTS, [*np_feats, size], strict=True))
        td = median_seconds(lambda: det.run(DETECTOR_OUTPUTS, feed), repeats)
        rows.append({"backbone": name, "stage": f"detector on features (K={k})", "eager_ms": te * 1e3,
                     "ort_fp32_ms": td * 1e3, "ort_int8_ms": None})
        rows += _predictor_rows(name, out, threads, repeats)
    return rows


def _predictor_rows(name: str, model_dir: Path, threads: int, repeats: int) -> list[dict]:
    """What a user waits for through the torch-free runtime (``Predictor``, the server's path):
    a new 640x480 photo with one box (decode + resize + encoder + decoder + paste), and one
    more box on the same image (decoder + paste). fp32 and int8 encoders; eager is not on
    this path, so those columns hold the fp32 figure for the ratio."""
    from boxmask.runtime import Predictor

    rng = np.random.default_rng(1)
    box = np.array([[100.0, 80.0, 420.0, 400.0]], np.float32)
    out = {}
    for precision in ("fp32", "int8"):
        p = Predictor.from_dir(model_dir, precision=precision, intra_op_threads=threads)
        label = p.card.categories[0].id
        images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(repeats + 1)]

        it = iter(images)

        def new_image() -> None:
            p.set_image(next(it))  # a new array each call: never a cache hit
            p.predict(box, labels=[label])

        out[precision] = (median_seconds(new_image, repeats), median_seconds(lambda: p.predict(box, labels=[label]), repeats * 3))
    return [{"backbone": name, "stage": "runtime: new 640x480 image + 1 box",
             "eager_ms": out["fp32"][0] * 1e3, "ort_fp32_ms": out["fp32"][0] * 1e3,
             "ort_int8_ms": out["int8"][0] * 1e3},
            {"backbone": name, "stage": "runtime: 1 more box, same image",
             "eager_ms": out["fp32"][1] * 1e3, "ort_fp32_ms": out["fp32"][1] * 1e3,
             "ort_int8_ms": out["int8"][1] * 1e3}]


#: The mask-quality head variants of ``--quality-cost``: name -> the config's ``model`` section
#: beyond the backbone's widths. The defaults (model.mask_quality_channels and
#: model.mask_quality_fc as boxmask/config.py sets them), and the mask head's width with 256-wide
#: fully connected layers (Mask Scoring R-CNN-like; theirs are 1024).
QUALITY_HEADS: dict[str, dict] = {
    "no head": {},
    "head, default widths": {"mask_quality": True},
    "head at the mask head's width": {"mask_quality": True, "mask_quality_channels": 0,
                                      "mask_quality_fc": 256},
}
MASK_HEAD_PREFIX = "roi_heads.mask_branch.student."


def _ort_options(threads: int):
    """The session options every timing here runs under."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return opts


def quality_cost(name: str, threads: int, repeats: int,
                 spec: tuple[str, int, int, int] | None = None, size: tuple[int, int] = (H, W),
                 boxes: tuple[int, ...] = (1, 10), calls: int = 3) -> dict:
    """What the mask-quality head adds to the decoders of one backbone (``BACKBONES[name]``,
    or ``spec`` as :func:`random_checkpoint` takes it, at ``size``).

    One random model per ``QUALITY_HEADS`` entry, all with the no-head model's weights (the
    same seed, and the head models load its state), each through the real exporter with its
    int8 graphs (calibrated on noise images of ``size``, as the main mode). In one process, on
    the fp32 encoder's features of one image and the same random boxes and labels (1..C): the
    labelled decoder and the full decoder, fp32 and int8, every output requested. Each of
    ``repeats`` rounds times every (graph, boxes) case for every variant, the variants' order
    rotated each round, as ``median_seconds(call, calls)`` (one warm-up call each), so that the
    machine's load falls on the variants alike. Returns ``{"variants": {name: {"channels",
    "fc", "params", "mask_head_params"}}, "rows": [{"graph", "boxes", "ms": {variant:
    median over the rounds}, "ratios": {variant: [that round's ratio against no head, ...]}}]}``.
    """
    import onnxruntime as ort
    import torch

    from boxmask.export.exporter import export_checkpoint
    from boxmask.export.inputs import random_boxes
    from boxmask.model.init_from import QUALITY_WEIGHTS
    from boxmask.runtime.contract import (
        BOXES,
        DECODER,
        ENCODER,
        ENCODER_INPUT,
        IMAGE_SIZE,
        LABELLED_DECODER,
        LABELS,
        graph_file,
    )

    torch.set_num_threads(threads)
    names = list(QUALITY_HEADS)
    h, w = size
    variants: dict[str, dict] = {}
    sessions: dict[str, dict[str, ort.InferenceSession]] = {}
    opts = _ort_options(threads)
    cpu = ["CPUExecutionProvider"]
    graphs = [(f"{g}{' int8' if v else ''}", graph_file(g, v))
              for g in (LABELLED_DECODER, DECODER) for v in (None, "int8")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = None
        for i, variant in enumerate(names):
            ckpt = random_checkpoint(f"{name}_q{i}", root, spec or BACKBONES[name], size,
                                     QUALITY_HEADS[variant], like=base)
            base = base or ckpt
            saved = torch.load(ckpt, map_location="cpu", weights_only=False)
            m = saved["config"]["model"]
            variants[variant] = {
                "channels": (m["mask_quality_channels"] or m["mask_head_channels"]
                             if m["mask_quality"] else None),
                "fc": m["mask_quality_fc"] if m["mask_quality"] else None,
                "params": sum(v.numel() for k, v in saved["model"].items()
                              if k.startswith(QUALITY_WEIGHTS)),
                "mask_head_params": sum(v.numel() for k, v in saved["model"].items()
                                        if k.startswith(MASK_HEAD_PREFIX))}
            out = root / f"model_q{i}"
            export_checkpoint(ckpt, out, int8=True, calibration_images=4, check=False,
                              images=_calibration_images(root, size))
            torch.set_num_threads(threads)  # the exporter takes every core
            sessions[variant] = {label: ort.InferenceSession(str(out / f), opts, providers=cpu)
                                 for label, f in graphs if (out / f).is_file()}
            if i == 0:
                enc = ort.InferenceSession(str(out / graph_file(ENCODER)), opts, providers=cpu)
                x = np.random.default_rng(0).uniform(0, 255, (1, 3, h, w)).astype(np.float32)
                feature_names = [o.name for o in enc.get_outputs()]
                features = dict(zip(feature_names, enc.run(feature_names, {ENCODER_INPUT: x}),
                                    strict=True))
                del enc
        gen = torch.Generator().manual_seed(0)
        feeds = {}
        for n in boxes:
            labels = torch.randint(1, NUM_CLASSES + 1, (n,), generator=gen).numpy()
            feeds[n] = {**features, BOXES: random_boxes(n, h, w, gen).numpy(), LABELS: labels,
                        IMAGE_SIZE: np.array([h, w], np.int64)}
        cases = [(label, n) for label, _ in graphs if label in sessions[names[0]] for n in boxes]
        times: dict[tuple[str, int], dict[str, list[float]]] = {
            c: {v: [] for v in names} for c in cases}
        # The review score's statistics (numpy, outside the graphs: boxmask.runtime.review) on
        # the same boxes, with masks of the decoder's size and the image's pixels.
        from boxmask.runtime.review import review_score, sample_box_colours

        pixels = np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)
        r_masks = {n: np.random.default_rng(n).uniform(0, 1, (n, 28, 28)).astype(np.float32)
                   for n in boxes}

        def review(n: int) -> None:
            colours = sample_box_colours(pixels, feeds[n][BOXES], 28)
            review_score(r_masks[n], colours, np.full((n,), 0.5, np.float32))

        review_times: dict[int, list[float]] = {n: [] for n in boxes}
        for r in range(repeats):
            for label, n in cases:
                for v in names[r % len(names):] + names[:r % len(names)]:
                    sess = sessions[v][label]
                    feed = {i.name: feeds[n][i.name] for i in sess.get_inputs()}
                    times[label, n][v].append(
                        median_seconds(lambda s=sess, f=feed: s.run(None, f), calls))
            for n in boxes:
                review_times[n].append(median_seconds(lambda n=n: review(n), calls))
        sessions.clear()
    rows = []
    for (label, n), t in times.items():
        rows.append({"graph": label, "boxes": n,
                     "ms": {v: float(np.median(t[v])) * 1e3 for v in names},
                     "ratios": {v: [a / b for a, b in zip(t[v], t[names[0]], strict=True)]
                                for v in names[1:]}})
    return {"variants": variants, "rows": rows,
            "review_ms": {n: float(np.median(t)) * 1e3 for n, t in review_times.items()}}


def review_cost_table(name: str, result: dict) -> str:
    """The review statistics' ms (``quality_cost``'s ``review_ms``) beside each decoder's ms
    without and with the default head: what a served mask's quality costs in all."""
    names = list(result["variants"])
    default = names[1]
    body = []
    for r in result["rows"]:
        stats = result["review_ms"][r["boxes"]]
        base, head = r["ms"][names[0]], r["ms"][default]
        total = head + stats
        body.append([name, r["graph"], r["boxes"], f"{base:,.2f}", f"{head:,.2f}",
                     f"{stats:,.3f}", f"{total:,.2f}",
                     f"{total / base:.2f}x ({100 * (total / base - 1):+.0f} %)"])
    return markdown_table(["backbone", "graph", "boxes", "no head ms", f"{default} ms",
                           "review statistics ms", "head + statistics ms",
                           "against no head"], body, "lllrrrrr")


def quality_cost_table(name: str, result: dict) -> str:
    """``quality_cost``'s result as a markdown table: ms without the head, then each head's
    ms, its ratio to no head (median over the rounds) and the growth, with the range of the
    rounds' own ratios."""
    names = list(result["variants"])
    head = ["backbone", "graph", "boxes", f"{names[0]} ms"]
    for v in names[1:]:
        d = result["variants"][v]
        head += [f"{v} ({d['channels']}/{d['fc']}) ms", "ratio (growth) [rounds' range]"]
    body = []
    for r in result["rows"]:
        base = r["ms"][names[0]]
        cells: list[object] = [name, r["graph"], r["boxes"], f"{base:,.1f}"]
        for v in names[1:]:
            ratio = r["ms"][v] / base
            lo, hi = min(r["ratios"][v]), max(r["ratios"][v])
            cells += [f"{r['ms'][v]:,.1f}",
                      f"{ratio:.2f}x ({100 * (ratio - 1):+.0f} %) [{lo:.2f}-{hi:.2f}]"]
        body.append(cells)
    return markdown_table(head, body, "lllr" + "rr" * (len(names) - 1))


def quality_params_table(name: str, result: dict) -> str:
    """Each variant's head parameters, beside the served mask head's."""
    body = [[name, v, "-" if d["channels"] is None else f"{d['channels']}/{d['fc']}",
             f"{d['params']:,}", f"{d['mask_head_params']:,}",
             f"{d['params'] / d['mask_head_params']:.2f}"]
            for v, d in result["variants"].items()]
    return markdown_table(["backbone", "variant", "conv/fc widths", "head parameters",
                           "mask head parameters", "head / mask head"], body, "lllrrr")


def _variants(model_dir: Path) -> list[tuple[str, str, bool]]:
    """(row name, precision, class_scores) of every decoder path the directory has: the full
    decoder, and the labelled decoder (no box head) where it was exported. Precision
    ``int8-encoder`` is the int8 encoder with the fp32 decoders: which graph costs accuracy."""
    from boxmask.runtime import ModelCard

    files = ModelCard.load(model_dir, verify=False).files
    out = [("fp32", "fp32", True), ("int8 encoder + int8 decoder", "int8", True),
           ("int8 encoder + fp32 decoder", "int8-encoder", True)]
    if "labelled_decoder" in files:
        out += [("fp32, labelled decoder", "fp32", False)]
        if "labelled_decoder_int8" in files:
            out += [("int8 encoder + int8 labelled decoder", "int8", False)]
    return out


def _predictor(model_dir: Path, precision: str, input_min_size: int | None = None):
    """The runtime's predictor; ``int8-encoder``: int8 encoder, fp32 decoders."""
    from boxmask.runtime import Predictor
    from boxmask.runtime.sessions.onnx_runtime import OnnxRuntimeSession

    if precision != "int8-encoder":
        return Predictor.from_dir(model_dir, precision=precision, input_min_size=input_min_size)
    p = Predictor.from_dir(model_dir, precision="fp32", input_min_size=input_min_size)
    p.encoder = OnnxRuntimeSession(p.card.file_path(model_dir, "encoder_int8"))
    return p


def _prompted(p, coco, img_ids, image_bytes, class_scores: bool) -> list[dict]:
    """One box-prompted prediction per ground-truth instance (its box and its label)."""
    from boxmask.runtime.masks import to_rle

    prompted = []
    for img_id in img_ids:
        anns = [a for a in coco.imgToAnns[img_id] if not a.get("iscrowd")]
        if not anns:
            continue
        key = p.set_image(image_bytes(img_id))
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                           a["bbox"][1] + a["bbox"][3]] for a in anns], np.float32)
        pred = p.predict(boxes, labels=[a["category_id"] for a in anns], key=key,
                         class_scores=class_scores)
        for a, m, s in zip(anns, pred.masks, pred.scores, strict=True):
            # The labelled decoder gives no class score: its masks rank equally (score 1).
            prompted.append({"ann_id": a["id"], "segmentation": to_rle(m),
                             "score": 1.0 if np.isnan(s) else float(s)})
    return prompted


def accuracy(model_dir: Path, coco_json: Path, images: Path, max_images: int | None,
             input_min_size: int | None = None) -> dict:
    """Box-prompted mask AP / mean IoU on a COCO set: fp32 vs int8, full decoder vs labelled."""
    from pycocotools.coco import COCO

    from boxmask.evaluation.box_prompted import box_prompted_metrics
    from boxmask.evaluation.instance_overlap import gt_overlaps

    coco = COCO(str(coco_json))
    img_ids = sorted(coco.getImgIds())[:max_images]
    overlaps = gt_overlaps(coco, img_ids)
    out = {}
    for name, precision, class_scores in _variants(model_dir):
        p = _predictor(model_dir, precision, input_min_size)
        seen = {c.id for c in p.card.categories if c.seen}
        prompted = _prompted(p, coco, img_ids,
                             lambda i: (images / coco.imgs[i]["file_name"]).read_bytes(),
                             class_scores)
        m = box_prompted_metrics(coco, prompted, seen, overlaps, [0.0, 0.3, 1.0001],
                                 img_ids=img_ids)
        out[name] = {"mask_ap": {k: v["AP"] for k, v in m["mask_ap"].items()},
                     "mean_iou": m["mean_iou"]}
        box = m["box_baseline"]
        baseline = {"mask_ap": {k: v["AP"] for k, v in box["mask_ap"].items()},
                    "mean_iou": box["mean_iou"]}
    return out | {"box as mask": baseline}


def parity_accuracy(checkpoint: Path, model_dir: Path | None = None, boxes_per_photo: int = 40,
                    seed: int = 0) -> dict:
    """int8 against fp32 for a model without a labelled data set (e.g. an imported torchvision
    Mask R-CNN): the ground truth is eager torch's own masks (fp32, the model as trained) for
    random boxes and labels on scikit-image's photos, and each exported variant is scored
    against it as box-prompted mask AP and mean IoU (fp32 ONNX should score ~100). The
    checkpoint is exported with int8 graphs calibrated on the same photos, unless
    ``model_dir`` gives its export already."""
    import io

    import torch
    from PIL import Image
    from pycocotools.coco import COCO
    from skimage import data

    from boxmask.evaluation.box_prompted import box_prompted_metrics
    from boxmask.export.exporter import export_checkpoint, load_trained_model
    from boxmask.runtime.masks import to_rle

    photos = {n: np.ascontiguousarray(getattr(data, n)()[..., :3])
              for n in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")}
    model, _, categories, _ = load_trained_model(checkpoint)
    label_of = {c["id"]: c["label"] for c in categories}
    rng = np.random.default_rng(seed)
    gt = {"images": [], "annotations": [], "categories": [{"id": c["id"], "name": c["name"]}
                                                          for c in categories]}
    encoded = {}
    for i, (name, image) in enumerate(photos.items(), start=1):
        h, w = image.shape[:2]
        wh = rng.uniform(0.1, 0.5, (boxes_per_photo, 2)) * [w, h]
        xy = rng.uniform(0, 1, (boxes_per_photo, 2)) * ([w, h] - wh)
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        ids = rng.choice([c["id"] for c in categories], boxes_per_photo)
        with torch.no_grad():
            probs = model.segment_boxes(
                [torch.from_numpy(image).permute(2, 0, 1).float() / 255.0],
                [torch.from_numpy(boxes)], [torch.tensor([label_of[int(c)] for c in ids])])[0]
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        encoded[i] = buf.getvalue()
        gt["images"].append({"id": i, "file_name": f"{name}.png", "height": h, "width": w})
        for box, cat, prob in zip(boxes, ids, probs[:, 0].numpy(), strict=True):
            rle = to_rle(prob >= 0.5)
            x1, y1, x2, y2 = (float(v) for v in box)
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i,
                                      "category_id": int(cat), "bbox": [x1, y1, x2 - x1, y2 - y1],
                                      "area": float((prob >= 0.5).sum()), "iscrowd": 0,
                                      "segmentation": rle})
    coco = COCO()
    coco.dataset = gt
    coco.createIndex()
    out: dict = {}
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        calib = Path(tmp) / "calibration"
        calib.mkdir()
        for i, b in encoded.items():
            (calib / f"{i}.png").write_bytes(b)
        if model_dir is None:
            model_dir = Path(tmp) / "model"
            export_checkpoint(checkpoint, model_dir, int8=True,
                              calibration_images=len(encoded), check=False, images=calib)
        seen = {c["id"] for c in categories}
        for name, precision, class_scores in _variants(model_dir):
            p = _predictor(model_dir, precision)
            prompted = _prompted(p, coco, sorted(encoded), encoded.__getitem__, class_scores)
            m = box_prompted_metrics(coco, prompted, seen, {a["id"]: 0.0 for a in
                                                            gt["annotations"]},
                                     [0.0, 1.0001], img_ids=sorted(encoded), box_baseline=False)
            out[name] = {"mask_ap": {k: v["AP"] for k, v in m["mask_ap"].items()},
                         "mean_iou": m["mean_iou"]}
    return out


def profile_decoder(model_dir: Path, graph: str, boxes: int, threads: int,
                    runs: int = 30) -> list[tuple[str, float, float]]:
    """Where one decoder call's time goes: ONNX Runtime's own profile of ``graph`` (a card
    file key: ``labelled_decoder_int8``, ``decoder``, ...) on ``boxes`` boxes over the
    encoder's features of a 800x1216 input, as (operator type, ms per call, share)."""
    import json as _json
    from collections import defaultdict

    import onnxruntime as ort

    from boxmask.runtime import ModelCard
    from boxmask.runtime.contract import DECODER_INPUTS, ENCODER_OUTPUTS

    card = ModelCard.load(model_dir, verify=False)
    opts = _ort_options(threads)
    cpu = ["CPUExecutionProvider"]
    enc = ort.InferenceSession(str(model_dir / card.files["encoder"].path), opts, providers=cpu)
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, H, W)).astype(np.float32)
    feats = enc.run(list(ENCODER_OUTPUTS), {"image": x})
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 0.5, (boxes, 2)) * [W, H]
    b = np.concatenate([xy, xy + rng.uniform(0.1, 0.4, (boxes, 2)) * [W, H]], 1).astype(np.float32)
    feed = dict(zip(DECODER_INPUTS, [*feats, b, np.ones(boxes, np.int64),
                                     np.array([H, W], np.int64)], strict=True))
    opts.enable_profiling = True
    opts.profile_file_prefix = str(Path(tempfile.gettempdir()) / "boxmask_decoder_profile")
    sess = ort.InferenceSession(str(model_dir / card.files[graph].path), opts, providers=cpu)
    feed = {i.name: feed[i.name] for i in sess.get_inputs()}
    for _ in range(3):
        sess.run(None, feed)
    t0 = time.perf_counter()
    for _ in range(runs):
        sess.run(None, feed)
    wall = (time.perf_counter() - t0) / runs * 1e3
    profile = Path(sess.end_profiling())
    events = _json.loads(profile.read_text())
    profile.unlink()
    by_op: dict[str, float] = defaultdict(float)
    calls = 0
    for e in events:
        if e.get("cat") == "Session" and e.get("name") == "model_run":
            calls += 1
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            by_op[e["args"].get("op_name", "?")] += e["dur"] / 1e3
    calls = max(calls, 1)
    rows = sorted(((op, ms / calls) for op, ms in by_op.items()), key=lambda r: -r[1])
    total = sum(ms for _, ms in rows) or 1.0
    return [("wall clock per call", wall, 1.0)] + [(op, ms, ms / total) for op, ms in rows]


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backbones", nargs="*",
                    help=f"default: all of {', '.join(BACKBONES)}; resnet50_fpn with --quality-cost")
    ap.add_argument("--quality-cost", action="store_true",
                    help="what the mask-quality head adds to the decoders (no head, default "
                         "widths, the mask head's width)")
    ap.add_argument("--checkpoint", type=Path, nargs="*", default=[],
                    help="time these checkpoints (e.g. `boxmask import torchvision` output) "
                         "instead of random --backbones")
    ap.add_argument("--accuracy", type=Path, help="a trained exported model directory")
    ap.add_argument("--parity-accuracy", type=Path, metavar="CHECKPOINT",
                    help="int8 vs fp32 against eager torch's masks (no data set needed)")
    ap.add_argument("--profile", type=Path, metavar="MODEL_DIR",
                    help="ONNX Runtime's per-operator profile of one decoder graph")
    ap.add_argument("--graph", default="labelled_decoder_int8",
                    help="with --profile: the card's file key of the graph to profile")
    ap.add_argument("--boxes", type=int, default=1, help="with --profile: boxes per call")
    ap.add_argument("--model-dir", type=Path,
                    help="with --parity-accuracy: the checkpoint's export (else exported anew)")
    ap.add_argument("--coco", type=Path)
    ap.add_argument("--images", type=Path)
    ap.add_argument("--max-images", type=int)
    ap.add_argument("--input-min-size", type=int,
                    help="with --accuracy: the encoder's shorter side (default: the card's)")
    args = ap.parse_args()
    backbones = args.backbones or (["resnet50_fpn"] if args.quality_cost else list(BACKBONES))
    if args.quality_cost:
        tables = []
        for name in backbones:
            res = quality_cost(name, args.threads, args.repeats)
            tables.append((quality_cost_table(name, res), quality_params_table(name, res),
                           review_cost_table(name, res)))
            print(f"done {name}", flush=True)
        print(f"\nthreads={args.threads}, {H}x{W}, random weights, every output requested; "
              f"median over {args.repeats} rounds of the median of 3 calls (variants "
              "interleaved, order rotated each round)\n")
        print("\n\n".join(t for t, _, _ in tables))
        print()
        print("\n\n".join(p for _, p, _ in tables))
        print("\nThe review score's statistics (numpy, boxmask.runtime.review) on the same boxes, "
              "beside each decoder with the default head:\n")
        print("\n\n".join(r for _, _, r in tables))
        return
    if args.profile:
        print(f"| {args.graph}, {args.boxes} box(es), {args.threads} threads | ms per call | share |")
        print("|---|---:|---:|")
        for op, ms, share in profile_decoder(args.profile, args.graph, args.boxes, args.threads):
            print(f"| {op} | {ms:.2f} | {100 * share:.0f} % |")
        return
    if args.accuracy or args.parity_accuracy:
        res = (accuracy(args.accuracy, args.coco, args.images, args.max_images,
                        args.input_min_size) if args.accuracy
               else parity_accuracy(args.parity_accuracy, args.model_dir))
        print("| precision | box-prompted mask AP unseen | seen | mean IoU unseen | seen |")
        print("|---|---|---|---|---|")

        def cell(v: float | None, scale: float, digits: int) -> str:
            return "-" if v is None or math.isnan(v) or v < 0 else f"{scale * v:.{digits}f}"

        for prec, r in res.items():
            ap_, iou = r["mask_ap"], r["mean_iou"]
            print(f"| {prec} | {cell(ap_.get('unseen'), 100, 1)} | {cell(ap_.get('seen'), 100, 1)} "
                  f"| {cell(iou.get('unseen'), 1, 3)} | {cell(iou.get('seen'), 1, 3)} |")
        return
    rows = []
    if args.checkpoint:
        for ckpt in args.checkpoint:
            rows += bench_backbone(ckpt.stem, args.threads, args.repeats, checkpoint=ckpt)
            print(f"done {ckpt}", flush=True)
    for name in [] if args.checkpoint else backbones:
        rows += bench_backbone(name, args.threads, args.repeats)
        print(f"done {name}", flush=True)
    print(f"\nthreads={args.threads}, median of {args.repeats} (encoder) / {3 * args.repeats} "
          "(decoder) runs, random weights\n")
    print("| backbone | stage | torch eager ms | ORT fp32 ms (x eager) | ORT int8 ms (x eager) "
          "| ms per box fp32 / int8 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        e = r["eager_ms"]
        f32 = f"{_fmt(r['ort_fp32_ms'])} ({r['ort_fp32_ms'] / e:.2f}x)"
        i8 = "-" if r["ort_int8_ms"] is None else f"{_fmt(r['ort_int8_ms'])} ({r['ort_int8_ms'] / e:.2f}x)"
        per_box = ("-" if r.get("per_box_ms") is None
                   else f"{_fmt(r['per_box_ms'])} / {_fmt(r['per_box_int8_ms'])}")
        print(f"| {r['backbone']} | {r['stage']} | {_fmt(e)} | {f32} | {i8} | {per_box} |")


if __name__ == "__main__":
    main()
