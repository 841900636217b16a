"""The mask-resolution ceiling: true masks cropped onto their boxes and pasted back.

A mask head predicts an R x R grid over each box; inference pastes that grid into the image.
Before any learning, the crop (how training targets are sampled) and the paste (how inference
puts a grid back) bound what a perfect head can reach: this script crops every true mask of the
validation set onto its own box exactly as training does, pastes it back, and prints the mean
IoU with the true mask, for each pairing of target grid and paste:

- grid ``torchvision``: ``roi_align(aligned=False)``, torchvision's ``project_masks_on_boxes``
  (``model.mask_target_aligned: false``); grid ``aligned``: ``aligned=True`` (the default).
- paste ``torchvision``: ``paste_masks_in_image`` (grid padded by a cell, box grown and
  truncated to integers); paste ``aligned``: boxmask/model/paste.py (Detectron2's
  ``grid_sample`` paste, what the torch model and the runtime use); ``aligned + offset``: the
  same at the box moved half a pixel down-right, how a torchvision-grid model is pasted (the
  images are not resized here, so half a resized pixel is half a pixel).

    .venv/bin/python benchmarks/paste_ceiling.py                      # data/clear128 val
    .venv/bin/python benchmarks/paste_ceiling.py --data data/dense128

No timing: the figures are exact functions of the data. The box-as-mask baseline of the same
instances is printed beside them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torchvision.models.detection.roi_heads import paste_masks_in_image

from boxmask.model.paste import grid_offset, paste_masks
from boxmask.model.pseudo_masks import project_masks_on_rois

ROOT = Path(__file__).resolve().parents[1]


def load(data: Path) -> list[tuple[np.ndarray, torch.Tensor, np.ndarray]]:
    """Every validation instance: its mask ``[H, W]`` bool, its xyxy box ``[1, 4]`` and the
    box's rectangle as a mask (pycocotools, as boxmask.evaluation's box-as-mask baseline)."""
    coco = COCO(str(data / "annotations" / "instances_val.json"))
    out = []
    for ann in coco.loadAnns(coco.getAnnIds(iscrowd=False)):
        info = coco.imgs[ann["image_id"]]
        x, y, bw, bh = ann["bbox"]
        xywh = np.array([[x, y, bw, bh]], dtype=np.float64)
        rect = mask_utils.decode(mask_utils.frPyObjects(xywh, info["height"],
                                                        info["width"])[0]).astype(bool)
        out.append((coco.annToMask(ann).astype(bool),
                    torch.tensor([[x, y, x + bw, y + bh]], dtype=torch.float32), rect))
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def ceiling(instances, size: int, aligned: bool, paste: str) -> float:
    ious = []
    for mask, box, _ in instances:
        h, w = mask.shape
        cells = project_masks_on_rois(torch.from_numpy(mask)[None], box, torch.tensor([0]),
                                      size, aligned=aligned)[:, None]
        if paste == "torchvision":
            back = paste_masks_in_image(cells, box, (h, w))[0, 0].numpy() > 0.5
        else:
            # "aligned + offset": the paste the runtime gives a torchvision-grid model.
            offset = grid_offset(paste == "aligned", (h, w), (h, w))
            back = paste_masks(cells, box, (h, w), offset)[0, 0].numpy() > 0.5
        ious.append(iou(back, mask))
    return float(np.mean(ious))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "clear128",
                        help="a `boxmask data synth` folder (default data/clear128)")
    args = parser.parse_args(argv)
    if not (args.data / "annotations" / "instances_val.json").is_file():
        parser.error(f"{args.data} has no annotations/instances_val.json: make it with "
                     "`boxmask data synth --out data/clear128 --scene clear --seed 0 "
                     "--images 1000 --val-images 100 --size 128 --generator-version 1`")
    torch.set_num_threads(1)
    instances = load(args.data)
    box = np.mean([iou(rect, mask) for mask, _, rect in instances])
    print(f"{args.data} validation: {len(instances)} instances; box as mask: {box:.3f}\n")
    print("| R | target grid | paste | mean IoU of the true mask pasted back |")
    print("|---|---|---|---|")
    for size in (28, 56):
        for grid, aligned in (("torchvision", False), ("aligned", True)):
            pastes = ("torchvision", "aligned") + (("aligned + offset",) if not aligned else ())
            for paste in pastes:
                print(f"| {size} | {grid} | {paste} | {ceiling(instances, size, aligned, paste):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
