"""Would fitting the served masks to their box help? (A lever measured for issue 34, not kept.)

The fine-tune recipe fits each *pseudo-mask* to its box (``model.pseudo_mask_fit: box``,
boxmask/model/pseudo_masks.py ``fit_to_box``: the highest threshold whose mask reaches nearly
all of the box's rows and columns, since a tight box touches its object on all four sides).
This asks whether the same fit, applied to the student's *served* box-prompted masks (the
28x28 probabilities of the given label, the RoI being the box), raises their IoU: per
checkpoint, box-prompted mean IoU on the new (box-only) and the old categories, plain and
fitted at covers 0.95 and 0.90, with the new categories one by one.

    .venv/bin/python benchmarks/served_mask_fit.py \\
        runs/finetune_quality_v2/teacher_student_fit_clean_st_lwf_s2/checkpoint_last.pt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from finetune_quality import OLD
from harness import decode_prompts, markdown_table, prompted_images

ROOT = Path(__file__).resolve().parents[1]
# The fine-tune benchmark's validation set (benchmarks/finetune_quality.py builds it).
VAL = ROOT / "runs" / "finetune_quality_v2" / "data" / "user_s1_500"
COVERS = (0.95, 0.90)


def measure(checkpoint: Path, annotations: Path, images: Path,
            covers: tuple[float, ...] = COVERS) -> dict[str, dict[str, list[float]]]:
    """``{variant: {category name: [IoU of each validation instance]}}`` for the variants
    ``plain`` and ``fit<cover>``, box-prompted with every true box and its label."""
    import torch

    from boxmask.data.coco import CocoInstances
    from boxmask.model.checkpoint import load_checkpoint, model_from_checkpoint
    from boxmask.model.paste import paste_masks
    from boxmask.model.pseudo_masks import fit_to_box

    model, categories = model_from_checkpoint(load_checkpoint(checkpoint))
    model.eval()
    dataset = CocoInstances(images, annotations, set(), drop_empty=False, allow_no_masks=True)
    coco = dataset.coco
    names = {int(c["id"]): c["name"] for c in coco.dataset["categories"]}
    to_label = {int(c["id"]): int(c["label"]) for c in categories}
    ious: dict[str, dict[str, list[float]]] = {"plain": {}, **{f"fit{c:.2f}": {} for c in covers}}
    with torch.no_grad():
        for _, ann_ids, boxes, labels, image in prompted_images(dataset, to_label):
            h, w = image.shape[-2:]
            decoded = decode_prompts(model, image, boxes, labels)
            probs = decoded.logits.sigmoid()[:, 0]
            inside = torch.ones_like(probs, dtype=torch.bool)  # the RoI is the box
            variants = {"plain": probs, **{f"fit{c:.2f}": fit_to_box(probs, inside, c)
                                           for c in covers}}
            for variant, masks in variants.items():
                pasted = paste_masks(masks[:, None], boxes, (h, w),
                                     decoded.offset)[:, 0].numpy() >= 0.5
                for k, ann_id in enumerate(ann_ids):
                    ann = coco.anns[ann_id]
                    truth = coco.annToMask(ann).astype(bool)
                    union = (pasted[k] | truth).sum()
                    iou = 1.0 if union == 0 else float((pasted[k] & truth).sum() / union)
                    ious[variant].setdefault(names[int(ann["category_id"])], []).append(iou)
    return ious


def rows(run: str, ious: dict[str, dict[str, list[float]]], old: set[str],
         new_names: list[str]) -> list[list[Any]]:
    """One table row per variant: mean IoU on the new and the old categories, then each new
    category's."""
    out = []
    for variant, by_name in ious.items():
        def mean(keep: Any, by_name: dict[str, list[float]] = by_name) -> str:
            vals = [v for n, vs in by_name.items() if keep(n) for v in vs]
            return f"{np.mean(vals):.4f}" if vals else "-"

        out.append([run, variant, mean(lambda n: n not in old),
                    mean(lambda n: n in old),
                    *(mean(lambda n, name=name: n == name) for name in new_names)])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", type=Path)
    p.add_argument("--coco", type=Path, default=VAL / "annotations" / "instances_val.json")
    p.add_argument("--images", type=Path, default=VAL / "images" / "val")
    p.add_argument("--old", nargs="+", default=OLD, help="the categories the base model knew")
    args = p.parse_args(argv)
    old = set(args.old)
    new_names = sorted(c["name"] for c in json.loads(args.coco.read_text())["categories"]
                       if c["name"] not in old)
    body = []
    for ckpt in args.checkpoints:
        body += rows(ckpt.parent.name, measure(ckpt, args.coco, args.images), old, new_names)
    print(markdown_table(["run", "served masks", "new: mIoU", "old: mIoU", *new_names], body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
