"""How much of the unseen objects does the class-agnostic teacher learn as background?

The teacher's target for a seen instance is that instance's mask over its whole box: every
other object's pixels inside the box are background. An unseen object's pixels are never
foreground for the teacher, so the share of them that falls inside some seen instance's box is
negative supervision on exactly the categories the teacher must later segment. This prints that
share next to the same share for seen objects (which are also foreground, in their own boxes).

    python benchmarks/unseen_as_background.py data/synth128/annotations/instances_train.json \
        --seen disc square triangle cross
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np


def shares(annotations: Path, seen_names: list[str]) -> dict[str, float]:
    from pycocotools.coco import COCO

    coco = COCO(str(annotations))
    by_name = {c["name"]: int(c["id"]) for c in coco.dataset["categories"]}
    unknown = sorted(set(seen_names) - set(by_name))
    if unknown:
        raise SystemExit(f"unknown categories {unknown}; the file has {sorted(by_name)}")
    seen = {by_name[n] for n in seen_names}
    pixels = {"seen": 0, "unseen": 0}
    inside = {"seen": 0, "unseen": 0}
    for image_id in coco.getImgIds():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=False))
        info = coco.imgs[image_id]
        seen_boxes = [(a, a["bbox"]) for a in anns if a["category_id"] in seen]
        for a in anns:
            mask = coco.annToMask(a).astype(bool)
            cover = np.zeros((info["height"], info["width"]), dtype=bool)
            for other, (x, y, w, h) in seen_boxes:
                if other is not a:
                    cover[int(y):math.ceil(y + h), int(x):math.ceil(x + w)] = True
            group = "seen" if a["category_id"] in seen else "unseen"
            pixels[group] += int(mask.sum())
            inside[group] += int((mask & cover).sum())
    return {g: inside[g] / max(pixels[g], 1) for g in pixels}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("annotations", type=Path)
    parser.add_argument("--seen", nargs="+", required=True, help="seen category names")
    args = parser.parse_args(argv)
    s = shares(args.annotations, args.seen)
    print("| objects | share of their pixels inside another seen instance's box |")
    print("|---|---|")
    for group in ("unseen", "seen"):
        print(f"| {group} | {100 * s[group]:.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
