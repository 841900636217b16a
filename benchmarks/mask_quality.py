"""Which masks to check first: does the mask-quality head rank masks by their true IoU?

For a trained teacher-student checkpoint (the headline recipe), the class-agnostic
mask-quality head (``model.mask_quality``) is trained **post hoc**: every other part frozen
(``model.frozen``), the head learning from the instances with true masks. Its inputs are
detached, so the masks are bit-identical to the checkpoint's: the box-prompted mask quality is
the same with the head as without, by construction. Three seeds of the head's training.

Then on the validation set, box-prompted (true boxes and labels in), separately for seen and
unseen categories (seen: taught by masks, here or in the checkpoint a fine-tune started from;
unseen: taught by pseudo-masks alone), for these scores of each mask:

- ``quality``: what the runtime serves as ``quality``, the review score of
  boxmask.runtime.review (the weighted mean of the decoder's mask's confidence, the served
  mask's colour separation and the head's IoU where the checkpoint has a head), computed by the
  same functions on the same inputs (the decoder's R x R probabilities, refined by the CRF
  where ``--crf`` says so, the image resized as the runtime resizes it);
- ``head``: the head's predicted IoU alone (checkpoints with a head);
- ``class probability``: the box head's probability of the given label (what `/v1/segment`
  returned as ``score`` before the head);
- ``mean confidence``: the mask's mean probability over its foreground pixels;
- ``equal weights, decoder's masks``: the review score as served before 2026-12-07 (the
  decoder's terms, weighted equally).

Figures: Spearman rank correlation of the score with the mask's true IoU; the share of the masks
with IoU < 0.5 found by reviewing the lowest-scoring 10 % and 20 % (a random review finds 10 %
and 20 %).

Every checkpoint is first measured as it is (``with_the_model``: with the head it was trained
with, if any; without one, the review score of the mask's statistics alone); the seeds' heads
then start fresh from a copy without a head. ``--seeds`` with no value measures the checkpoint
as it is and trains nothing (e.g. the fine-tune benchmark's three seeds, which have no head).

Resumable: each seed's run keeps its folder under ``--out``; a finished one (``result.json``)
is skipped.

    .venv/bin/python benchmarks/mask_quality.py --checkpoint CKPT [--seeds 0 1 2] [--iterations 500]
    .venv/bin/python benchmarks/mask_quality.py --checkpoint CKPT --seeds   # as it is only
    .venv/bin/python benchmarks/mask_quality.py --checkpoint CKPT --smoke   # 2 iterations
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from harness import decode_prompts, prompted_images, runtime_pixels, write_json

ROOT = Path(__file__).resolve().parents[1]
EVERYTHING_BUT_QUALITY = "[backbone, pixel_stem, rpn, box_head, teacher, student]"


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.all(a == a[0]):
        return None
    return float(spearmanr(a, b).statistic)


def review_recall(scores: np.ndarray, ious: np.ndarray, share: float) -> float | None:
    """Share of the masks with IoU < 0.5 among the lowest-scoring ``share`` of all masks."""
    bad = ious < 0.5
    if not bad.any():
        return None
    k = max(1, math.ceil(share * len(scores)))
    worst = np.argsort(scores, kind="stable")[:k]
    return float(bad[worst].sum() / bad.sum())


def figures(scores: dict[str, np.ndarray], ious: np.ndarray) -> dict[str, Any]:
    return {name: {"spearman": _spearman(s, ious), "found_in_lowest_10": review_recall(s, ious, 0.1),
                   "found_in_lowest_20": review_recall(s, ious, 0.2)}
            for name, s in scores.items()} | {"instances": len(ious),
                                              "iou_below_half": int((ious < 0.5).sum())}


def has_quality_head(raw: dict[str, Any]) -> bool:
    """Whether a loaded checkpoint carries mask-quality weights."""
    from boxmask.model.init_from import QUALITY_WEIGHTS

    return any(k.startswith(QUALITY_WEIGHTS) for k in raw["model"])


def without_quality_head(raw: dict[str, Any], out: Path) -> Path:
    """A copy of the loaded checkpoint ``raw`` without its mask-quality head's weights (written
    once, atomically), so each seed's head starts fresh instead of from the one trained with
    the model (``model.init_from`` copies every weight it finds)."""
    import os

    import torch

    from boxmask.model.init_from import QUALITY_WEIGHTS

    dst = out / "without_quality_head.pt"
    if not dst.is_file():
        model = {k: v for k, v in raw["model"].items() if not k.startswith(QUALITY_WEIGHTS)}
        out.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_suffix(".tmp")
        torch.save({**raw, "model": model}, tmp)
        os.replace(tmp, dst)
    return dst


def train_head(checkpoint: Path, stored: dict[str, Any], out: Path, seed: int, iterations: int,
               threads: int) -> Path:
    """The head trained ``iterations`` steps on ``checkpoint`` (whose config is ``stored``),
    everything else frozen."""
    from boxmask.config import load_config
    from boxmask.data.build import build_dataset
    from boxmask.training.trainer import train

    def config(epochs: int, per_epoch: int | None) -> Any:
        return load_config(None, [
            f"model.init_from={checkpoint}", "model.mask_quality=true",
            f"model.frozen={EVERYTHING_BUT_QUALITY}", f"train.epochs={epochs}",
            *([f"train.max_iters_per_epoch={per_epoch}"] if per_epoch else []),
            "train.lr_steps=[]", "train.warmup_iters=50", f"train.seed={seed}",
            f"train.output_dir={out}", f"train.threads={threads}", "train.keep_checkpoints=1",
            "train.checkpoint_every_iters=100"], base=stored)

    # As many epochs as ``iterations`` needs (an epoch of the headline set is 250 iterations:
    # one epoch capped at ``iterations`` would stop there), each cut to fit; an epoch's length
    # is the trainer's: the training set's images with a usable annotation, in batches.
    probe = config(1, None)
    per_epoch = max(1, math.ceil(len(build_dataset(probe.data, "train")) / probe.train.batch_size))
    epochs = max(1, math.ceil(iterations / per_epoch))
    return train(config(epochs, math.ceil(iterations / epochs)), resume=Path("auto"))


def mask_terms(raw: dict[str, Any], context: int | None = None, crf: str | None = None,
               annotations: str | None = None, images: str | None = None
               ) -> dict[str, np.ndarray]:
    """Every validation instance of a loaded checkpoint ``raw``, box-prompted: ``[M]`` arrays
    ``seen``, ``iou`` (the served mask's true IoU), ``quality`` (the served review score, by
    the runtime's functions), the review terms ``confidence`` (the decoder's mask's),
    ``separation`` (the served mask's), ``separation_decoder``, ``edge`` (the served mask's edge
    contrast), ``head`` (NaN without a head),
    ``class_probability`` and ``mean_confidence``. ``crf`` ("local" or "wide"): the served mask
    is the decoder's refined by the CRF with that kernel (a bundle with ``mask_refine: crf`` or
    ``crf_wide``; boxmask.runtime.crf). ``annotations``/``images``: another COCO set than the
    checkpoint's validation split (benchmarks/review_weights.py's tuning set)."""
    import torch

    from boxmask.data.coco import CocoInstances
    from boxmask.model.checkpoint import model_from_checkpoint
    from boxmask.model.paste import paste_masks
    from boxmask.runtime.crf import KERNELS, mask_refine_name, refine_boxes
    from boxmask.runtime.review import (
        CONTEXT,
        colour_separation,
        edge_contrast,
        mask_confidence,
        review_score,
        sample_box_colours,
        weights_for,
    )

    # The card's mask_refine of the finish measured: its CRF kernel and its review weights.
    finish = mask_refine_name(bool(crf), crf or "local")
    model, categories = model_from_checkpoint(raw)
    model.eval()
    d = raw["config"]["data"]
    m = raw["config"]["model"]
    seen_ids = {int(c["id"]) for c in categories
                if c["seen"] or c.get("taught_by") == "masks"}
    dataset = CocoInstances(images or d["val_images"], annotations or d["val_annotations"],
                            seen_ids, drop_empty=False, allow_no_masks=True)
    coco = dataset.coco
    to_label = {int(c["id"]): int(c["label"]) for c in categories}
    names = ("seen", "iou", "quality", "confidence", "separation", "separation_decoder", "head",
             "class_probability", "mean_confidence", "edge")
    rows: list[tuple[float, ...]] = []
    with torch.no_grad():
        for _, ann_ids, boxes, labels, image in prompted_images(dataset, to_label):
            h, w = image.shape[-2:]
            _, _, scaled, logits, class_scores, used, quality, offset = decode_prompts(
                model, image, boxes, labels)
            probs = paste_masks(logits.sigmoid(), boxes, (h, w), offset)[:, 0]
            # The served mask and its score, as the runtime computes them (its resize of the
            # uint8 image): the decoder's mask, or refined by the CRF.
            pixels = runtime_pixels(image, m)
            grid = logits.sigmoid()[:, 0].numpy()
            head_iou = quality.numpy() if quality is not None else None
            colours = sample_box_colours(pixels, scaled.numpy(), grid.shape[-1],
                                         CONTEXT if context is None else context)
            shown, refined = probs, None
            if crf:
                refined = refine_boxes(pixels, scaled.numpy(), grid, KERNELS[finish])
                shown = paste_masks(torch.from_numpy(refined)[:, None], boxes, (h, w), offset)[:, 0]
            served = review_score(grid, colours, head_iou, served=refined,
                                  weights=weights_for(finish))
            conf = mask_confidence(grid)
            sep_decoder = colour_separation(grid, colours)
            sep = sep_decoder if refined is None else colour_separation(refined, colours)
            edge = edge_contrast(grid if refined is None else refined, colours)
            for k, ann_id in enumerate(ann_ids):
                ann = coco.anns[ann_id]
                gt = coco.annToMask(ann).astype(bool)
                p = probs[k].numpy()
                pred = p >= 0.5
                served_mask = shown[k].numpy() >= 0.5
                union = (served_mask | gt).sum()
                iou = 1.0 if union == 0 else float((served_mask & gt).sum() / union)
                rows.append((float(int(ann["category_id"]) in seen_ids), iou, float(served[k]),
                             float(conf[k]), float(sep[k]), float(sep_decoder[k]),
                             float(quality[k]) if quality is not None else float("nan"),
                             float(class_scores[k, int(used[k])]),
                             float(p[pred].mean()) if pred.any() else 0.0, float(edge[k])))
    arr = np.array(rows, dtype=np.float64).reshape(-1, len(names))
    out = {name: arr[:, i] for i, name in enumerate(names)}
    out["seen"] = out["seen"].astype(bool)
    return out


def measure(raw: dict[str, Any], context: int | None = None, crf: str | None = None
            ) -> dict[str, Any]:
    """The scores' figures (:func:`figures`) for the unseen, seen and all validation instances
    of a loaded checkpoint ``raw``, box-prompted (:func:`mask_terms`): the served score, the
    head alone (checkpoints with a head), the class probability, the mask's mean confidence,
    and the score as served before 2026-12-07 (the decoder's terms, equal weights)."""
    from boxmask.runtime.review import ReviewWeights, combine_terms

    terms = mask_terms(raw, context, crf)
    head = has_quality_head(raw)
    equal = ReviewWeights(1.0, 1.0, 1.0, edge=0.0)
    out: dict[str, Any] = {}
    for side, keep in (("unseen", ~terms["seen"]), ("seen", terms["seen"]),
                       ("all", np.ones_like(terms["seen"]))):
        ious = terms["iou"][keep]
        before = combine_terms(terms["confidence"][keep], terms["separation_decoder"][keep],
                               terms["head"][keep], equal)
        scores = {"quality": terms["quality"][keep], "head": terms["head"][keep],
                  "class probability": terms["class_probability"][keep],
                  "mean confidence": terms["mean_confidence"][keep],
                  "equal weights, decoder's masks": before,
                  "without the edge term (0.6 / 0.3 / 0.1)": combine_terms(
                      terms["confidence"][keep], terms["separation"][keep], terms["head"][keep],
                      ReviewWeights(0.6, 0.3, 0.1, edge=0.0))}
        if not head:
            del scores["head"]
        out[side] = figures(scores, ious)
        out[side]["mean_iou"] = float(ious.mean()) if len(ious) else None
    return out


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| categories | score | seeds | Spearman | bad masks in lowest 10 % | in lowest 20 % |",
             "|---|---|---|---|---|---|"]

    def mean(vals: list[float | None]) -> str:
        vals = [v for v in vals if v is not None]
        return "-" if not vals else f"{np.mean(vals):.2f} ({', '.join(f'{v:.2f}' for v in vals)})"

    for side in ("unseen", "seen"):
        for score in ("quality", "head", "class probability", "mean confidence",
                      "equal weights, decoder's masks"):
            got = [r[side][score] for r in results if score in r[side]]
            if not got or not results[0][side]["instances"]:
                continue
            lines.append(f"| {side} | {score} | {len(got)} | {mean([g['spearman'] for g in got])} | "
                         f"{mean([g['found_in_lowest_10'] for g in got])} | "
                         f"{mean([g['found_in_lowest_20'] for g in got])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a trained teacher-student checkpoint")
    p.add_argument("--out", default=str(ROOT / "runs" / "mask_quality"))
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2],
                   help="seeds of post-hoc heads; none: measure the checkpoint as it is only")
    p.add_argument("--iterations", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--smoke", action="store_true", help="2 iterations, one seed")
    p.add_argument("--crf", nargs="?", const="local", default=None, choices=("local", "wide"),
                   help="score the masks as served refined by the CRF (model.served_crf) with "
                        "this kernel (model.served_crf_kernel; default local): the true IoU is "
                        "the refined mask's")
    p.add_argument("--review-context", type=int, default=None, metavar="CELLS",
                   help="the colour term's ring around the box, in cells of the mask grid "
                        "(default: the runtime's boxmask.runtime.review.CONTEXT; 0: the box's "
                        "cells alone): to compare widths; the served score is the default's")
    args = p.parse_args(argv)
    if args.smoke:
        args.iterations, args.seeds = 2, args.seeds[:1]
    from boxmask.model.checkpoint import load_checkpoint

    out = Path(args.out).resolve()
    checkpoint = Path(args.checkpoint).resolve()
    raw = load_checkpoint(checkpoint)  # read once: its config, weights and (maybe) head
    # A ring other than the served score's is named in every result it makes.
    ring = {} if args.review_context is None else {"review_context": args.review_context}
    if args.crf:
        ring["served_crf"] = True
        if args.crf != "local":
            ring["served_crf_kernel"] = args.crf
    base = checkpoint
    # Measured as it is (with the head it was trained with, if any), then fresh heads.
    done = out / "with_the_model" / "result.json"
    if not done.is_file():
        write_json(done, {"seed": "with the model", "checkpoint": str(args.checkpoint),
                          "head": has_quality_head(raw), **ring,
                          **measure(raw, args.review_context, args.crf)})
    print("the checkpoint as it is" + (" (its head trained with the model):"
                                        if has_quality_head(raw) else " (no head):"))
    print(table([json.loads(done.read_text())]))
    if not args.seeds:
        return 0
    if has_quality_head(raw):
        base = without_quality_head(raw, out)
    stored = raw["config"]
    del raw
    results = []
    for seed in args.seeds:
        run = out / f"head_s{seed}"
        done = run / "result.json"
        if done.is_file():
            results.append(json.loads(done.read_text()))
            continue
        trained = load_checkpoint(train_head(base, stored, run, seed, args.iterations,
                                             args.threads))
        result = {"seed": seed, "checkpoint": str(args.checkpoint),
                  "iterations": int(trained["iteration"]), **ring,
                  **measure(trained, args.review_context, args.crf)}
        write_json(done, result)
        results.append(result)
    print(f"heads trained post hoc ({args.iterations} iterations, everything else frozen):")
    print(table(results))
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
