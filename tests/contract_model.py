"""`contract_model_dir`: a tiny exported-model directory that follows docs/contracts.md §4.

NOT A TRAINED MODEL. Its graphs are small random-weight torch modules exported with exactly the
contract's input/output names, shapes, dtypes and dynamic axes, so that the runtime, the server
and the labeler can be developed and tested before (and independently of) the real exporter.
Its masks and scores are meaningless; tests may rely on shapes, determinism and the contract's
semantics (given labels are used, label 0 means "predicted class", N = 0 works), never on quality.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

CATEGORIES = [
    # Non-contiguous COCO ids on purpose: the runtime must map ids <-> contiguous labels.
    {"id": 1, "name": "disc", "label": 1, "seen": True},
    {"id": 3, "name": "square", "label": 2, "seen": True},
    {"id": 7, "name": "triangle", "label": 3, "seen": False},
]
FEATURES = 8
MASK_RESOLUTION = 28
PREPROCESS = {
    "min_size": 64,
    "max_size": 96,
    "size_divisible": 32,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "input": "RGB float32 0..255, normalised in the graph",
}
OPSET = 17


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _modules(num_classes: int):  # torch is imported lazily
    import torch
    from torch import nn
    from torchvision.ops import roi_align

    class Encoder(nn.Module):
        """image [1, 3, Hp, Wp] 0..255 -> p2..p5 at strides 4, 8, 16, 32."""

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.tensor(PREPROCESS["mean"]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(PREPROCESS["std"]).view(1, 3, 1, 1))
            self.stem = nn.Conv2d(3, FEATURES, 4, stride=4)
            self.down = nn.ModuleList(
                nn.Conv2d(FEATURES, FEATURES, 3, stride=2, padding=1) for _ in range(3)
            )

        def forward(self, image):
            x = torch.relu(self.stem((image / 255.0 - self.mean) / self.std))
            feats = [x]
            for conv in self.down:
                feats.append(torch.relu(conv(feats[-1])))
            return tuple(feats)

    class Decoder(nn.Module):
        """p2..p5, boxes [N, 4] (resized coords), labels [N], image_size [2] -> contract outputs."""

        def __init__(self) -> None:
            super().__init__()
            self.mask_head = nn.Sequential(
                nn.Conv2d(FEATURES, FEATURES, 3, padding=1),
                nn.ReLU(),
                nn.ConvTranspose2d(FEATURES, FEATURES, 2, stride=2),
                nn.ReLU(),
                nn.Conv2d(FEATURES, num_classes, 1),
            )
            self.box_head = nn.Linear(4 * FEATURES * 7 * 7, num_classes + 1)

        def forward(self, p2, p3, p4, p5, boxes, labels, image_size):
            h = image_size[0].to(boxes.dtype)
            w = image_size[1].to(boxes.dtype)
            x = torch.minimum(boxes[:, 0::2].clamp(min=0), w)
            y = torch.minimum(boxes[:, 1::2].clamp(min=0), h)
            rois = torch.stack(
                [torch.zeros_like(x[:, 0]), x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1
            )
            pooled = [
                roi_align(p, rois, (7, 7), spatial_scale=1.0 / s, sampling_ratio=2)
                for p, s in zip((p2, p3, p4, p5), (4, 8, 16, 32), strict=True)
            ]
            class_scores = torch.softmax(self.box_head(torch.cat(pooled, 1).flatten(1)), dim=-1)
            predicted = class_scores[:, 1:].argmax(dim=1) + 1
            labels_out = torch.where(labels > 0, labels, predicted)
            logits = self.mask_head(
                roi_align(p2, rois, (14, 14), spatial_scale=0.25, sampling_ratio=2)
            )
            index = (
                (labels_out - 1).view(-1, 1, 1, 1).expand(-1, 1, MASK_RESOLUTION, MASK_RESOLUTION)
            )
            return torch.gather(logits, 1, index), class_scores, labels_out

    class Detector(nn.Module):
        """p2..p5, image_size -> detections on a fixed grid of 5 boxes (whole image, quadrants)."""

        def __init__(self, decoder: Decoder) -> None:
            super().__init__()
            self.decoder = decoder

        def forward(self, p2, p3, p4, p5, image_size):
            h = image_size[0].to(torch.float32)
            w = image_size[1].to(torch.float32)
            z = torch.zeros_like(h)
            boxes = torch.stack(
                [
                    torch.stack([z, z, w, h]),
                    torch.stack([z, z, w / 2, h / 2]),
                    torch.stack([w / 2, z, w, h / 2]),
                    torch.stack([z, h / 2, w / 2, h]),
                    torch.stack([w / 2, h / 2, w, h]),
                ]
            )
            labels = torch.zeros(boxes.shape[0], dtype=torch.int64)
            logits, class_scores, labels_out = self.decoder(
                p2, p3, p4, p5, boxes, labels, image_size
            )
            scores = torch.gather(class_scores, 1, labels_out.view(-1, 1)).view(-1)
            return boxes, labels_out, scores, torch.sigmoid(logits)

    torch.manual_seed(0)
    encoder, decoder = Encoder().eval(), Decoder().eval()
    return encoder, decoder, Detector(decoder).eval()


def build_contract_model_dir(out: Path) -> Path:
    """Write the interim model directory into `out` and return it."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    encoder, decoder, detector = _modules(len(CATEGORIES))
    image = torch.rand(1, 3, 64, 96) * 255
    feats = encoder(image)
    boxes = torch.tensor([[4.0, 4.0, 40.0, 30.0], [10.0, 20.0, 60.0, 50.0]])
    labels = torch.tensor([1, 0])
    size = torch.tensor([64, 90])
    pyramid = ["p2", "p3", "p4", "p5"]
    spatial = {2: "height", 3: "width"}
    inputs = {
        "image": {"image": {2: "height", 3: "width"}},
        "features": {p: {2: f"{p}_height", 3: f"{p}_width"} for p in pyramid},
    }
    with torch.no_grad():
        torch.onnx.export(
            encoder,
            (image,),
            out / "encoder.onnx",
            input_names=["image"],
            output_names=pyramid,
            dynamic_axes={"image": spatial, **inputs["features"]},
            opset_version=OPSET,
            dynamo=False,
        )
        torch.onnx.export(
            decoder,
            (*feats, boxes, labels, size),
            out / "decoder.onnx",
            input_names=[*pyramid, "boxes", "labels", "image_size"],
            output_names=["mask_logits", "class_scores", "labels_out"],
            dynamic_axes={
                **inputs["features"],
                "boxes": {0: "N"},
                "labels": {0: "N"},
                "mask_logits": {0: "N"},
                "class_scores": {0: "N"},
                "labels_out": {0: "N"},
            },
            opset_version=OPSET,
            dynamo=False,
        )
        torch.onnx.export(
            detector,
            (*feats, size),
            out / "detector.onnx",
            input_names=[*pyramid, "image_size"],
            output_names=["boxes", "labels", "scores", "mask_probs"],
            dynamic_axes={
                **inputs["features"],
                "boxes": {0: "K"},
                "labels": {0: "K"},
                "scores": {0: "K"},
                "mask_probs": {0: "K"},
            },
            opset_version=OPSET,
            dynamo=False,
        )
    files = {
        name: {"path": f"{name}.onnx", "sha256": _sha256(out / f"{name}.onnx")}
        for name in ("encoder", "decoder", "detector")
    }
    card = {
        "format_version": 2,
        "name": "contract-test-model (random weights, NOT trained)",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(),
        "categories": CATEGORIES,
        "num_classes": len(CATEGORIES),
        "mask_resolution": MASK_RESOLUTION,
        "preprocess": PREPROCESS,
        "files": files,
        "onnx": {
            "opset": OPSET,
            "inputs": {
                "encoder": ["image"],
                "decoder": [*pyramid, "boxes", "labels", "image_size"],
                "detector": [*pyramid, "image_size"],
            },
            "outputs": {
                "encoder": pyramid,
                "decoder": ["mask_logits", "class_scores", "labels_out"],
                "detector": ["boxes", "labels", "scores", "mask_probs"],
            },
        },
        "provenance": {
            "config": {},
            "checkpoint_sha256": None,
            "epoch": 0,
            "note": "tests/contract_model.py: random weights",
        },
    }
    (out / "model.json").write_text(json.dumps(card, indent=2))
    return out
