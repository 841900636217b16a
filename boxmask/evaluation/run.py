"""Evaluate a model: run it on the validation set, then score what it predicted.

- :func:`evaluate_checkpoint` is ``boxmask eval``: load a checkpoint (docs/contracts.md §3),
  rebuild its model, evaluate, write ``detections.json``, ``box_prompted.json``,
  ``report.json`` and the plots.
- :func:`evaluate_model` does the same for a model already in memory (the trainer, the
  benchmark).

Two passes per image, both in eval mode without gradients, one image at a time:

1. *Detection*: ``model([image])``; masks are probabilities pasted in the image, thresholded at
   0.5 (as Mask R-CNN) and encoded as COCO RLE; contiguous labels become COCO category ids
   through the checkpoint's ``categories``.
2. *Box-prompted*: ``model.segment_boxes`` with every non-crowd ground-truth box and its label,
   each mask scored by its mean probability over the pixels it keeps (the model's confidence in
   that mask; the mask AP of this setting ranks masks by it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from boxmask.config import BoxMaskConfig, ConfigError, load_config
from boxmask.data.coco import CocoInstances
from boxmask.evaluation.evaluator import evaluate_predictions
from boxmask.evaluation.plots import write_plots
from boxmask.evaluation.report import write_json
from boxmask.model.checkpoint import checkpoint_categories, load_checkpoint, model_from_checkpoint
from boxmask.runtime.masks import encode_mask

MASK_THRESHOLD = 0.5
_console = Console(stderr=True)


def encode_masks(masks: np.ndarray) -> list[dict]:
    """``[K, H, W]`` bool -> K COCO RLEs with ``counts`` as str (JSON-able), by the runtime's
    one mask encoder."""
    return [encode_mask(mask, "rle") for mask in masks]


def detections_to_coco(output: dict[str, torch.Tensor], image_id: int,
                       label_to_cat_id: dict[int, int]) -> list[dict]:
    """One image's model output (``boxes [K,4]``, ``labels [K]``, ``scores [K]``,
    ``masks [K,1,H,W]``) -> COCO results with box and mask."""
    boxes = output["boxes"].detach().cpu().double().numpy().reshape(-1, 4)
    labels = output["labels"].detach().cpu().numpy()
    scores = output["scores"].detach().cpu().numpy()
    masks = output["masks"].detach()[:, 0] >= MASK_THRESHOLD
    rles = encode_masks(masks.cpu().numpy())
    results = []
    for box, label, score, rle in zip(boxes, labels, scores, rles, strict=True):
        x1, y1, x2, y2 = (float(v) for v in box)
        results.append({"image_id": int(image_id), "category_id": label_to_cat_id[int(label)],
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score),
                        "segmentation": rle})
    return results


def prompts_for_image(coco: COCO, image_id: int, cat_id_to_label: dict[int, int]
                      ) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Non-crowd ground-truth boxes of one image as prompts: ``(ann ids, boxes [N,4] xyxy
    clipped to the image, labels [N])``. Boxes with no area inside the image are skipped (the
    evaluation counts them as missed)."""
    info = coco.imgs[image_id]
    w, h = float(info["width"]), float(info["height"])
    ids, boxes, labels = [], [], []
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=False)):
        x, y, bw, bh = (float(v) for v in ann["bbox"])
        x1, y1 = min(max(x, 0.0), w), min(max(y, 0.0), h)
        x2, y2 = min(max(x + bw, 0.0), w), min(max(y + bh, 0.0), h)
        if x2 <= x1 or y2 <= y1:
            continue
        ids.append(int(ann["id"]))
        boxes.append([x1, y1, x2, y2])
        labels.append(cat_id_to_label[int(ann["category_id"])])
    return (ids, torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            torch.tensor(labels, dtype=torch.int64))


def box_prompted_to_coco(ann_ids: Sequence[int], probs: torch.Tensor) -> list[dict]:
    """``probs [N, 1, H, W]`` from ``segment_boxes`` -> ``[{"ann_id", "segmentation", "score"}]``."""
    probs = probs.detach().cpu()[:, 0].float()
    keep = probs >= MASK_THRESHOLD
    kept = keep.flatten(1).sum(1)
    # Mean probability over the kept pixels; an empty mask has no confidence at all.
    score = torch.where(kept > 0, (probs * keep).flatten(1).sum(1) / kept.clamp(min=1),
                        torch.zeros_like(kept, dtype=torch.float32))
    rles = encode_masks(keep.numpy())
    return [{"ann_id": int(a), "segmentation": r, "score": float(s)}
            for a, r, s in zip(ann_ids, rles, score.tolist(), strict=True)]


