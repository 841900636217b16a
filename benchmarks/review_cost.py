"""What the review score's ring and edge term cost: its statistics with the ring and with the
box alone, and with the edge contrast term.

    python benchmarks/review_cost.py [--blocks 5] [--calls 300]

Times :func:`boxmask.runtime.review.sample_box_colours` plus
:func:`~boxmask.runtime.review.review_score` (what the runtime adds to a decoder call for
``quality``) on 1 and 10 boxes of a random 800 x 800 image and 28 x 28 masks, three ways in
alternating blocks of one process: the box alone and the runtime's ring (``CONTEXT``) without
the edge term (its weight 0: not computed), and the ring with it (the served weights,
``WEIGHTS``); prints the median over blocks of each block's median and the ratios (the ring
against the box alone, the edge term against the ring without it). The decoder itself costs
5-6.5 ms a box at the paper's widths (benchmarks/runtime.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from boxmask.runtime.review import (
        CONTEXT,
        WEIGHTS,
        review_score,
        sample_box_colours,
    )

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--blocks", type=int, default=5)
    p.add_argument("--calls", type=int, default=300)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (800, 800, 3), dtype=np.uint8)
    no_edge = dataclasses.replace(WEIGHTS, edge=0.0)
    ways = {"alone": (0, no_edge), "ring": (CONTEXT, no_edge), "edge": (CONTEXT, WEIGHTS)}
    print(f"| boxes | box alone (ms) | ring of {CONTEXT} (ms) | ratio | ring + edge term (ms) "
          "| ratio to the ring |")
    print("|---|---|---|---|---|---|")
    for n in (1, 10):
        boxes = np.array([[100 + 10 * i, 120, 300 + 10 * i, 330] for i in range(n)], np.float32)
        probs = rng.random((n, 28, 28)).astype(np.float32)
        head = np.full(n, 0.5, np.float32)
        blocks: dict[str, list[float]] = {way: [] for way in ways}
        for _ in range(args.blocks):
            for way, medians in blocks.items():
                context, weights = ways[way]
                times = []
                for _ in range(args.calls):
                    start = time.perf_counter()
                    review_score(probs, sample_box_colours(pixels, boxes, 28, context), head,
                                 weights=weights)
                    times.append(time.perf_counter() - start)
                medians.append(float(np.median(times)) * 1e3)
        alone, ring, edge = (float(np.median(blocks[w])) for w in ways)
        print(f"| {n} | {alone:.3f} | {ring:.3f} | {ring / alone:.2f} | {edge:.3f} "
              f"| {edge / ring:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
