"""The review score's weights (boxmask.runtime.review.WEIGHTS_BY_FINISH), fitted on a held-out tuning set.

The served ``quality`` is a weighted mean of four terms of each mask: the decoder's mask's
confidence, the served mask's colour separation and edge contrast (the mask refined by the CRF
where the bundle says so) and the mask-quality head's predicted IoU. This script measures the terms and the true IoU of
every instance of a COCO set that is **not** the validation split the review figures are
reported on (benchmarks/mask_quality.py), box-prompted, for each checkpoint and each finish
(the decoder's masks as they are, refined by the CRF with the local and the wide kernel), and
fits the weights by least squares (true IoU on the four terms and a constant, the unseen
categories' instances of every checkpoint pooled; normalised to sum 1). Then, per finish and
checkpoint: Spearman with the true IoU, and the share of the masks with IoU < 0.5 among the
lowest 10 % and 20 %, for the mean confidence (baseline), the score before 2026-12-07 (the
decoder's terms, equal weights), the decoder's confidence with the served mask's separation at
equal weights, the fitted weights, and the served ones.

Resumable: each checkpoint's terms are kept under ``--out`` (``<name>_<finish>.npz``).

    .venv/bin/python benchmarks/review_weights.py --checkpoint runs/demo_long/checkpoint_last.pt \\
        --checkpoint runs/demo_seed2/checkpoint_last.pt \\
        --annotations data/clear_v2128_tune/annotations/instances_val.json \\
        --images data/clear_v2128_tune/images/val
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from harness import markdown_table, write_json
from mask_quality import figures, mask_terms

ROOT = Path(__file__).resolve().parents[1]
FINISHES = {"none": None, "crf": "local", "crf_wide": "wide"}


def fit(terms: list[dict[str, np.ndarray]], with_head: bool = True) -> dict[str, float]:
    """Least-squares weights of the true IoU on the confidence, the served separation, the
    served edge contrast and (if ``with_head``) the head, with a constant, over the unseen
    instances of ``terms`` pooled; normalised to sum 1."""
    names = ["confidence", "separation", "edge"] + (["head"] if with_head else [])
    rows = [np.stack([t[n][~t["seen"]] for n in names], 1) for t in terms]
    x = np.concatenate(rows)
    y = np.concatenate([t["iou"][~t["seen"]] for t in terms])
    keep = np.isfinite(x).all(1)
    coef = np.linalg.lstsq(np.c_[x[keep], np.ones(int(keep.sum()))], y[keep], rcond=None)[0]
    w = coef[:len(names)]
    total = float(w.sum())
    if total <= 0:
        raise SystemExit("the fitted weights sum to zero or less: the terms do not predict the "
                         "true IoU on this set (too few instances?)")
    weights = {"head": 0.0} | {n: float(v / total) for n, v in zip(names, w, strict=True)}
    return {k: weights[k] for k in ("confidence", "separation", "head", "edge")}


def scores(t: dict[str, np.ndarray], fitted: dict[str, float],
           pooled: dict[str, float]) -> dict[str, np.ndarray]:
    """The compared scores of the unseen instances of one checkpoint's ``t``: ``fitted`` are
    the weights fitted on this finish, ``pooled`` those fitted on every finish at once."""
    from boxmask.runtime.review import ReviewWeights, combine_terms

    u = ~t["seen"]
    conf, sep, dec, head, edge = (t["confidence"][u], t["separation"][u],
                                  t["separation_decoder"][u], t["head"][u], t["edge"][u])
    equal = ReviewWeights(1.0, 1.0, 1.0, edge=0.0)
    return {
        "mean confidence": t["mean_confidence"][u],
        "before: decoder's terms, equal weights": combine_terms(conf, dec, head, equal),
        "decoder's confidence, served separation, equal weights": combine_terms(conf, sep, head, equal),
        "without the edge term (0.6 / 0.3 / 0.1)": combine_terms(
            conf, sep, head, ReviewWeights(0.6, 0.3, 0.1, edge=0.0)),
        "fitted weights": combine_terms(conf, sep, head, ReviewWeights(**fitted), edge),
        "pooled weights (every finish)": combine_terms(conf, sep, head, ReviewWeights(**pooled),
                                                       edge),
        "served (runtime.review.WEIGHTS_BY_FINISH)": t["quality"][u],
    }


def load_terms(checkpoint: Path, finish: str, out: Path, annotations: str | None,
               images: str | None) -> dict[str, np.ndarray]:
    """One checkpoint's terms for one finish, measured once and kept."""
    from boxmask.model.checkpoint import load_checkpoint

    kept = out / f"{checkpoint.parent.name}_{checkpoint.stem}_{finish}.npz"
    if not kept.is_file():
        raw = load_checkpoint(checkpoint)
        terms = mask_terms(raw, crf=FINISHES[finish], annotations=annotations, images=images)
        out.mkdir(parents=True, exist_ok=True)
        part = kept.with_suffix(".part.npz")
        np.savez(part, **terms)
        part.replace(kept)
    with np.load(kept) as data:
        return {k: data[k] for k in data.files}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", action="append", required=True, type=Path,
                   help="a trained teacher-student checkpoint (repeat for several)")
    p.add_argument("--annotations", default=None,
                   help="the tuning set's COCO annotations (default: each checkpoint's "
                        "validation split, which is then not held out)")
    p.add_argument("--images", default=None, help="the tuning set's images folder")
    p.add_argument("--finish", nargs="+", default=list(FINISHES), choices=list(FINISHES))
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "review_weights")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if (args.annotations is None) != (args.images is None):
        p.error("--annotations and --images go together")
    import torch

    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {"checkpoints": [str(c) for c in args.checkpoint],
                              "annotations": args.annotations, "images": args.images,
                              "finishes": {}}
    finishes = {finish: [load_terms(c, finish, args.out, args.annotations, args.images)
                         for c in args.checkpoint] for finish in args.finish}
    everything = [t for terms in finishes.values() for t in terms]
    pooled_has_head = all(np.isfinite(t["head"]).all() for t in everything)
    pooled = fit(everything, with_head=pooled_has_head)
    result["pooled"] = pooled
    for finish, terms in finishes.items():
        has_head = all(np.isfinite(t["head"]).all() for t in terms)
        fitted = fit(terms, with_head=has_head)
        no_head = fit(terms, with_head=False)
        rows, per = [], {}
        for c, t in zip(args.checkpoint, terms, strict=True):
            got = figures(scores(t, fitted, pooled), t["iou"][~t["seen"]])
            per[str(c)] = got
            for name, f in got.items():
                if isinstance(f, dict):
                    rows.append([f"{c.parent.name} ({got['instances']}, {got['iou_below_half']})",
                                 name, f"{f['spearman']:.3f}", f"{f['found_in_lowest_10']:.2f}",
                                 f"{f['found_in_lowest_20']:.2f}"])
        result["finishes"][finish] = {"fitted": fitted, "fitted_without_head": no_head,
                                      "figures": per}
        print(f"\n{finish}: fitted weights " + ", ".join(f"{k} {v:.2f}" for k, v in fitted.items())
              + "; without the head " + ", ".join(f"{k} {v:.2f}" for k, v in no_head.items()
                                                   if k != "head"))
        print(markdown_table(["checkpoint (unseen, IoU < 0.5)", "score", "Spearman",
                              "bad in lowest 10 %", "in lowest 20 %"], rows))
    print("\nPooled over every finish: " + ", ".join(f"{k} {v:.2f}" for k, v in pooled.items()))
    write_json(args.out / "result.json", result)
    print(f"\nwritten: {args.out / 'result.json'}")
    print(json.dumps({f: r["fitted"] for f, r in result["finishes"].items()} | {"pooled": pooled}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
