"""How right are `boxmask label`'s masks? Mean IoU against the true masks, beside the box.

Generates a fresh synthetic dataset (a seed no model trained on), removes its masks, runs
`boxmask label` on the box-only copy exactly as a user would (the CLI, in a subprocess), then
scores every output mask against the true one. The box-as-mask baseline (each box's rectangle)
is scored on the same instances: the labeler is worth its margin over it.

    python benchmarks/label_quality.py --model synthetic-demo --scene clear --seed 7 --images 100

Prints a markdown table; ``--json FILE`` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def box_only_copy(root: Path, scene: str, seed: int, images: int, size: int,
                  version: int | None = None) -> tuple[Path, Path, Path]:
    """``(true annotations, box-only annotations, images folder)`` of a fresh synthetic set
    (``version``: the generator's, default the newest)."""
    from boxmask.data.synthetic import GENERATOR_VERSION, generate

    generate(root / "synth", seed=seed, num_train=1, num_val=images, image_size=size, scene=scene,
             version=GENERATOR_VERSION if version is None else version)
    truth = root / "synth" / "annotations" / "instances_val.json"
    coco = json.loads(truth.read_text())
    for ann in coco["annotations"]:
        ann.pop("segmentation")
    boxes = root / "boxes.json"
    boxes.write_text(json.dumps(coco))
    return truth, boxes, root / "synth" / "images" / "val"


def score(truth: Path, labeled: Path) -> dict:
    """Mean mask IoU of the labeled masks and of the boxes, by seen/unseen (the model card's
    flags, matched by category name) and overall."""
    from pycocotools import mask as mask_utils

    gt = json.loads(truth.read_text())
    out = json.loads(labeled.read_text())
    by_id = {a["id"]: a for a in out["annotations"]}
    suggested = {c["name"]: c.get("suggested_seen") for c in gt["categories"]}
    names = {c["id"]: c["name"] for c in gt["categories"]}
    ious: dict[str, list[float]] = {"seen": [], "unseen": []}
    boxes: dict[str, list[float]] = {"seen": [], "unseen": []}
    missing = 0
    for ann in gt["annotations"]:
        side = "seen" if suggested[names[ann["category_id"]]] else "unseen"
        h, w = ann["segmentation"]["size"]
        true = [ann["segmentation"]]
        x, y, bw, bh = ann["bbox"]
        rect = mask_utils.frPyObjects(np.array([[x, y, bw, bh]], dtype=np.float64), h, w)
        boxes[side].append(float(mask_utils.iou(rect, true, [0])[0][0]))
        seg = (by_id.get(ann["id"]) or {}).get("segmentation")
        if not isinstance(seg, dict):  # no mask written for it: IoU 0
            missing += 1
            ious[side].append(0.0)
            continue
        ious[side].append(float(mask_utils.iou([seg], true, [0])[0][0]))

    def mean(d: dict[str, list[float]]) -> dict[str, float]:
        return {"seen": float(np.mean(d["seen"])), "unseen": float(np.mean(d["unseen"])),
                "all": float(np.mean(d["seen"] + d["unseen"]))}

    return {"instances": {k: len(v) for k, v in ious.items()}, "without_mask": missing,
            "mean_iou": mean(ious), "box_mean_iou": mean(boxes)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="synthetic-demo", help="bundled name or model folder")
    parser.add_argument("--scene", default="clear", choices=("clear", "dense"))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--generator-version", type=int, default=None,
                        help="the synthetic generator's version (default the newest; the bundled "
                             "demo model was trained on version 1)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        truth, boxes, images = box_only_copy(root, args.scene, args.seed, args.images, args.size,
                                            args.generator_version)
        labeled = root / "labeled.json"
        subprocess.run([sys.executable, "-m", "boxmask.cli", "label", "--coco", str(boxes),
                        "--images", str(images), "--out", str(labeled), "--model", args.model],
                       check=True, stdout=subprocess.DEVNULL)
        result = {"model": args.model, "scene": args.scene, "seed": args.seed,
                  "images": args.images, **score(truth, labeled)}
    m, b = result["mean_iou"], result["box_mean_iou"]
    print(f"`boxmask label --model {args.model}` on a box-only copy of a fresh {args.scene} set "
          f"(seed {args.seed}, {args.images} images, {sum(result['instances'].values())} instances)\n")
    print("| masks | mean IoU seen | unseen | all |\n|---|---|---|---|")
    print(f"| boxmask label | {m['seen']:.3f} | {m['unseen']:.3f} | {m['all']:.3f} |")
    print(f"| box as mask | {b['seen']:.3f} | {b['unseen']:.3f} | {b['all']:.3f} |")
    print(f"| margin | {m['seen'] - b['seen']:+.3f} | {m['unseen'] - b['unseen']:+.3f} "
          f"| {m['all'] - b['all']:+.3f} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
