"""What the served CRF costs: a cached box-prompted call with and without it, in one process.

    python benchmarks/crf_cost.py [--model-dir DIR] [--blocks 5] [--calls 50] [--threads 1]

For an exported model (default: the bundled demo), one image set once, then
``Predictor.predict`` of 1 and 10 boxes with labels (the label-given decoder, what a box drawn
in a labeling tool runs) with ``mask_refine`` none, crf and crf_wide, in alternating blocks of
one process; prints the median over blocks of each block's median, and each CRF's difference
and ratio to none. Beside it, :func:`boxmask.runtime.crf.crf_refine` alone per mask with each
kernel, and pydensecrf's CRF with the local kernel's parameters where it is installed
(boxmask.model.pseudo_masks.dense_crf).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "boxmask" / "assets" / "models" / "synthetic-demo"


def _median_ms(fn, blocks: int, calls: int) -> float:
    medians = []
    for _ in range(blocks):
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        medians.append(float(np.median(times)) * 1e3)
    return float(np.median(medians))


def main(argv: list[str] | None = None) -> int:
    from boxmask.runtime import Predictor
    from boxmask.runtime.crf import KERNELS, crf_refine

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", type=Path, default=DEMO)
    p.add_argument("--blocks", type=int, default=5)
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per session")
    p.add_argument("--size", type=int, default=None,
                   help="image side (default: the card's min_size)")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    predictors = {refine: Predictor.from_dir(args.model_dir, mask_refine=refine,
                                             intra_op_threads=args.threads)
                  for refine in ("none", "crf", "crf_wide")}
    card = predictors["none"].card
    side = args.size or card.preprocess.min_size
    image = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
    keys = {refine: pr.set_image(image) for refine, pr in predictors.items()}
    label = card.categories[0].id
    print(f"{args.model_dir.name}, {side} x {side} image, cached, labels given, "
          f"{args.threads} ONNX Runtime thread(s)\n")
    print("| boxes | no CRF (ms) | CRF (ms) | CRF - none (ms) | ratio | wide CRF (ms) "
          "| wide - none (ms) | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for n in (1, 10):
        x = rng.uniform(0, side * 0.5, n)
        y = rng.uniform(0, side * 0.5, n)
        boxes = np.stack([x, y, x + side * 0.4, y + side * 0.4], 1).astype(np.float32)
        labels = [label] * n
        times: dict[str, list[float]] = {refine: [] for refine in predictors}
        for _ in range(args.blocks):
            for refine, pr in predictors.items():
                def call(pr=pr, key=keys[refine], boxes=boxes, labels=labels) -> None:
                    pr.predict(boxes, labels=labels, key=key)

                times[refine].append(_median_ms(call, 1, args.calls))
        none, crf, wide = (np.median(times[k]) for k in ("none", "crf", "crf_wide"))
        print(f"| {n} | {none:.2f} | {crf:.2f} | {crf - none:+.2f} | {crf / none:.2f} "
              f"| {wide:.2f} | {wide - none:+.2f} | {wide / none:.2f} |")
    r = card.mask_resolution
    probs = rng.random((10, r, r)).astype(np.float32)
    colours = rng.integers(0, 255, (10, r, r, 3), dtype=np.uint8)
    alone = {name: _median_ms(lambda k=k: crf_refine(probs, colours, k), args.blocks,
                              max(1, args.calls // 5)) / 10 for name, k in KERNELS.items()}
    print(f"\nThe CRF alone on {r} x {r} grids (boxmask.runtime.crf, 10 at a time): "
          + ", ".join(f"{name} {ms:.2f} ms a mask" for name, ms in alone.items()), end="")
    try:
        from boxmask.model.pseudo_masks import dense_crf

        ref = _median_ms(lambda: [dense_crf(q, c) for q, c in zip(probs, colours, strict=True)],
                         args.blocks, max(1, args.calls // 5))
        print(f"; pydensecrf {ref / 10:.2f} ms a mask")
    except (ImportError, RuntimeError):
        print("; pydensecrf not installed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
