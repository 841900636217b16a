"""Per-mask figures of a checkpoint: where its box-prompted masks win or lose against the box.

The standard evaluation gives a mean IoU per category; the questions behind a category's mean
(is the deficit on the whole objects or the hidden ones? does the mask keep away from the box's
edges? would a guard that serves the box have helped? does the colour term rank this category?)
need every mask. Three commands:

``dump CKPT OUT.npz [--serve served_box_guard=expected_iou]``
    Every validation instance, box-prompted (true boxes and labels in, as the evaluation's
    box-prompted figures): the student's probabilities on its R x R grid, the teacher's (a
    teacher-student checkpoint; else the student's again), the image's colours on the grid
    and a ring around it (boxmask.runtime.review's sampling), the true IoU of the mask as
    served, with the pseudo-mask fit served (``served_mask_fit=box``), without the guard
    (``served_box_guard=none``), refined by the served CRF (boxmask.runtime.crf.refine_boxes,
    what ``model.served_crf`` serves), of the teacher's mask and of the box itself; the review
    score of the mask and of its refined mask (what the runtime serves as ``quality`` without
    and with the CRF), the head's IoU, the class probability, and whether the mask is its box
    (the guard's fallback, boxmask.runtime.predictor's test).
``report DUMP.npz [--category NAME ...]``
    Per category: count, mean IoU of box / mask / served fit / CRF / teacher, how many masks
    are the box and what they gained over the same weights without the guard, and the colour
    term's Spearman with the true IoU on the box alone
    and with the ring. For each ``--category``: its masks grouped by the box's own IoU with the
    object (hidden ones below 0.5, whole ones at 0.95 and above), and on the whole ones the
    mask's probabilities on the grid's outer two rings against its interior, side by side (a
    mask that keeps a frame of background inside a box its object fills).
``shift CKPT``
    Per category: the mean offset of the mask's centroid from the true one (pixels), and the
    mean IoU with the mask moved one pixel up, down, left, right: a misaligned paste would
    gain from one of them.

    .venv/bin/python benchmarks/per_mask.py dump runs/transfer/<run>/checkpoint_last.pt runs/ts0.npz
    .venv/bin/python benchmarks/per_mask.py report runs/ts0.npz --category slab
    .venv/bin/python benchmarks/per_mask.py shift runs/transfer/<run>/checkpoint_last.pt --max-images 100

Figures are the dump's, at full resolution; the dump is the checkpoint's own validation set
(its config's ``data.val_*``).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import Any

import numpy as np
from harness import decode_prompts, prompted_images, runtime_pixels

#: The box's own IoU with its object, grouped: below 0.5 the object is mostly hidden, at 0.95
#: and above it fills its box.
BOX_IOU_EDGES = (0.5, 0.7, 0.95)
#: Cells of the grid's edge counted as its frame (each side), and the interior's distance from
#: the edge.
FRAME, INTERIOR = 2, 4

SHIFTS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))  # (dy, dx): as is, up, down, left, right


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return None
    return float(spearmanr(a, b).statistic)


def _box_masks(coco, image_id: int) -> dict[int, np.ndarray]:
    """``{ann id: [H, W] bool}``: each instance's box as a mask, rasterised as the evaluation's
    box-as-mask baseline rasterises it (boxmask.evaluation.box_prompted.box_as_mask_prompts)."""
    from pycocotools import mask as mask_utils

    from boxmask.evaluation.box_prompted import box_as_mask_prompts

    return {p["ann_id"]: mask_utils.decode(p["segmentation"]).astype(bool)
            for p in box_as_mask_prompts(coco, [image_id])}


def _load(checkpoint: Path, serve: dict[str, str] | None = None):
    """``(raw, model, categories, dataset, seen_ids)`` of a checkpoint, in eval mode, served
    with the model settings ``serve`` (``served_*`` only: how the weights are served, e.g.
    ``served_box_guard=expected_iou``, the transfer benchmark's inference-only levers)."""
    from boxmask.config import BoxMaskConfig, ModelConfig
    from boxmask.data.coco import CocoInstances
    from boxmask.model.checkpoint import load_checkpoint, model_from_checkpoint

    raw = load_checkpoint(checkpoint)
    for key, value in (serve or {}).items():
        if not key.startswith("served_") or key not in ModelConfig.model_fields:
            raise SystemExit(f"--serve {key}: not a model.served_* setting")
        raw["config"]["model"][key] = value
    BoxMaskConfig.model_validate(raw["config"])  # a clear error for a bad value or version
    model, categories = model_from_checkpoint(raw)
    model.eval()
    d = raw["config"]["data"]
    seen_ids = {int(c["id"]) for c in categories if c["seen"] or c.get("taught_by") == "masks"}
    dataset = CocoInstances(d["val_images"], d["val_annotations"], seen_ids, drop_empty=False,
                            allow_no_masks=True)
    return raw, model, categories, dataset, seen_ids


def dump(checkpoint: Path, out: Path, max_images: int | None = None,
         serve: dict[str, str] | None = None) -> int:
    """Write the per-mask arrays of ``checkpoint`` (module doc), served with ``serve``
    (:func:`_load`), to ``out``; returns the count."""
    import torch

    from boxmask.config import BoxMaskConfig
    from boxmask.model.checkpoint import model_from_checkpoint
    from boxmask.model.paste import paste_masks
    from boxmask.runtime.crf import refine_boxes
    from boxmask.runtime.predictor import BOX_FALLBACK_PROB
    from boxmask.runtime.review import review_score, sample_box_colours

    raw, model, categories, dataset, seen_ids = _load(checkpoint, serve)
    stored = BoxMaskConfig.model_validate(raw["config"]).model
    # The same weights served otherwise: with the pseudo-mask fit, and without the guard.
    variants = {}
    for key, update in (("fit", {"served_mask_fit": "box"}), ("unguarded", {"served_box_guard": "none"})):
        if stored.mode == "teacher_student" and any(getattr(stored, k) != v for k, v in update.items()):
            variants[key], _ = model_from_checkpoint(raw, stored.model_copy(update=update))
            variants[key].eval()
    coco = dataset.coco
    to_label = {int(c["id"]): int(c["label"]) for c in categories}
    keys = ("probs", "teacher", "colours", "iou", "iou_fit", "iou_unguarded", "iou_crf",
            "iou_teacher", "box_iou", "seen", "cat", "review", "review_crf", "head", "class_prob",
            "fallback")
    rec: dict[str, list[Any]] = {k: [] for k in keys}

    with torch.no_grad():
        for image_id, ann_ids, boxes, labels, image in prompted_images(dataset, to_label,
                                                                      max_images):
            h, w = image.shape[-2:]
            features, resized, scaled, logits, class_scores, used, quality, offset = (
                decode_prompts(model, image, boxes, labels))
            grid = logits.sigmoid()
            pasted = paste_masks(grid, boxes, (h, w), offset)[:, 0].numpy()
            # The variants share the weights, so the image's features: only the mask branch's
            # serving differs.
            served = {}
            for key, variant in variants.items():
                other = variant.roi_heads.decode_boxes_with_quality(
                    features, scaled, labels, resized)[0].sigmoid()
                served[key] = paste_masks(other, boxes, (h, w), offset)[:, 0].numpy()
            pasted_fit = served.get("fit", pasted)
            pasted_unguarded = served.get("unguarded", pasted)
            branch = model.roi_heads.mask_branch
            if branch.teacher is not None and branch.student is not None:
                t = branch.run_teacher(branch.roi_pool(features, [scaled], [resized]), features,
                                       [scaled])
                t = torch.nn.functional.interpolate(t, size=grid.shape[-2:], mode="bilinear",
                                                    align_corners=False).sigmoid()
                teacher = t[:, 0].numpy()
                pasted_teacher = paste_masks(t, boxes, (h, w), offset)[:, 0].numpy()
            else:
                teacher, pasted_teacher = grid[:, 0].numpy(), pasted
            # The review score as the runtime computes it: its resize of the uint8 image.
            pixels = runtime_pixels(image, raw["config"]["model"])
            g = grid[:, 0].numpy()
            colours = sample_box_colours(pixels, scaled.numpy(), g.shape[-1])
            head = None if quality is None else quality.numpy()
            review = review_score(g, colours, head)
            box_masks = _box_masks(coco, image_id)
            # The served CRF (model.served_crf), as the runtime applies it, and the review
            # score it would then serve.
            refined = refine_boxes(pixels, scaled.numpy(), g)
            pasted_crf = paste_masks(torch.from_numpy(refined)[:, None], boxes, (h, w),
                                     offset)[:, 0].numpy()
            review_crf = review_score(refined, colours, head)
            for k, ann_id in enumerate(ann_ids):
                ann = coco.anns[ann_id]
                gt = coco.annToMask(ann).astype(bool)
                rec["probs"].append(g[k])
                rec["teacher"].append(teacher[k])
                rec["colours"].append(colours[k])
                rec["iou"].append(_iou(pasted[k] >= 0.5, gt))
                rec["iou_fit"].append(_iou(pasted_fit[k] >= 0.5, gt))
                rec["iou_unguarded"].append(_iou(pasted_unguarded[k] >= 0.5, gt))
                rec["iou_teacher"].append(_iou(pasted_teacher[k] >= 0.5, gt))
                rec["iou_crf"].append(_iou(pasted_crf[k] >= 0.5, gt))
                rec["review_crf"].append(float(review_crf[k]))
                rec["box_iou"].append(_iou(box_masks[ann_id], gt))
                rec["seen"].append(int(ann["category_id"]) in seen_ids)
                rec["cat"].append(int(ann["category_id"]))
                rec["review"].append(float(review[k]))
                rec["head"].append(np.nan if head is None else float(head[k]))
                rec["class_prob"].append(float(class_scores[k, int(used[k])]))
                rec["fallback"].append(bool(g[k].min() >= BOX_FALLBACK_PROB))
    arrays = {k: np.array(v) for k, v in rec.items()}
    names = np.array([f"{c['id']}:{c['name']}" for c in categories])
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial.npz")
    np.savez_compressed(partial, names=names, **arrays)
    partial.replace(out)
    return len(rec["iou"])


def _lowest(scores: np.ndarray, ious: np.ndarray, share: float) -> str:
    """The share of the masks with IoU < 0.5 among the lowest-scoring ``share`` (``-`` when
    none is bad)."""
    bad = ious < 0.5
    if not bad.any():
        return "-"
    k = max(1, int(np.ceil(share * len(scores))))
    return f"{bad[np.argsort(scores, kind='stable')[:k]].sum() / bad.sum():.2f}"


def frame_stats(probs: np.ndarray) -> dict[str, float]:
    """Mean probability of the grids' interior (cells at least :data:`INTERIOR` from the edge)
    and outer :data:`FRAME` rings, and the share of the ring cells at 0.5 or more, overall and
    per side (``probs`` ``[N, R, R]``)."""
    r = probs.shape[-1]
    ring = np.zeros((r, r), dtype=bool)
    ring[:FRAME], ring[-FRAME:], ring[:, :FRAME], ring[:, -FRAME:] = True, True, True, True
    inner = np.zeros((r, r), dtype=bool)
    inner[INTERIOR:r - INTERIOR, INTERIOR:r - INTERIOR] = True
    on = probs >= 0.5
    interior = float(probs[:, inner].mean()) if inner.any() else float("nan")
    return {"interior": interior, "ring": float(probs[:, ring].mean()),
            "ring_on": float(on[:, ring].mean()), "top_on": float(on[:, :FRAME].mean()),
            "bottom_on": float(on[:, -FRAME:].mean()), "left_on": float(on[:, :, :FRAME].mean()),
            "right_on": float(on[:, :, -FRAME:].mean())}


def report(path: Path, categories: list[str] | None = None) -> str:
    """The report of a dump (module doc), as markdown."""
    d = np.load(path)
    names = dict(s.split(":", 1) for s in d["names"].tolist())
    cats = sorted(set(d["cat"].tolist()), key=lambda c: (bool(d["seen"][d["cat"] == c][0]), c))
    r = d["probs"].shape[-1]
    context = (d["colours"].shape[1] - r) // 2
    from boxmask.runtime.review import colour_separation

    colour_ring = colour_separation(d["probs"], d["colours"])
    colour_box = colour_separation(d["probs"], d["colours"][:, context:context + r,
                                                              context:context + r])
    lines = [f"{path}: {len(d['iou'])} masks, box-prompted mean IoU x100 (* unseen)", "",
             ("| category | masks | box | mask | mask - box | served fit | CRF | teacher "
              "| served as box | their gain | colour term Spearman: box / ring |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def crf_cell(keep: np.ndarray) -> str:
        if "iou_crf" not in d or np.isnan(d["iou_crf"][keep]).all():
            return "-"
        return f"{100 * d['iou_crf'][keep].mean():.1f}"

    def sp(x: np.ndarray, y: np.ndarray) -> str:
        s = _spearman(x, y)
        return "-" if s is None else f"{s:.2f}"

    groups = [(f"{names[str(c)]}{'' if d['seen'][d['cat'] == c][0] else '*'}", d["cat"] == c)
              for c in cats]
    groups += [("unseen", ~d["seen"]), ("seen", d["seen"])]
    for label, keep in groups:
        if not keep.any():
            continue
        fb = keep & d["fallback"]
        # What the masks served as their box gained over the same model's own mask (a model
        # without the guard: nothing, or an object that fills its box).
        gain = f"{100 * np.mean(d['iou'][fb] - d['iou_unguarded'][fb]):+.1f}" if fb.any() else "-"
        lines.append(
            f"| {label} | {int(keep.sum())} | {100 * d['box_iou'][keep].mean():.1f} "
            f"| {100 * d['iou'][keep].mean():.1f} "
            f"| {100 * (d['iou'][keep] - d['box_iou'][keep]).mean():+.1f} "
            f"| {100 * d['iou_fit'][keep].mean():.1f} | {crf_cell(keep)} "
            f"| {100 * d['iou_teacher'][keep].mean():.1f} "
            f"| {int(fb.sum())} | {gain} "
            f"| {sp(colour_box[keep], d['iou'][keep])} / {sp(colour_ring[keep], d['iou'][keep])} |")
    if "review_crf" in d:
        lines += ["", ("The review score against the true IoU (Spearman; share of the masks with IoU "
                  "< 0.5 in the lowest-scoring 20 %): served without the CRF, with it, and the "
                  "unrefined mask's score for the refined mask"), "",
                  "| masks | score / IoU of | Spearman | bad in lowest 20 % |", "|---|---|---|---|"]
        for side, keep in (("unseen", ~d["seen"]), ("seen", d["seen"])):
            for label, score, iou in (("mask / mask", d["review"], d["iou"]),
                                      ("refined / refined", d["review_crf"], d["iou_crf"]),
                                      ("mask / refined", d["review"], d["iou_crf"])):
                if keep.any():
                    lines.append(f"| {side} | {label} | {sp(score[keep], iou[keep])} "
                                 f"| {_lowest(score[keep], iou[keep], 0.2)} |")
    lookup = {v: int(k) for k, v in names.items()}
    for name in categories or []:
        if name not in lookup:
            raise SystemExit(f"no category {name!r} in {path}; it has {', '.join(names.values())}")
        keep = d["cat"] == lookup[name]
        lines += ["", f"{name}: its masks by the box's own IoU with the object", "",
                  "| box IoU | masks | box | mask | teacher |", "|---|---|---|---|---|"]
        edges = (0.0, *BOX_IOU_EDGES, 1.01)
        for lo, hi in itertools.pairwise(edges):
            band = keep & (d["box_iou"] >= lo) & (d["box_iou"] < hi)
            if band.any():
                label = f"{lo:.2f} to {min(hi, 1.0):.2f}" if hi <= 1.0 else f"{lo:.2f} and above"
                lines.append(f"| {label} | {int(band.sum())} | {100 * d['box_iou'][band].mean():.1f} "
                             f"| {100 * d['iou'][band].mean():.1f} "
                             f"| {100 * d['iou_teacher'][band].mean():.1f} |")
        whole = keep & (d["box_iou"] >= BOX_IOU_EDGES[-1])
        if whole.any():
            lines += ["", (f"{name}, the whole ones (box IoU >= {BOX_IOU_EDGES[-1]}): the "
                           f"grid's outer {FRAME} rings against its interior"), "",
                      "| grid of | interior | rings | rings >= 0.5 | top | bottom | left | right |",
                      "|---|---|---|---|---|---|---|---|"]
            for label, probs in (("mask", d["probs"][whole]), ("teacher", d["teacher"][whole])):
                f = frame_stats(probs)
                lines.append(f"| {label} | {f['interior']:.2f} | {f['ring']:.2f} "
                             f"| {100 * f['ring_on']:.0f} % | {100 * f['top_on']:.0f} % "
                             f"| {100 * f['bottom_on']:.0f} % | {100 * f['left_on']:.0f} % "
                             f"| {100 * f['right_on']:.0f} % |")
    return "\n".join(lines)


def _shifted(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``mask`` moved by ``(dy, dx)`` pixels, what leaves the plane dropped."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    src_y, dst_y = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    src_x, dst_x = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[dst_y, dst_x] = mask[src_y, src_x]
    return out


def shift(checkpoint: Path, max_images: int | None = None) -> str:
    """The shift table of a checkpoint (module doc), as markdown."""
    import torch

    from boxmask.model.paste import paste_masks

    _, model, categories, dataset, _ = _load(checkpoint)
    coco = dataset.coco
    to_label = {int(c["id"]): int(c["label"]) for c in categories}
    names = {int(c["id"]): c["name"] for c in categories}
    rows: list[tuple[float, ...]] = []
    with torch.no_grad():
        for _, ann_ids, boxes, labels, image in prompted_images(dataset, to_label, max_images):
            h, w = image.shape[-2:]
            decoded = decode_prompts(model, image, boxes, labels)
            probs = paste_masks(decoded.logits.sigmoid(), boxes, (h, w),
                                decoded.offset)[:, 0].numpy()
            for k, ann_id in enumerate(ann_ids):
                gt = coco.annToMask(coco.anns[ann_id]).astype(bool)
                pred = probs[k] >= 0.5
                if not pred.any() or not gt.any():
                    continue
                gy, gx = np.nonzero(gt)
                py, px = np.nonzero(pred)
                rows.append((coco.anns[ann_id]["category_id"], px.mean() - gx.mean(),
                             py.mean() - gy.mean(),
                             *(_iou(_shifted(pred, dy, dx), gt) for dy, dx in SHIFTS)))
    lines = ["| category | masks | dx | dy | IoU as is | up 1 | down 1 | left 1 | right 1 |",
             "|---|---|---|---|---|---|---|---|---|"]
    if not rows:
        return "\n".join(lines)
    table = np.array(rows, dtype=np.float64)
    for cat in [*sorted(set(table[:, 0].tolist())), None]:
        part = table if cat is None else table[table[:, 0] == cat]
        label = "all" if cat is None else names[int(cat)]
        lines.append(f"| {label} | {len(part)} | {part[:, 1].mean():+.2f} | {part[:, 2].mean():+.2f} | "
                     + " | ".join(f"{100 * v:.1f}" for v in part[:, 3:].mean(0)) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("dump", help="every validation mask of a checkpoint, to an .npz")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--serve", nargs="*", default=[], metavar="SETTING=VALUE",
                   help="model.served_* settings to serve the weights with, e.g. "
                        "served_box_guard=expected_iou")
    p = sub.add_parser("report", help="per category, and by the box's IoU for --category")
    p.add_argument("dump", type=Path)
    p.add_argument("--category", nargs="*", default=[])
    p = sub.add_parser("shift", help="offsets, and IoU with the masks moved one pixel")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--max-images", type=int, default=None)
    args = ap.parse_args(argv)
    if args.command == "dump":
        import torch

        torch.set_num_threads(1)
        if bad := [item for item in args.serve if "=" not in item]:
            ap.error(f"--serve takes SETTING=VALUE, not {bad[0]!r}")
        serve = dict(item.split("=", 1) for item in args.serve)
        print(f"{dump(args.checkpoint, args.out, args.max_images, serve)} masks -> {args.out}")
    elif args.command == "report":
        print(report(args.dump, args.category))
    else:
        import torch

        torch.set_num_threads(1)
        print(shift(args.checkpoint, args.max_images))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
