"""Measure an exported model's box-prompted masks on a synthetic validation split and write the
figures beside the model as ``evaluation.json`` (the bundled demo model ships one).

The split is generated afresh from its recipe (``boxmask.data.synthetic.generate``: a split's
images depend only on the seed, the split and the image index, so this is the very validation
split the model was trained beside), every ground-truth box is sent with its label through the
torch-free runtime, and each mask is scored by its IoU with the true mask. Beside the model's
figures: the box-as-mask baseline (each box's rectangle as its mask), the int8 graphs' figures
and how far their masks are from the fp32 ones. The record names the files it measured
(sha256), so a test can tell figures of another model from a regression of this one.

    .venv/bin/python scripts/evaluate_demo_model.py [--model-dir boxmask/assets/models/synthetic-demo]

`scripts/build_demo_model.sh` runs it after the export; tests/test_bundled_model.py and the
tests that read `evaluation.json` check the shipped model against it. About 15 s on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime
import json
import tempfile
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from boxmask.runtime.prompted_masks import box_rectangle, mask_iou, prompted_masks

REPO = Path(__file__).resolve().parents[1]
# int8 against fp32 depends on the CPU's int8 kernels: ONNX Runtime's u8 x s8 products saturate
# in 16 bits on x86 without VNNI (AVX2 only), so the agreement is recorded per kind of CPU.
NO_VNNI_KEY = "mask_iou_vs_fp32_without_vnni"


def cpu_has_vnni() -> bool:
    """x86 VNNI (AVX-512 or AVX) per /proc/cpuinfo; True where it cannot be read or off x86."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True
    return "avx512_vnni" in flags or "avx_vnni" in flags or "avx" not in flags
DEMO = REPO / "boxmask" / "assets" / "models" / "synthetic-demo"


