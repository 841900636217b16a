"""Which kernel for the served CRF: box-prompted mean IoU of an exported model's masks refined
by each candidate kernel, beside the box and the unrefined masks, on one COCO set.

    python benchmarks/crf_kernels.py --coco data/clear_v2128_tune/annotations/instances_val.json \
        --images data/clear_v2128_tune/images/val [--model-dir DIR] [--max-images N]

The set to choose on is a tuning set held out from every figure the choice is quoted with: the
`clear` scenes of generator seed 1 (`boxmask data synth --out data/clear_v2128_tune --scene
clear --seed 1 --images 4 --val-images 150 --size 128 --generator-version 2`; the demo model's
figures are on seed 0's validation split). Every ground-truth box is decoded once with its
label (the runtime, fp32, no refinement); each kernel then refines the same decoder masks
(boxmask.runtime.crf.refine_boxes, as the runtime serves them) and each mask is scored by its
IoU with the true mask. Candidates: the two served kernels (``crf``: the training sigma's,
``crf_wide``), the appearance kernel's spatial width swept on a dense window and on sparse
lattices (the wide kernel's), and the other parameters one at a time around ``crf_wide``. The
CRF's own time per mask (process CPU, all candidates alike) is printed beside each row.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "boxmask" / "assets" / "models" / "synthetic-demo"


def candidates() -> dict[str, object]:
    """Name -> CrfKernel: the served kernels, then one change at a time."""
    from boxmask.runtime.crf import KERNELS, LOCAL, WIDE, CrfKernel

    out: dict[str, CrfKernel] = {f"{name} (served)": k for name, k in KERNELS.items()}
    for sxy, near in ((3.0, 6), (4.0, 6), (6.0, 10)):
        out[f"dense window {near}, appearance width {sxy:g}"] = dataclasses.replace(
            LOCAL, appear_sxy=sxy, near=near)
    for sxy, far in ((6.0, (3, 6, 9)), (14.0, (4, 8, 13, 20)), (20.0, (3, 6, 11, 18, 27))):
        out[f"lattice {far}, appearance width {sxy:g}"] = dataclasses.replace(
            WIDE, appear_sxy=sxy, far=far)
    for field, value in (("appear_srgb", 8.0), ("appear_srgb", 20.0), ("appear_weight", 5.0),
                         ("appear_weight", 20.0), ("smooth_weight", 1.0), ("iterations", 10)):
        out[f"crf_wide, {field} {value:g}"] = dataclasses.replace(WIDE, **{field: value})
    return out


def decode(model_dir: Path, coco_json: Path, images: Path, max_images: int | None) -> list:
    """Per image: ``(prediction, pixels, true masks, seen flags)``, the masks unrefined."""
    from PIL import Image
    from pycocotools.coco import COCO

    from boxmask.runtime import Predictor
    from boxmask.runtime.prompted_masks import box_rectangle

    coco = COCO(str(coco_json))
    predictor = Predictor.from_dir(model_dir, mask_refine="none")
    size = predictor.card.preprocess
    seen = {c.id for c in predictor.card.categories if c.seen}
    items = []
    for img_id in sorted(coco.getImgIds())[:max_images]:
        info = coco.imgs[img_id]
        anns = [a for a in coco.imgToAnns[img_id] if not a.get("iscrowd")]
        if not anns:
            continue
        path = Path(images) / info["file_name"]
        pixels = np.asarray(Image.open(path).convert("RGB"))
        if max(pixels.shape[:2]) > size.max_size or min(pixels.shape[:2]) != size.min_size:
            raise SystemExit(f"{path}: this benchmark refines on the image as read, so it needs "
                             f"images at the model's own size ({size.min_size} px)")
        key = predictor.set_image(path.read_bytes())
        boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                  a["bbox"][1] + a["bbox"][3]] for a in anns]
        pred = predictor.predict(boxes, labels=[a["category_id"] for a in anns], key=key)
        truths = [coco.annToMask(a).astype(bool) for a in anns]
        rects = [box_rectangle(a["bbox"], info["height"], info["width"]) for a in anns]
        items.append((pred, pixels, truths, rects, [a["category_id"] in seen for a in anns]))
    return items


def score(items: list, kernel: object | None) -> tuple[float, float, float]:
    """Mean IoU x100 of seen and unseen masks refined by ``kernel`` (None: unrefined; "box":
    the box's rectangle), and the CRF's CPU time in ms a mask."""
    from boxmask.runtime.crf import refine_boxes
    from boxmask.runtime.prompted_masks import mask_iou

    ious: dict[bool, list[float]] = {True: [], False: []}
    spent, masks = 0.0, 0
    for pred, pixels, truths, rects, seen in items:
        if kernel == "box":
            served = rects
        else:
            probs = pred.mask_probs
            if kernel is not None:
                start = time.process_time()
                probs = refine_boxes(pixels, pred.boxes, probs, kernel)
                spent += time.process_time() - start
                masks += len(probs)
            served = list(dataclasses.replace(pred, mask_probs=probs).masks)
        for mask, truth, s in zip(served, truths, seen, strict=True):
            ious[s].append(mask_iou(mask, truth))
    return (100 * float(np.mean(ious[True])), 100 * float(np.mean(ious[False])),
            1e3 * spent / max(masks, 1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", type=Path, default=DEMO)
    p.add_argument("--coco", type=Path, required=True)
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("--max-images", type=int, default=None)
    args = p.parse_args(argv)
    items = decode(args.model_dir, args.coco, args.images, args.max_images)
    n = sum(len(i[2]) for i in items)
    print(f"{args.model_dir.name} on {args.coco}: {len(items)} images, {n} box-prompted masks\n")
    print("| masks | seen | unseen | unseen margin over the box | over crf, seen / unseen "
          "| CRF ms a mask |")
    print("|---|---|---|---|---|---|")
    box_seen, box_unseen, _ = score(items, "box")
    rows = {"box as mask": (box_seen, box_unseen, 0.0), "decoder (no CRF)": score(items, None)}
    for name, kernel in candidates().items():
        rows[name] = score(items, kernel)
    ref = rows["crf (served)"]
    for name, (seen, unseen, ms) in rows.items():
        timing = f"{ms:.2f}" if ms else ""
        print(f"| {name} | {seen:.1f} | {unseen:.1f} | {unseen - box_unseen:+.1f} "
              f"| {seen - ref[0]:+.1f} / {unseen - ref[1]:+.1f} | {timing} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
