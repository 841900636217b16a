"""boxmask beside the Segment Anything family, in one process, on the same photos.

What annotators choose between for box -> mask: SAM (ViT-B), MobileSAM, EfficientViT-SAM-L0 and
SAM 2.1 (Hiera-T), against boxmask's paper-width models (ResNet-50-FPN with torchvision's v1 and
v2 heads, ResNet-18-FPN) and the bundled demo model. Everything runs in ONNX Runtime on the
same number of threads, on the same real photos (scikit-image's sample data, at their own
sizes), with random weights (timing does not depend on weight values; no weights are
downloaded):

- peers are exported with their own project's export code where it has some: the prompt
  decoders with each package's ``SamOnnxModel`` (``utils/onnx.py``; SAM's own export script
  wraps the same class), the image encoders as ``torch.onnx.export`` of the package's
  ``image_encoder`` (what SAM's and EfficientViT-SAM's deployment scripts do). The ``sam2``
  package ships no ONNX export: its graphs here are the two halves of its own
  ``SAM2ImagePredictor`` (``set_image``: ``forward_image`` + ``_prepare_backbone_features``;
  ``_predict``: prompt encoder + mask decoder with the high-resolution features);
- boxmask's models are exported by ``boxmask export`` (int8 graphs included) and run through
  the torch-free ``Predictor``, as the server runs them.

Cases per model and photo: the encoder (preprocessing included: resize, normalise, pad), one
box, 10 boxes and 100 boxes on the encoded photo (each decoder's output made into thresholded
masks at the photo's size: the SAM decoders upsample in the graph, boxmask pastes in numpy),
and the peak resident memory of the process while that model was loaded and run. Peers take
their boxes as one batch of prompts (100 boxes: 10 batches of 10, their embeddings repeated
per prompt would not fit otherwise); boxmask takes all boxes in one decoder call.
Ratios are against the fastest peer of the same run.

    pip install 'boxmask[bench]'     # SAM2_BUILD_CUDA=0 where there is no CUDA
    python benchmarks/peers.py --threads 2 --repeats 3 [--cache runs/peers] [--only sam mobilesam]

A peer whose package is missing is skipped with the command that installs it. Exported graphs
are cached (``--cache``, default ``runs/peers``: the SAM ViT-B encoder alone is 360 MB); a run
that finds them all cached imports no torch, so the memory column is the models' own.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from harness import median_seconds
from runtime import random_checkpoint  # the sibling benchmark's random-weight model

REPO = Path(__file__).resolve().parents[1]
# skimage.data's photos that ship inside the package (no download): name -> loader name.
PHOTOS = ("astronaut", "coffee", "chelsea")
BOX_COUNTS = (1, 10, 100)
PEER_BATCH = 10  # prompts per SAM-family decoder call (see the module docstring)


# -- what a row is made of ---------------------------------------------------------------------

@dataclass
class Result:
    """One model's figures (milliseconds, median over repeats, mean over photos)."""

    name: str
    family: str  # "peer" or "boxmask"
    detail: str  # precision, input size: what was run
    encoder_ms: float
    boxes_ms: dict[int, float]  # box count -> ms (labels given, for boxmask)
    peak_rss_mb: float  # the process's peak while this model was loaded and run, minus its
    # resident memory just before (what the model itself needed)
    extra: dict[str, float] = field(default_factory=dict)  # e.g. "1 box, no label"

    @property
    def first_mask_ms(self) -> float:
        """A new photo and one box: what the annotator waits for after opening an image."""
        return self.encoder_ms + self.boxes_ms[1]


