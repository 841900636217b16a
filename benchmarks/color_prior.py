"""How right is BoxInst's colour prior on a synthetic set? (boxmask/model/box_losses.py)

For every validation instance: of the pixel pairs (each pixel inside the instance's box and its 8
neighbours ``PAIRWISE_DILATION`` pixels away) whose Lab colour similarity is >= ``COLOR_TAU``
(the edges the pairwise term enforces), the share that join pixels of the same label (both in
the true mask, or both out of it); and the share of all pairs the prior keeps, inside the mask
and in the box outside it. Whole images, not RoI grids.

    python benchmarks/color_prior.py --data data/clear_v2128 --images 60
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO

from boxmask.model.box_losses import COLOR_TAU, color_similarity, neighbours
from boxmask.runtime.prompted_masks import box_rectangle


def measure(data: Path, images: int) -> dict[str, dict[str, float]]:
    """Per side (seen / unseen): ``edges`` (pairs kept inside boxes), ``same_label`` (their
    share joining pixels of one label), ``kept_inside`` and ``kept_outside`` (the share of all
    pairs kept inside the masks, and in the boxes outside them)."""
    coco = COCO(str(data / "annotations" / "instances_val.json"))
    sums: dict[str, Counter[str]] = {}
    for img_id in sorted(coco.imgs)[:images]:
        info = coco.imgs[img_id]
        rgb = np.asarray(Image.open(data / "images" / "val" / info["file_name"]).convert("RGB"),
                         dtype=np.float32)
        kept = color_similarity(torch.from_numpy(rgb).permute(2, 0, 1)[None])[0] >= COLOR_TAU
        for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id)):
            mask = torch.from_numpy(coco.annToMask(a)).bool()
            box = torch.from_numpy(box_rectangle(a["bbox"], info["height"], info["width"]))
            same = neighbours(mask[None, None].float())[0, 0] == mask[None].float()
            edges = kept & box[None]
            bg = box & ~mask
            # The generator's suggested split (the one every run on these sets trains with).
            side = "seen" if coco.cats[a["category_id"]]["suggested_seen"] else "unseen"
            r = sums.setdefault(side, Counter())
            r["same_edges"] += int((edges & same).sum())
            r["edges"] += int(edges.sum())
            r["kept_in_mask"] += int(kept[:, mask].sum())
            r["pairs_in_mask"] += int(mask.sum()) * kept.shape[0]
            r["kept_in_bg"] += int(kept[:, bg].sum())
            r["pairs_in_bg"] += int(bg.sum()) * kept.shape[0]
    return {side: {"edges": r["edges"], "same_label": r["same_edges"] / max(r["edges"], 1),
                   "kept_inside": r["kept_in_mask"] / max(r["pairs_in_mask"], 1),
                   "kept_outside": r["kept_in_bg"] / max(r["pairs_in_bg"], 1)}
            for side, r in sorted(sums.items())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/clear_v2128"))
    parser.add_argument("--images", type=int, default=60, help="first N validation images")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("| instances | edges kept in boxes | same label | pairs kept inside the mask | "
          "pairs kept in the box outside it |")
    print("|---|---|---|---|---|")
    for side, r in measure(args.data, args.images).items():
        print(f"| {side} | {r['edges']} | {100 * r['same_label']:.2f} % | "
              f"{100 * r['kept_inside']:.1f} % | {100 * r['kept_outside']:.1f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
