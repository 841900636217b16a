"""Would a dense CRF clean an exported model's masks? Per category, on the synthetic validation set.

The paper's third sigma cleans the teacher's masks with a fully connected CRF
(`boxmask.model.pseudo_masks.dense_crf`, colour affinity on the RoI crop). Before paying for it
in training, this asks the cheaper question on a model that exists: with every ground-truth box
and label sent through the torch-free runtime, each predicted mask and the image are cropped
onto the box at the mask head's 28 x 28 grid, the mask (as a soft unary: 0.25 outside, 0.75
inside) goes through the CRF, and both are scored by IoU with the true mask on the same grid,
per category, beside the box itself (every cell). If the CRF moves a category little, its
error is not at the boundary.

    .venv/bin/python benchmarks/crf_on_masks.py                  # the bundled demo model
    .venv/bin/python benchmarks/crf_on_masks.py --model-dir models/ts --generator-version 2

Needs `boxmask[crf]`. About 20 s on one core for 100 images.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "boxmask" / "assets" / "models" / "synthetic-demo"
GRID = 28


def _crop(a: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return cv2.resize(a[y0:y1, x0:x1], (GRID, GRID), interpolation=cv2.INTER_LINEAR)


def measure(model_dir: Path, data: Path) -> dict[str, dict]:
    """``{category: {"split", "n", "model", "crf", "box"}}``: mean grid IoU x1."""
    from pycocotools.coco import COCO

    from boxmask.model.pseudo_masks import dense_crf
    from boxmask.runtime import Predictor
    from boxmask.runtime.prompted_masks import mask_iou, prompted_masks

    coco = COCO(str(data / "annotations" / "instances_val.json"))
    predictor = Predictor.from_dir(model_dir, precision="fp32")
    seen = {c.id for c in predictor.card.categories if c.seen}
    rows: dict[int, list[tuple[float, float, float]]] = {}
    images = data / "images" / "val"
    for info, anns, masks in prompted_masks(predictor, coco, images):
        image = cv2.cvtColor(cv2.imread(str(images / info["file_name"])), cv2.COLOR_BGR2RGB)
        for ann, mask in zip(anns, masks, strict=True):
            x, y, w, h = ann["bbox"]
            box = (int(x), int(y), int(np.ceil(x + w)), int(np.ceil(y + h)))
            truth = _crop(coco.annToMask(ann).astype(np.float32), box) >= 0.5
            soft = _crop(mask.astype(np.float32), box)
            cleaned = dense_crf(0.25 + 0.5 * soft, _crop(image, box)) >= 0.5
            rows.setdefault(ann["category_id"], []).append(
                (mask_iou(soft >= 0.5, truth), mask_iou(cleaned, truth),
                 mask_iou(np.ones_like(truth), truth)))
    out = {}
    for cid, values in sorted(rows.items()):
        v = np.asarray(values)
        out[coco.cats[cid]["name"]] = {"split": "seen" if cid in seen else "unseen", "n": len(v),
                                       "model": float(v[:, 0].mean()), "crf": float(v[:, 1].mean()),
                                       "box": float(v[:, 2].mean())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, default=DEMO)
    ap.add_argument("--scene", default="clear")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--val-images", type=int, default=100)
    ap.add_argument("--generator-version", type=int, default=1,
                    help="the synthetic generator's version (default 1: the bundled demo's)")
    args = ap.parse_args()

    from boxmask.data.synthetic import generate

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "synthetic"
        generate(data, seed=args.seed, num_train=1, num_val=args.val_images, image_size=args.size,
                 scene=args.scene, version=args.generator_version)
        table = measure(args.model_dir, data)
    print(f"IoU x100 with the true mask on the {GRID}x{GRID} box grid, {args.model_dir.name}, "
          f"{args.scene} val seed {args.seed}, generator version {args.generator_version}")
    print("| category | split | instances | model | CRF(model) | CRF gain | box |")
    print("|---|---|---|---|---|---|---|")
    for name, r in table.items():
        print(f"| {name} | {r['split']} | {r['n']} | {100 * r['model']:.1f} | {100 * r['crf']:.1f} "
              f"| {100 * (r['crf'] - r['model']):+.1f} | {100 * r['box']:.1f} |")


if __name__ == "__main__":
    main()