def _fmt(v: float | None) -> str:
    if v is None or np.isnan(v):
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def markdown_table(results: Sequence[Result]) -> str:
    """The side-by-side table, ratios against the fastest peer of the same run per column."""
    peers = [r for r in results if r.family == "peer"]

    def best(get: Callable[[Result], float]) -> float | None:
        values = [get(r) for r in peers]
        return min(values) if values else None

    columns: list[tuple[str, Callable[[Result], float]]] = [
        ("encoder ms", lambda r: r.encoder_ms),
        *[(f"{n} box{'es' if n > 1 else ''} ms", lambda r, n=n: r.boxes_ms[n])
          for n in BOX_COUNTS],
        ("first mask ms (encoder + 1 box)", lambda r: r.first_mask_ms),
    ]
    bests = [best(get) for _, get in columns]
    head = ["model", "run as", *[c for c, _ in columns], "peak RSS added MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    for r in results:
        cells = [r.name, r.detail]
        for (_, get), b in zip(columns, bests, strict=True):
            v = get(r)
            x = v / b if b and not np.isnan(v) else None
            ratio = "" if x is None else f" ({x:.2f}x)" if x >= 0.1 else f" ({x:.3f}x)"
            cells.append(_fmt(v) + ratio)
        cells.append(_fmt(r.peak_rss_mb))
        lines.append("| " + " | ".join(cells) + " |")
    extras = [(r.name, r.detail, k, v) for r in results for k, v in r.extra.items()]
    if extras:
        lines += ["", "| model | run as | case | ms |", "|---|---|---|---:|"]
        lines += [f"| {n} | {d} | {k} | {_fmt(v)} |" for n, d, k, v in extras]
    if peers:
        lines += ["", "(x): against the fastest peer of this run in that column ("
                  + ", ".join(f"{c}: {next(r.name for r in peers if get(r) == b)}"
                              for (c, get), b in zip(columns, bests, strict=True)) + ")."]
    return "\n".join(lines)


# -- measuring ---------------------------------------------------------------------------------

def _median_ms(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """The benchmarks' timer (median wall clock after ``warmup`` calls), in ms."""
    return median_seconds(fn, repeats, warmup) * 1e3


def _status_kb(field_name: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return float(line.split()[1])
    return float("nan")


def reset_peak_rss() -> float:
    """Start a new peak (VmHWM) for this process (Linux's clear_refs 5); returns the resident
    memory now, in MB, the baseline the next peak is measured from."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return _status_kb("VmRSS") / 1024.0


def peak_rss_mb(baseline: float = 0.0) -> float:
    """The peak resident memory since the last reset, minus ``baseline``, in MB; never below 0.

    The reset sets the peak to the resident memory of that moment and the baseline is read just
    after, so a model that adds nothing (a tiny one, pages freed in between) can read a fraction
    of a MB below its baseline: that is "adds nothing", not a negative size."""
    return max(0.0, _status_kb("VmHWM") / 1024.0 - baseline)


def photos() -> dict[str, np.ndarray]:
    """The benchmark's photos, RGB uint8 at their own sizes."""
    from skimage import data

    return {name: np.ascontiguousarray(getattr(data, name)()[..., :3]) for name in PHOTOS}


def boxes_for(image: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``[n, 4]`` xyxy boxes of 10-60 % of the photo's sides, inside it."""
    h, w = image.shape[:2]
    rng = np.random.default_rng(seed)
    wh = rng.uniform(0.1, 0.6, (n, 2)) * [w, h]
    xy = rng.uniform(0, 1, (n, 2)) * ([w, h] - wh)
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def _session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


# -- the SAM family ----------------------------------------------------------------------------

@dataclass(frozen=True)
class PeerSpec:
    name: str
    module: str  # import name that must be there
    install: str  # what to pip install
    export: Callable[[Path], dict[str, Any]]  # folder -> {"encoder", "decoder", **preprocess}


def _export(module: Any, args: tuple, path: Path, inputs: list[str], outputs: list[str],
            dynamic: dict | None = None) -> None:
    import warnings

    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=dynamic or {}, opset_version=17, do_constant_folding=True,
                          dynamo=False)


def _export_sam_like(model: Any, onnx_model_cls: Any, folder: Path, encoder_size: int,
                     frame: int) -> dict[str, Any]:
    """SAM, MobileSAM, EfficientViT-SAM: ``image_encoder`` + the package's ``SamOnnxModel``."""
    import torch

    model.eval()
    _export(model.image_encoder, (torch.randn(1, 3, encoder_size, encoder_size),),
            folder / "encoder.onnx", ["image"], ["image_embeddings"])
    decoder = onnx_model_cls(model, return_single_mask=True)
    embed = model.prompt_encoder.embed_dim
    grid = model.prompt_encoder.image_embedding_size
    mask_in = [4 * grid[0], 4 * grid[1]]
    args = (torch.randn(1, embed, *grid), torch.randint(0, frame, (1, 2, 2)).float(),
            torch.tensor([[2.0, 3.0]]), torch.zeros(1, 1, *mask_in), torch.zeros(1),
            torch.tensor([480.0, 640.0]))
    # SAM's export script fixes one prompt set per call; a batch axis lets 10 boxes share one.
    _export(decoder, args, folder / "decoder.onnx",
            ["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input",
             "orig_im_size"], ["masks", "iou_predictions", "low_res_masks"],
            {"point_coords": {0: "boxes", 1: "points"}, "point_labels": {0: "boxes", 1: "points"},
             "masks": {0: "boxes"}, "iou_predictions": {0: "boxes"}, "low_res_masks": {0: "boxes"}})
    return {"encoder_size": encoder_size, "frame": frame, "mask_input": mask_in,
            "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375], "kind": "sam"}


def _export_sam_vit_b(folder: Path) -> dict[str, Any]:
    from segment_anything import sam_model_registry
    from segment_anything.utils.onnx import SamOnnxModel

    return _export_sam_like(sam_model_registry["vit_b"](checkpoint=None), SamOnnxModel, folder,
                            1024, 1024)


def _export_mobilesam(folder: Path) -> dict[str, Any]:
    from mobile_sam import sam_model_registry
    from mobile_sam.utils.onnx import SamOnnxModel

    return _export_sam_like(sam_model_registry["vit_t"](checkpoint=None), SamOnnxModel, folder,
                            1024, 1024)


def _export_efficientvit_sam_l0(folder: Path) -> dict[str, Any]:
    from efficientsam.sam_model_zoo import create_efficientvit_sam_model
    from efficientsam.segment_anything.utils.onnx import SamOnnxModel

    model = create_efficientvit_sam_model("efficientvit-sam-l0", pretrained=False)
    # Prompts live in the 1024 frame (image_size[0]); the encoder sees 512 (image_size[1]).
    model.image_encoder.img_size = model.image_size[0]
    return _export_sam_like(model, SamOnnxModel, folder, model.image_size[1], model.image_size[0])


def _export_sam2_hiera_t(folder: Path) -> dict[str, Any]:
    import torch
    from sam2.build_sam import build_sam2
    from torch import nn
    from torch.nn import functional as F

    model = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", ckpt_path=None, device="cpu")
    sizes = [(256, 256), (128, 128), (64, 64)]  # SAM2ImagePredictor._bb_feat_sizes

    class Encoder(nn.Module):  # SAM2ImagePredictor.set_image after its transforms
        def __init__(self) -> None:
            super().__init__()
            self.model = model  # a submodule, so that the trace sees its weights as weights

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
            model = self.model
            out = model.forward_image(image)
            _, feats, _, _ = model._prepare_backbone_features(out)
            if model.directly_add_no_mem_embed:
                feats[-1] = feats[-1] + model.no_mem_embed
            maps = [f.permute(1, 2, 0).reshape(1, -1, *s)
                    for f, s in zip(feats[::-1], sizes[::-1], strict=True)][::-1]
            return maps[0], maps[1], maps[2]

    class Decoder(nn.Module):  # SAM2ImagePredictor._predict with box prompts, one mask each
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, image_embed: torch.Tensor, high_res_0: torch.Tensor,
                    high_res_1: torch.Tensor, point_coords: torch.Tensor,
                    point_labels: torch.Tensor, orig_im_size: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
            model = self.model
            sparse, dense = model.sam_prompt_encoder(points=(point_coords, point_labels),
                                                     boxes=None, masks=None)
            low, iou, _, _ = model.sam_mask_decoder(
                image_embeddings=image_embed, image_pe=model.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                multimask_output=False, repeat_image=True,
                high_res_features=[high_res_0, high_res_1])
            h, w = orig_im_size[0], orig_im_size[1]
            return F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False), iou

    model.eval()
    _export(Encoder(), (torch.randn(1, 3, 1024, 1024),), folder / "encoder.onnx", ["image"],
            ["high_res_0", "high_res_1", "image_embed"])
    args = (torch.randn(1, 256, 64, 64), torch.randn(1, 32, 256, 256), torch.randn(1, 64, 128, 128),
            torch.rand(1, 2, 2) * 1024, torch.tensor([[2, 3]], dtype=torch.int32),
            torch.tensor([480, 640], dtype=torch.int64))
    _export(Decoder(), args, folder / "decoder.onnx",
            ["image_embed", "high_res_0", "high_res_1", "point_coords", "point_labels",
             "orig_im_size"], ["masks", "iou_predictions"],
            {"point_coords": {0: "boxes"}, "point_labels": {0: "boxes"}, "masks": {0: "boxes"},
             "iou_predictions": {0: "boxes"}})
    return {"encoder_size": 1024, "frame": 1024, "mean": [123.675, 116.28, 103.53],
            "std": [58.395, 57.12, 57.375], "kind": "sam2"}


PEERS: dict[str, PeerSpec] = {
    "sam": PeerSpec("SAM ViT-B", "segment_anything", "segment-anything==1.0", _export_sam_vit_b),
    "mobilesam": PeerSpec("MobileSAM", "mobile_sam", "mobilesam-mirror==1.0.0 timm==1.0.31",
                          _export_mobilesam),
    "efficientvit-sam": PeerSpec("EfficientViT-SAM-L0", "efficientsam", "efficientsam==1.0.0",
                                 _export_efficientvit_sam_l0),
    "sam2": PeerSpec("SAM 2.1 Hiera-T", "sam2", "SAM2_BUILD_CUDA=0 pip install sam2==1.1.0",
                     _export_sam2_hiera_t),
}


def missing_module(module: str) -> bool:
    return importlib.util.find_spec(module) is None


class PeerModel:
    """A SAM-family model's two ONNX graphs plus its own preprocessing, in numpy."""

    def __init__(self, folder: Path, meta: dict[str, Any], threads: int) -> None:
        self.meta = meta
        self.encoder = _session(folder / "encoder.onnx", threads)
        self.decoder = _session(folder / "decoder.onnx", threads)

    def _resize(self, image: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
        from PIL import Image

        h, w = image.shape[:2]
        s = self.meta["encoder_size"]
        if self.meta["kind"] == "sam2":  # SAM2Transforms: a square resize
            nh, nw = s, s
        else:  # ResizeLongestSide, then pad bottom/right
            scale = s / max(h, w)
            nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
        resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR), np.float32)
        x = (resized - np.asarray(self.meta["mean"], np.float32)) / np.asarray(self.meta["std"],
                                                                                np.float32)
        padded = np.zeros((s, s, 3), np.float32)
        padded[:nh, :nw] = x
        frame = self.meta["frame"] / s  # prompts live in the decoder's frame
        return padded.transpose(2, 0, 1)[None].copy(), (nw / w * frame, nh / h * frame)

    def encode(self, image: np.ndarray) -> dict[str, Any]:
        x, scale = self._resize(image)
        out = self.encoder.run(None, {self.encoder.get_inputs()[0].name: x})
        names = [o.name for o in self.encoder.get_outputs()]
        return {"features": dict(zip(names, out, strict=True)), "scale": scale,
                "size": image.shape[:2]}

    def masks(self, encoded: dict[str, Any], boxes: np.ndarray) -> list[np.ndarray]:
        sx, sy = encoded["scale"]
        h, w = encoded["size"]
        out = []
        for i in range(0, len(boxes), PEER_BATCH):
            b = boxes[i:i + PEER_BATCH]
            coords = (b.reshape(-1, 2, 2) * np.array([sx, sy], np.float32)).astype(np.float32)
            if self.meta["kind"] == "sam2":
                feed = {**encoded["features"], "point_coords": coords,
                        "point_labels": np.tile(np.array([[2, 3]], np.int32), (len(b), 1)),
                        "orig_im_size": np.array([h, w], np.int64)}
            else:
                feed = {"image_embeddings": encoded["features"]["image_embeddings"],
                        "point_coords": coords,
                        "point_labels": np.tile(np.array([[2.0, 3.0]], np.float32), (len(b), 1)),
                        "mask_input": np.zeros((1, 1, *self.meta["mask_input"]), np.float32),
                        "has_mask_input": np.zeros(1, np.float32),
                        "orig_im_size": np.array([h, w], np.float32)}
            logits = self.decoder.run(["masks"], feed)[0]
            out += list(logits[:, 0] > 0.0)
        return out


def export_peer(key: str, cache: Path) -> tuple[Path, dict[str, Any]]:
    """The peer's ONNX folder in ``cache`` (exported on first use) and its preprocessing."""
    folder = cache / key
    meta_file = folder / "meta.json"
    if not meta_file.is_file():
        import torch

        folder.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        torch.manual_seed(0)
        meta = PEERS[key].export(folder)
        meta_file.write_text(json.dumps(meta))
    return folder, json.loads(meta_file.read_text())


def time_peer(key: str, cache: Path, images: dict[str, np.ndarray], threads: int,
              repeats: int) -> Result:
    folder, meta = export_peer(key, cache)
    gc.collect()
    baseline = reset_peak_rss()
    model = PeerModel(folder, meta, threads)
    enc, per_n = [], {n: [] for n in BOX_COUNTS}
    for i, image in enumerate(images.values()):
        enc.append(_median_ms(lambda: model.encode(image), repeats))
        encoded = model.encode(image)
        for n in BOX_COUNTS:
            boxes = boxes_for(image, n, seed=i)
            per_n[n].append(_median_ms(lambda: model.masks(encoded, boxes),
                                       repeats * (3 if n == 1 else 1)))
    s = meta["encoder_size"]
    return Result(PEERS[key].name, "peer", f"fp32, {s}x{s}", float(np.mean(enc)),
                  {n: float(np.mean(v)) for n, v in per_n.items()}, peak_rss_mb(baseline))


# -- boxmask -----------------------------------------------------------------------------------

def _calibration_folder(images: dict[str, np.ndarray], root: Path) -> Path:
    from PIL import Image

    folder = root / "calibration"
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in images.items():
        Image.fromarray(image).save(folder / f"{name}.png")
    return folder


def _torchvision_checkpoint(arch: str, root: Path) -> Path:
    """A random-init torchvision Mask R-CNN imported with `boxmask import torchvision`."""
    import torch
    from torchvision.models import detection

    from boxmask.model.torchvision_import import import_torchvision

    state = root / f"{arch}_random.pth"
    torch.manual_seed(0)
    torch.save(getattr(detection, arch)(weights=None, weights_backbone=None).state_dict(), state)
    out = root / f"{arch}.pt"
    import_torchvision(state, arch, out)
    return out


def _r18_checkpoint(root: Path) -> Path:
    """ResNet-18-FPN at the paper's widths, random init (benchmarks/runtime.py's model)."""
    return random_checkpoint("resnet18_fpn", root)


BOXMASK_MODELS: dict[str, tuple[str, Callable[[Path], Path] | None]] = {
    "r50-v1": ("boxmask R50-FPN (torchvision v1 heads)",
               lambda root: _torchvision_checkpoint("maskrcnn_resnet50_fpn", root)),
    "r50-v2": ("boxmask R50-FPN (torchvision v2 heads)",
               lambda root: _torchvision_checkpoint("maskrcnn_resnet50_fpn_v2", root)),
    "r18": ("boxmask R18-FPN", _r18_checkpoint),
    "demo": ("boxmask demo (MobileNetV3-FPN, 128 px)", None),
}


def boxmask_model_dir(key: str, cache: Path, images: dict[str, np.ndarray],
                      demo_dir: Path | None = None) -> Path:
    """The exported model directory for ``key`` (for ``demo``: ``demo_dir``, else the bundled
    one)."""
    from boxmask.runtime.contract import BUNDLED_MODELS_DIR

    if BOXMASK_MODELS[key][1] is None:
        return demo_dir or BUNDLED_MODELS_DIR / "synthetic-demo"
    out = cache / f"boxmask-{key}"
    if not (out / "model.json").is_file():
        from boxmask.export.exporter import export_checkpoint

        root = cache / f"boxmask-{key}-checkpoint"
        root.mkdir(parents=True, exist_ok=True)
        ckpt = BOXMASK_MODELS[key][1](root)
        export_checkpoint(ckpt, out, name=key, int8=True, calibration_images=len(images),
                          check=False, images=_calibration_folder(images, root))
    return out


def time_boxmask(key: str, model_dir: Path, images: dict[str, np.ndarray], threads: int,
                 repeats: int, precision: str, input_min_size: int | None = None) -> Result:
    from boxmask.runtime import Predictor

    gc.collect()
    baseline = reset_peak_rss()
    p = Predictor.from_dir(model_dir, precision=precision, intra_op_threads=threads,
                           cache_bytes=0, input_min_size=input_min_size)
    label = p.card.categories[0].id
    enc, per_n, unlabelled = [], {n: [] for n in BOX_COUNTS}, []

    def segment(boxes: np.ndarray, labels: list | None, key: str) -> None:
        pred = p.predict(boxes, labels=labels, key=key, class_scores=False)
        for _ in pred.iter_masks():
            pass

    for i, image in enumerate(images.values()):
        # A fresh copy per run: the key is the content hash, and cache_bytes=0 keeps nothing.
        enc.append(_median_ms(lambda: p.set_image(image), repeats))
        k = p.set_image(image)
        for n in BOX_COUNTS:
            boxes = boxes_for(image, n, seed=i)
            per_n[n].append(_median_ms(lambda: segment(boxes, [label] * n, k),
                                       repeats * (3 if n == 1 else 1)))
        unlabelled.append(_median_ms(lambda: segment(boxes_for(image, 1, i), None, k),
                                     repeats * 3))
    labelled = "labelled decoder" if p.labelled_decoder is not None else "full decoder"
    return Result(BOXMASK_MODELS[key][0], "boxmask",
                  f"{precision}, min side {p.input_min_size}, {labelled}", float(np.mean(enc)),
                  {n: float(np.mean(v)) for n, v in per_n.items()}, peak_rss_mb(baseline),
                  {"1 box, no label (full decoder)": float(np.mean(unlabelled))})


# -- main --------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=REPO / "runs" / "peers",
                    help="where exported graphs are kept between runs")
    ap.add_argument("--peers", nargs="*", default=list(PEERS), choices=list(PEERS))
    ap.add_argument("--models", nargs="*", default=list(BOXMASK_MODELS),
                    choices=list(BOXMASK_MODELS))
    ap.add_argument("--precisions", nargs="*", default=["int8", "fp32"],
                    choices=["int8", "fp32"])
    ap.add_argument("--interactive-min-size", type=int, default=512,
                    help="also time the R50 models' int8 graphs at this encoder input size "
                         "(shorter side; 0: not)")
    ap.add_argument("--demo-dir", type=Path,
                    help="the demo model's directory (default: the bundled one), e.g. its "
                         "checkpoint exported again with the current exporter")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    args.cache.mkdir(parents=True, exist_ok=True)
    images = photos()
    print("photos: " + ", ".join(f"{k} {v.shape[1]}x{v.shape[0]}" for k, v in images.items()),
          flush=True)
    results: list[Result] = []
    skipped: list[str] = []
    for key in args.peers:
        spec = PEERS[key]
        if missing_module(spec.module):
            skipped.append(f"{spec.name}: package `{spec.module}` is not installed "
                           f"(pip install {spec.install}, or pip install 'boxmask[bench]')")
            print("skip " + skipped[-1], flush=True)
            continue
        results.append(time_peer(key, args.cache, images, args.threads, args.repeats))
        print(f"done {spec.name}", flush=True)
    for key in args.models:
        model_dir = boxmask_model_dir(key, args.cache, images, args.demo_dir)
        for precision in args.precisions:
            results.append(time_boxmask(key, model_dir, images, args.threads, args.repeats,
                                        precision))
            print(f"done {BOXMASK_MODELS[key][0]} {precision}", flush=True)
        if key.startswith("r50") and args.interactive_min_size and "int8" in args.precisions:
            results.append(time_boxmask(key, model_dir, images, args.threads, args.repeats,
                                        "int8", args.interactive_min_size))
    print(f"\nONNX Runtime, {args.threads} threads, median of {args.repeats} runs (1 box: "
          f"{3 * args.repeats}) per photo, mean over {len(images)} photos, random weights\n")
    print(markdown_table(results))
    for line in skipped:
        print(f"\nskipped {line}")
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ | {"first_mask_ms": r.first_mask_ms}
                                         for r in results], indent=2))


if __name__ == "__main__":
    main()
