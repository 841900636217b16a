"""How good are the masks the student learns from? Pseudo-mask quality of trained checkpoints.

The teacher-student method only helps if the cleaned pseudo-masks sigma(M_t) of the unseen
instances are better targets than what the class-agnostic head would predict, and if the
student learns them. On a dataset whose unseen masks exist (the synthetic data has them all;
training never reads them) this script measures, with each ground-truth box as the RoI:

- ``teacher``: M_t >= 0.5, the class-agnostic head's own mask (the ``agnostic`` baseline is
  exactly this head);
- ``pseudo threshold`` / ``pseudo interact``: sigma(M_t) after the paper's cleaning (inside a
  seen mask or outside the box -> background), the student's training target for an unseen
  instance (interact: (M_t + M_s) / 2 >= 0.5);
- ``student``: the student's channel of the instance's label, >= 0.5;
- ``box``: the box itself as the mask (every cell of the RoI), the baseline every other column
  is read against: a pseudo-mask that does not beat the box teaches the student nothing the box
  would not;
- ``box_clean``: the box put through the same cleaning (the box minus the seen masks in it),
  i.e. the pseudo-mask of a teacher that calls every cell foreground: what the cleaning alone
  gives, and the baseline the pseudo-masks' columns are read against (unseen instances only).

Each is scored by IoU against the true mask on the 28x28 RoI grid, averaged over instances, for
unseen and seen categories, all instances and those with O >= 0.3 (another object covers at
least 30 % of the box). Heads a checkpoint does not have are left blank, and so are pseudo-masks
of seen instances (they learn from their real masks; the cleaning would erase them).

    python benchmarks/pseudo_mask_quality.py runs/experiment/*_s0_*/checkpoint_last.pt \
        --split train --images 100

Prints a markdown table; ``--json FILE`` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

GRID = 28
OVERLAPPED = 0.3
HEADS = ("box", "box_clean", "teacher", "pseudo_threshold", "pseudo_interact", "student")
# Targets the student learns for unseen instances only: blank for seen ones, which learn from
# their real masks (the cleaning would erase them).
UNSEEN_ONLY = ("box_clean", "pseudo_threshold", "pseudo_interact")


def _mean_or_none(vals: np.ndarray) -> float | None:
    """Mean of the non-NaN values; None when there are none (a head the checkpoint lacks)."""
    return None if len(vals) == 0 or np.isnan(vals).all() else float(np.nanmean(vals))


def _iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-row IoU of binary ``[P, M, M]`` grids; an empty union counts as 1."""
    inter = (pred & gt).flatten(1).sum(1).float()
    union = (pred | gt).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