def _category_maps(categories: Sequence[dict], coco: COCO) -> tuple[dict[int, int], dict[int, int], set[int]]:
    """``(label -> category id, category id -> label, seen category ids)`` from a checkpoint's
    ``categories``, checked against the ground truth."""
    try:
        label_to_cat = {int(c["label"]): int(c["id"]) for c in categories}
        seen = {int(c["id"]) for c in categories if c["seen"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError("the checkpoint's categories must be [{id, name, seen, label}]") from exc
    gt_ids = set(coco.getCatIds())
    missing = sorted(gt_ids - set(label_to_cat.values()))
    if missing:
        raise ConfigError(f"the validation annotations have categories {missing} that the model "
                          f"was not trained on (it knows {sorted(label_to_cat.values())})")
    return label_to_cat, {c: lab for lab, c in label_to_cat.items()}, seen & gt_ids


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=_console, disable=not enabled, transient=True)


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, dataset: Any, categories: Sequence[dict],
                   cfg: BoxMaskConfig, *, max_images: int | None = None,
                   out_dir: str | Path | None = None, progress: bool = True) -> dict:
    """Run ``model`` on ``dataset`` and evaluate.

    Args:
        model: a :class:`boxmask.model.BoxMaskRCNN` (put in eval mode here; its mode is
            restored afterwards).
        dataset: a :class:`boxmask.data.coco.CocoInstances` of the validation set (its ``coco``
            is the ground truth, ``load_image`` gives images, ``ids`` the order).
        categories: the checkpoint's ``[{"id", "name", "seen", "label"}]``.
        cfg: the config; ``eval`` decides the overlap subsets, box-prompted and plots.
        max_images: evaluate on the first N images of ``dataset.ids`` only.
        out_dir: when given, write ``detections.json``, ``box_prompted.json``, ``report.json``
            and the plots there.
        progress: show a progress bar.

    Returns:
        The report (see :func:`boxmask.evaluation.evaluator.evaluate_predictions`).
    """
    coco: COCO = dataset.coco
    label_to_cat, cat_to_label, seen_ids = _category_maps(categories, coco)
    img_ids = list(dataset.ids)
    if max_images is not None:
        if max_images < 1:
            raise ConfigError(f"max_images must be at least 1, got {max_images}")
        img_ids = img_ids[:max_images]
    if not img_ids:
        raise ConfigError("the validation set has no image to evaluate")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    detections: list[dict] = []
    prompted: list[dict] | None = [] if cfg.eval.box_prompted else None
    try:
        with _progress(progress) as bar:
            task = bar.add_task("evaluating", total=len(img_ids))
            for image_id in img_ids:
                image = dataset.load_image(image_id).to(device)
                output = model([image])[0]
                detections += detections_to_coco(output, image_id, label_to_cat)
                if prompted is not None:
                    ann_ids, boxes, labels = prompts_for_image(coco, image_id, cat_to_label)
                    if ann_ids:
                        probs = model.segment_boxes([image], [boxes.to(device)],
                                                    [labels.to(device)])[0]
                        prompted += box_prompted_to_coco(ann_ids, probs)
                bar.advance(task)
    finally:
        model.train(was_training)

    report = evaluate_predictions(
        coco, detections, seen_ids, img_ids=img_ids,
        overlap_threshold=cfg.eval.overlap_threshold, overlap_bins=cfg.eval.overlap_bins,
        box_prompted=prompted)
    report["categories"]["names"] = {str(c["id"]): c["name"] for c in categories}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        report["out_dir"] = str(out)
        write_json(detections, out / "detections.json")
        if prompted is not None:
            write_json(prompted, out / "box_prompted.json")
        if cfg.eval.plots:
            report["plots"] = [str(p) for p in write_plots(report, out)]
        write_json(report, out / "report.json")
    return report


def evaluate_checkpoint(checkpoint: str | Path, out_dir: str | Path | None = None,
                        config_path: str | Path | None = None, overrides: Sequence[str] = (),
                        max_images: int | None = None, progress: bool = True) -> dict:
    """``boxmask eval``: evaluate a training checkpoint on its config's validation set.

    Args:
        checkpoint: a ``checkpoint_*.pt`` written by ``boxmask train``.
        out_dir: report folder (default ``<checkpoint folder>/eval_<checkpoint name>``).
        config_path: a YAML config to use instead of the one stored in the checkpoint (its
            ``model`` section must match the weights).
        overrides: dotted overrides (``eval.box_prompted=false``, ``data.val_images=...``).
        max_images: evaluate on the first N validation images.

    Raises:
        ConfigError: unreadable checkpoint, missing validation data, weights that do not fit.
    """
    checkpoint = Path(checkpoint)
    ckpt = load_checkpoint(checkpoint)
    categories = checkpoint_categories(ckpt, checkpoint)
    base = None if config_path is not None else ckpt["config"]
    cfg = load_config(config_path, list(overrides), base=base)
    d = cfg.data
    for key, p in (("data.val_annotations", d.val_annotations), ("data.val_images", d.val_images)):
        if p is None:
            raise ConfigError(f"{key} is not set: evaluation needs a validation set")
        if not Path(p).exists():
            raise ConfigError(f"{key}: {str(p)!r} does not exist")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)

    seen_ids = {int(c["id"]) for c in categories if c["seen"]}
    try:
        # A box-only fine-tune's checkpoint has no seen category; evaluation needs none.
        dataset = CocoInstances(d.val_images, d.val_annotations, seen_ids, drop_empty=False,
                                allow_no_masks=True)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc
    model, _ = model_from_checkpoint(ckpt, cfg.model, source=checkpoint)
    model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))

    out = Path(out_dir) if out_dir is not None else checkpoint.parent / f"eval_{checkpoint.stem}"
    report = evaluate_model(model, dataset, categories, cfg, max_images=max_images,
                            out_dir=out, progress=progress)
    report["checkpoint"] = str(checkpoint)
    report["epoch"] = int(ckpt.get("epoch", 0))
    write_json(report, out / "report.json")
    return report
