"""A small fine-tuning scenario on the synthetic data, shared by the test and its docs.

A tiny model is pretrained (oracle: class-specific head, every mask) on the four *old*
categories of the synthetic dataset, whose other four categories are removed from its data.
The fine-tuning set has all eight: old ones with masks, new ones with boxes only. Methods are
compared on the new categories' validation instances, box-prompted (ground-truth box and label
in, mask out): mean mask IoU against the true masks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

OLD = ["disc", "square", "triangle", "cross"]
NEW = ["hexagon", "ring", "crescent", "star"]

TINY_MODEL = {
    "backbone": "resnet18_fpn", "backbone_norm": "gn", "trainable_backbone_layers": 5,
    "fpn_channels": 16, "mask_head_channels": 16, "representation_size": 64,
    "min_size": 64, "max_size": 64, "anchor_sizes": [8, 16, 32, 64, 128],
    "rpn_pre_nms_top_n_train": 300, "rpn_post_nms_top_n_train": 150,
    "rpn_pre_nms_top_n_test": 150, "rpn_post_nms_top_n_test": 100,
    "rpn_batch_size_per_image": 64, "box_batch_size_per_image": 32,
    "box_detections_per_img": 30,
}

# The size at which the paper's claim is tested (tests/training/test_finetune.py's quality test,
# benchmarks/finetune_quality.py): the headline recipe's heads (GroupNorm, docs/results.md's
# recipe ablation) at reduced widths, 96-px clear scenes.
QUALITY_MODEL = {
    **TINY_MODEL, "backbone_norm": "auto", "fpn_channels": 32, "mask_head_channels": 64,
    "head_norm": "gn", "representation_size": 128, "min_size": 96, "max_size": 96,
    "rpn_pre_nms_top_n_train": 500, "rpn_post_nms_top_n_train": 250,
    "rpn_batch_size_per_image": 128, "box_batch_size_per_image": 64,
}


def write_datasets(root: Path, num_train: int, num_val: int, size: int, seed: int = 0,
                   scene: str = "clear") -> dict[str, Path]:
    """The synthetic dataset plus two derived annotation files:

    - ``pretrain.json``: the old categories only (the others' annotations and categories gone);
    - ``finetune.json``: every category; the new ones' annotations without ``segmentation``;
    - ``boxes.json``: every category, no annotation with a ``segmentation`` (a box-only set).
    """
    from boxmask.data.synthetic import generate

    data = root / "synth"
    # Generator version 1: the set the README's fine-tuning figures were measured on.
    generate(data, seed=seed, num_train=num_train, num_val=num_val, image_size=size, scene=scene,
             version=1)
    train = json.loads((data / "annotations" / "instances_train.json").read_text())
    old_ids = {c["id"] for c in train["categories"] if c["name"] in OLD}
    pre = {**train, "categories": [c for c in train["categories"] if c["id"] in old_ids],
           "annotations": [a for a in train["annotations"] if a["category_id"] in old_ids]}
    fine = {**train, "annotations": [
        a if a["category_id"] in old_ids else {k: v for k, v in a.items() if k != "segmentation"}
        for a in train["annotations"]]}
    boxes = {**train, "annotations": [{k: v for k, v in a.items() if k != "segmentation"}
                                      for a in train["annotations"]]}
    (root / "pretrain.json").write_text(json.dumps(pre))
    (root / "finetune.json").write_text(json.dumps(fine))
    (root / "boxes.json").write_text(json.dumps(boxes))
    return {"images": data / "images" / "train", "pretrain": root / "pretrain.json",
            "finetune": root / "finetune.json", "boxes": root / "boxes.json",
            "val": data / "annotations" / "instances_val.json", "val_images": data / "images" / "val"}


def train_run(paths: dict[str, Path], annotations: str, out: Path, model: dict[str, Any],
              epochs: int, seed: int = 0, lr: float = 1e-3, seen: Any = "all",
              optimizer: str = "adamw", base: dict[str, Any] = TINY_MODEL,
              lr_steps: list[int] | None = None, warmup_iters: int = 20, threads: int = 2,
              resume: bool = False) -> Path:
    """Train ``base`` (the tiny model) with ``model``'s overrides on ``paths[annotations]``;
    AdamW because from random init on these small sets it learns masks in far fewer steps than
    SGD (docs/results.md, recipe ablation). ``resume`` continues a cut-off run in ``out``."""
    from boxmask.config import load_config
    from boxmask.training.trainer import train

    cfg = load_config(None, base={
        "data": {"train_annotations": str(paths[annotations]), "train_images": str(paths["images"]),
                 "seen": seen, "horizontal_flip": 0.5},
        "model": {**base, **model},
        "train": {"epochs": epochs, "batch_size": 4, "lr": lr, "optimizer": optimizer,
                  "warmup_iters": warmup_iters, "lr_steps": lr_steps or [], "seed": seed,
                  "log_every": 50, "output_dir": str(out), "threads": threads,
                  "keep_checkpoints": 1},
    })
    return train(cfg, resume=Path("auto") if resume else None)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@torch.no_grad()
def box_prompted_miou(checkpoint: Path | None, paths: dict[str, Path],
                      names: list[str] = NEW) -> float:
    """Mean mask IoU of the ``names`` categories' validation instances from their true boxes
    and labels; ``checkpoint=None`` scores the box itself as the mask (the baseline)."""
    from PIL import Image
    from pycocotools.coco import COCO

    from boxmask.data.coco import decode_segmentation
    from boxmask.model.checkpoint import load_checkpoint, model_from_checkpoint

    coco = COCO(str(paths["val"]))
    wanted = {c["id"] for c in coco.loadCats(coco.getCatIds()) if c["name"] in names}
    model, label_of = None, {}
    if checkpoint is not None:
        model, cats = model_from_checkpoint(load_checkpoint(checkpoint))
        label_of = {c["name"]: int(c["label"]) for c in cats}
    ious = []
    for image_id in sorted(coco.getImgIds()):
        info = coco.imgs[image_id]
        anns = [a for a in coco.imgToAnns[image_id] if a["category_id"] in wanted]
        if not anns:
            continue
        h, w = info["height"], info["width"]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                               a["bbox"][1] + a["bbox"][3]] for a in anns], dtype=torch.float32)
        if model is None:
            pred = np.zeros((len(anns), h, w), dtype=bool)
            for k, (x1, y1, x2, y2) in enumerate(boxes.round().int().tolist()):
                pred[k, y1:y2, x1:x2] = True
        else:
            rgb = np.asarray(Image.open(paths["val_images"] / info["file_name"]).convert("RGB"))
            image = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0
            labels = torch.tensor([label_of[coco.cats[a["category_id"]]["name"]] for a in anns])
            pred = (model.segment_boxes([image], [boxes], [labels])[0][:, 0] >= 0.5).numpy()
        for a, p in zip(anns, pred, strict=True):
            ious.append(_iou(p, decode_segmentation(a["segmentation"], h, w).astype(bool)))
    return float(np.mean(ious))
