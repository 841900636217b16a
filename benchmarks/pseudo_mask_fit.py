"""The pretrained teacher on the new categories' boxes: at the paper's 0.5 and fitted to the box.

On the fine-tune benchmark (benchmarks/finetune_quality.py), the class-agnostic teacher of the
pretrained checkpoint is applied zero-shot to the validation instances of the new categories
(from their true boxes), and its masks are thresholded three ways: at 0.5 (the paper's sigma),
and as boxmask.model.pseudo_masks.fit_to_box does on the RoI grid, at the highest threshold of
0.5, 0.475, ..., 0.025 whose mask reaches ``cover`` of the box's rows and columns (here on the
pasted image masks). Mean mask IoU beside the box as mask, overall and per category.

    .venv/bin/python benchmarks/finetune_quality.py --stage pretrain   # first
    .venv/bin/python benchmarks/pseudo_mask_fit.py [--out runs/finetune_quality_v2] [--images 60]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import finetune_quality as fq  # a sibling script, importable when this one runs
import numpy as np


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def fitted(probs: np.ndarray, box: list[float], cover: float) -> np.ndarray:
    x1, y1, x2, y2 = (round(v) for v in box)
    sub = probs[y1:y2, x1:x2]
    for t in np.arange(0.5, 0.0, -0.025):
        m = sub >= t
        if m.size == 0 or (m.any(0).mean() >= cover and m.any(1).mean() >= cover):
            break
    out = np.zeros(probs.shape, dtype=bool)
    out[y1:y2, x1:x2] = sub >= t
    return out


def main(argv: list[str] | None = None) -> int:
    import torch
    from PIL import Image

    from boxmask.config import load_config
    from boxmask.data.coco import decode_segmentation
    from boxmask.training.trainer import build_training_data, build_training_model

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(fq.ROOT / "runs" / "finetune_quality_v2"))
    p.add_argument("--images", type=int, default=60, help="validation images to score")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out).resolve()
    paths = fq.ensure_data(out, 500)
    pre = out / "pretrain" / "checkpoint_last.pt"
    ann, images = fq.user_data(out, paths, "boxes", 0)
    cfg = load_config(fq.CONFIG, [*fq.RECIPE, *fq.FINETUNE, "model.mode=agnostic",
                                  f"model.init_from={pre}", f"data.train_annotations={ann}",
                                  f"data.train_images={images}"])
    data = build_training_data(cfg)
    model = build_training_model(cfg, data).eval()
    val = json.loads(paths["val"].read_text())
    names = {c["id"]: c["name"] for c in val["categories"]}
    by_image: dict[int, list[dict]] = {}
    for a in val["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    columns = ("box", "0.5", "fit 0.80", "fit 0.90", "fit 0.95")
    rows: dict[str, dict[str, list[float]]] = {}
    for info in val["images"][:args.images]:
        anns = [a for a in by_image.get(info["id"], []) if names[a["category_id"]] in fq.NEW]
        if not anns:
            continue
        rgb = np.asarray(Image.open(paths["val_images"] / info["file_name"]).convert("RGB"))
        image = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                               a["bbox"][1] + a["bbox"][3]] for a in anns])
        with torch.no_grad():
            probs = model.segment_boxes([image], [boxes], [torch.ones(len(anns), dtype=torch.long)])
        for a, pr, b in zip(anns, probs[0][:, 0].numpy(), boxes.tolist(), strict=True):
            gt = decode_segmentation(a["segmentation"], info["height"], info["width"]).astype(bool)
            rect = np.zeros_like(gt)
            x1, y1, x2, y2 = (round(v) for v in b)
            rect[y1:y2, x1:x2] = True
            scores = {"box": _iou(rect, gt), "0.5": _iou(pr >= 0.5, gt),
                      **{f"fit {c:.2f}": _iou(fitted(pr, b, c), gt) for c in (0.8, 0.9, 0.95)}}
            for key in ("all", names[a["category_id"]]):
                for col, v in scores.items():
                    rows.setdefault(key, {}).setdefault(col, []).append(v)
    print(f"zero-shot teacher of {pre}, mean IoU on the new categories' validation instances")
    print("| instances | n | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for key, cols in rows.items():
        print(f"| {key} | {len(cols['box'])} | "
              + " | ".join(f"{np.mean(cols[c]):.3f}" for c in columns) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