def evaluate(model_dir: Path, coco_json: Path, images: Path) -> dict:
    from boxmask.runtime import Predictor

    coco = COCO(str(coco_json))
    ious: dict[str, dict[str, list[float]]] = {}
    by_cat: dict[str, dict[int, list[float]]] = {"fp32": {}, "box_as_mask": {}}
    masks: dict[str, dict[int, np.ndarray]] = {}
    seen_ids: set[int] = set()
    for precision in ("fp32", "int8"):
        predictor = Predictor.from_dir(model_dir, precision=precision)
        seen_ids = {c.id for c in predictor.card.categories if c.seen}
        ious[precision], masks[precision] = {"seen": [], "unseen": []}, {}
        ious.setdefault("box_as_mask", {"seen": [], "unseen": []})
        for info, anns, pred_masks in prompted_masks(predictor, coco, images):
            for ann, mask in zip(anns, pred_masks, strict=True):
                truth = coco.annToMask(ann).astype(bool)
                side = "seen" if ann["category_id"] in seen_ids else "unseen"
                ious[precision][side].append(mask_iou(mask, truth))
                masks[precision][ann["id"]] = mask
                if precision == "fp32":
                    rect = box_rectangle(ann["bbox"], info["height"], info["width"])
                    ious["box_as_mask"][side].append(mask_iou(rect, truth))
                    by_cat["fp32"].setdefault(ann["category_id"], []).append(ious["fp32"][side][-1])
                    by_cat["box_as_mask"].setdefault(ann["category_id"], []).append(
                        ious["box_as_mask"][side][-1])

    def means(values: dict[str, list[float]]) -> dict[str, float]:
        return {side: float(np.mean(v)) for side, v in values.items()}

    record = {kind: {"mean_iou": means(v)} for kind, v in ious.items()}
    record["int8"]["mask_iou_vs_fp32"] = float(np.mean(
        [mask_iou(m, masks["int8"][i]) for i, m in masks["fp32"].items()]))
    record["instances"] = {side: len(v) for side, v in ious["fp32"].items()}
    # Per category, beside the box: a split's mean can hide a shape the model does worse on
    # than the box the user drew.
    names = {c.id: c.name for c in predictor.card.categories}
    record["by_category"] = [
        {"name": names.get(cid, str(cid)), "seen": cid in seen_ids, "instances": len(v),
         "mean_iou": float(np.mean(v)), "box_as_mask": float(np.mean(by_cat["box_as_mask"][cid]))}
        for cid, v in sorted(by_cat["fp32"].items())]
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, default=DEMO)
    ap.add_argument("--scene", default="dense", help="the synthetic set's scene preset")
    ap.add_argument("--seed", type=int, default=0, help="the synthetic set's seed")
    ap.add_argument("--size", type=int, default=128, help="the synthetic set's image size")
    ap.add_argument("--val-images", type=int, default=100, help="images in the validation split")
    ap.add_argument("--generator-version", type=int, default=None,
                    help="the synthetic generator's version the model was trained on (default the "
                         "newest; the bundled demo model: 1)")
    ap.add_argument("--out", type=Path, help="default: MODEL_DIR/evaluation.json")
    args = ap.parse_args()

    from boxmask.data.synthetic import GENERATOR_VERSION, generate

    card = json.loads((args.model_dir / "model.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "synthetic"
        version = GENERATOR_VERSION if args.generator_version is None else args.generator_version
        stats = generate(data, seed=args.seed, num_train=1, num_val=args.val_images,
                         image_size=args.size, scene=args.scene, version=version)
        figures = evaluate(args.model_dir, data / "annotations" / "instances_val.json",
                           data / "images" / "val")
    record = {
        "what": "box-prompted masks: every ground-truth box of the split sent with its label "
                "through the torch-free runtime, mean IoU of each mask with the true mask",
        "measured": datetime.date.today().isoformat(),
        "command": (f"python scripts/evaluate_demo_model.py --scene {args.scene} --seed "
                    f"{args.seed} --size {args.size} --val-images {args.val_images} "
                    f"--generator-version {stats['generator_version']}"),
        "model": card["name"],
        "model_files": {k: v["sha256"] for k, v in card["files"].items()},
        "dataset": {"generator": "boxmask.data.synthetic.generate",
                    "generator_version": stats["generator_version"], "scene": args.scene,
                    "seed": args.seed,
                    "image_size": args.size, "split": "val", "images": args.val_images},
        **figures,
    }
    out = args.out or args.model_dir / "evaluation.json"
    # The agreement measured here goes under this CPU's key; the other kind's figure of the same
    # model files (an earlier record) is kept.
    earlier = json.loads(out.read_text()) if out.is_file() else {}
    same_files = earlier.get("model_files") == record["model_files"]
    here = record["int8"].pop("mask_iou_vs_fp32")
    kept = {k: v for k, v in (earlier.get("int8") or {}).items()
            if same_files and k in ("mask_iou_vs_fp32", NO_VNNI_KEY)}
    # A CPU kind without a measurement gets none (never the other kind's figure under its key).
    kept[("mask_iou_vs_fp32" if cpu_has_vnni() else NO_VNNI_KEY)] = here
    record["int8"] = {**record["int8"], **kept}
    # The server's figures (benchmarks/server.py --record-in) belong to the same model files.
    if same_files and "server" in earlier:
        record["server"] = earlier["server"]
    out.write_text(json.dumps(record, indent=2) + "\n")
    f, b, i8 = record["fp32"]["mean_iou"], record["box_as_mask"]["mean_iou"], record["int8"]
    print(f"mean IoU unseen / seen: fp32 {f['unseen']:.3f} / {f['seen']:.3f}, int8 "
          f"{i8['mean_iou']['unseen']:.3f} / {i8['mean_iou']['seen']:.3f}, box as mask "
          f"{b['unseen']:.3f} / {b['seen']:.3f}; int8 vs fp32 masks {here:.3f} (this CPU "
          f"{'with' if cpu_has_vnni() else 'without'} VNNI)")
    for c in record["by_category"]:
        print(f"  {c['name']:10s} {'seen' if c['seen'] else 'unseen':6s} {c['instances']:4d} "
              f"instances: {c['mean_iou']:.3f} (box {c['box_as_mask']:.3f}, "
              f"{c['mean_iou'] - c['box_as_mask']:+.3f})")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