@torch.no_grad()
def measure(checkpoint: Path, split: str, max_images: int | None) -> dict:
    from boxmask.data.coco import CocoInstances
    from boxmask.data.overlap import overlap_scores
    from boxmask.model.checkpoint import load_checkpoint, model_from_checkpoint
    from boxmask.model.mask_branch import STUDENT_RESOLUTION
    from boxmask.model.pseudo_masks import (
        apply_sigma,
        clean_pseudo_masks,
        project_masks_on_rois,
        resize_probs,
        seen_union_on_rois,
    )

    ckpt = load_checkpoint(checkpoint)
    model, categories = model_from_checkpoint(ckpt, source=checkpoint)
    cfg = ckpt["config"]["data"]
    images_dir, annotations = cfg[f"{split}_images"], cfg[f"{split}_annotations"]
    seen_labels = {int(c["label"]) for c in categories if c["seen"]}
    # Every category counts as seen for loading, so the unseen masks are decoded for scoring;
    # labels follow category ids either way.
    all_ids = [int(c["id"]) for c in categories]
    data = CocoInstances(images_dir, annotations, all_ids, drop_empty=True)
    branch = model.roi_heads.mask_branch
    rows: dict[str, list[np.ndarray]] = {"seen": [], "label": [], "overlap": [], "box": [],
                                         "box_clean": [], "teacher": [],
                                         "pseudo_threshold": [], "pseudo_interact": [],
                                         "student": []}
    n = len(data) if max_images is None else min(max_images, len(data))
    for i in range(n):
        image, target = data[i]
        if len(target["boxes"]) == 0:
            continue
        images, targets = model.transform([image], [target])
        features = model.with_pixels(model.backbone(images.tensors), images.tensors)
        t = targets[0]
        boxes, labels, masks = t["boxes"], t["labels"], t["masks"]
        idx = torch.arange(len(boxes))
        seen = torch.tensor([int(lbl) in seen_labels for lbl in labels])
        x = branch.roi_pool(features, [boxes], images.image_sizes)
        gt = project_masks_on_rois(masks, boxes, idx, GRID) >= 0.5
        rows["seen"].append(seen.numpy())
        rows["label"].append(labels.numpy())
        rows["overlap"].append(overlap_scores(boxes.numpy(), masks.numpy().astype(bool)))
        rows["box"].append(_iou(torch.ones_like(gt), gt).numpy())
        blank = np.full(len(boxes), np.nan)
        seen_on = seen_union_on_rois(masks, seen, boxes, GRID)
        box_clean = clean_pseudo_masks(torch.ones_like(gt, dtype=torch.float32), boxes, boxes,
                                       seen_on) >= 0.5
        rows["box_clean"].append(_iou(box_clean, gt).numpy())
        teacher_probs = student_probs = None
        if branch.teacher is not None:
            teacher_probs = resize_probs(branch.run_teacher(x, features, [boxes])[:, 0].sigmoid(),
                                         GRID)
            rows["teacher"].append(_iou(teacher_probs >= 0.5, gt).numpy())
        else:
            rows["teacher"].append(blank)
        if branch.student is not None:
            student_probs = branch.run_student(x, features, [boxes])[idx, labels - 1].sigmoid()
            assert student_probs.shape[-1] == STUDENT_RESOLUTION == GRID
            rows["student"].append(_iou(student_probs >= 0.5, gt).numpy())
        else:
            rows["student"].append(blank)
        if teacher_probs is not None:
            probs_s = student_probs if student_probs is not None else teacher_probs
            for kind in ("threshold", "interact"):
                pseudo = apply_sigma(kind, teacher_probs, probs_s, None)
                clean = clean_pseudo_masks(pseudo, boxes, boxes, seen_on) >= 0.5
                rows[f"pseudo_{kind}"].append(_iou(clean, gt).numpy())
            if student_probs is None:  # interact needs a student
                rows["pseudo_interact"][-1] = blank
        else:
            rows["pseudo_threshold"].append(blank)
            rows["pseudo_interact"].append(blank)
    cat = {k: np.concatenate(v) for k, v in rows.items()}
    out: dict = {"checkpoint": str(checkpoint), "mode": ckpt["config"]["model"]["mode"],
                 "sigma": ckpt["config"]["model"]["sigma"], "split": split, "images": n,
                 "instances": len(cat["seen"])}
    for group, sel in (("unseen", ~cat["seen"]), ("seen", cat["seen"])):
        for subset, mask in (("all", sel), ("overlapped", sel & (cat["overlap"] >= OVERLAPPED))):
            for head in HEADS:
                vals = cat[head][mask]
                if group == "seen" and head in UNSEEN_ONLY:
                    vals = vals[:0]
                out[f"{group}_{subset}_{head}"] = _mean_or_none(vals)
            out[f"{group}_{subset}_n"] = int(mask.sum())
    # Per category (all instances): which shapes the teacher, its pseudo-masks and the student
    # get right, beside the box.
    out["by_category"] = {}
    for c in categories:
        sel = cat["label"] == int(c["label"])
        row: dict = {"seen": bool(c["seen"]), "n": int(sel.sum())}
        for head in HEADS:
            vals = cat[head][sel]
            if c["seen"] and head in UNSEEN_ONLY:
                vals = vals[:0]
            row[head] = _mean_or_none(vals)
        out["by_category"][c["name"]] = row
    return out


def table(results: list[dict]) -> str:
    heads = HEADS
    lines = ["| run | group | " + " | ".join(heads) + " | n |",
             "|---|---|" + "---|" * (len(heads) + 1)]
    for r in results:
        name = Path(r["checkpoint"]).parent.name
        for group in ("unseen_all", "unseen_overlapped", "seen_all", "seen_overlapped"):
            cells = ["" if r[f"{group}_{h}"] is None else f"{100 * r[f'{group}_{h}']:.1f}"
                     for h in heads]
            lines.append(f"| {name} | {group.replace('_', ', ')} | " + " | ".join(cells)
                         + f" | {r[f'{group}_n']} |")
    return "\n".join(lines)


def category_table(results: list[dict]) -> str:
    """One row per run and category (all instances), the heads of :func:`table`."""
    lines = ["| run | category | split | " + " | ".join(HEADS) + " | n |",
             "|---|---|---|" + "---|" * (len(HEADS) + 1)]
    for r in results:
        name = Path(r["checkpoint"]).parent.name
        for cat_name, row in r["by_category"].items():
            cells = ["" if row[h] is None else f"{100 * row[h]:.1f}" for h in HEADS]
            lines.append(f"| {name} | {cat_name} | {'seen' if row['seen'] else 'unseen'} | "
                         + " | ".join(cells) + f" | {row['n']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--split", choices=("train", "val"), default="train",
                        help="train: the pseudo-masks the student actually learnt from")
    parser.add_argument("--images", type=int, default=None, help="first N images only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--by-category", action="store_true",
                        help="also print one row per category")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = [measure(c, args.split, args.images) for c in args.checkpoints]
    print(f"IoU x100 with the true mask, ground-truth boxes as RoIs, {GRID}x{GRID} grid, "
          f"{args.split} split")
    print(table(results))
    if args.by_category:
        print()
        print(category_table(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
