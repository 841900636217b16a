"""Images per second of `boxmask label` against eager torchvision inference of the same model.

All in one run, on the same images and boxes:
- eager: the checkpoint rebuilt with `boxmask.model` (torchvision Mask R-CNN) and
  `model.segment_boxes` per image under `torch.inference_mode()`, then each mask thresholded
  and RLE-encoded: the script a user would write without boxmask. Timed end to end from the
  checkpoint load, as the labeler is from its model load.
- label (local): `boxmask label`'s job end to end (model load, reading, labeling, journal,
  writing the output JSON and report), at fp32 and, where the model has one, with the int8
  encoder.
- label (ray, 1 and 2 workers): the same job as a Ray Data pipeline; `ray.init` is not timed,
  starting the actors is.

    python benchmarks/label.py --checkpoint runs/demo/checkpoint_last.pt --model synthetic-demo \
        --images 40

Without --coco/--images-dir it labels the validation split of a fresh synthetic dataset with its
masks removed. Prints a markdown table (paste it into docs/benchmarks.md) and checks that every
engine wrote the same output as the local fp32 run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _box_only_dataset(root: Path, num_images: int, size: int, seed: int) -> tuple[Path, Path]:
    from boxmask.data.synthetic import generate

    generate(root / "synth", seed=seed, num_train=1, num_val=num_images, image_size=size)
    coco = json.loads((root / "synth" / "annotations" / "instances_val.json").read_text())
    for ann in coco["annotations"]:
        ann.pop("segmentation", None)
    boxes = root / "boxes.json"
    boxes.write_text(json.dumps(coco))
    return boxes, root / "synth" / "images" / "val"


def time_eager(checkpoint: Path, coco_path: Path, images_dir: Path, threads: int) -> dict[str, Any]:
    """Eager torchvision: per image read, segment_boxes, threshold, RLE."""
    import torch
    from PIL import Image
    from pycocotools import mask as mask_utils

    from boxmask.export.exporter import load_trained_model

    torch.set_num_threads(threads)
    start = time.perf_counter()  # end to end, as the labeler's time: the model load counts
    model, _, categories, _ = load_trained_model(checkpoint)
    by_name = {c["name"]: int(c["label"]) for c in categories}
    coco = json.loads(coco_path.read_text())
    to_label = {c["id"]: by_name[c["name"]] for c in coco["categories"] if c["name"] in by_name}
    per_image: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        if ann["category_id"] in to_label:
            per_image.setdefault(ann["image_id"], []).append(ann)

    masks = 0
    with torch.inference_mode():
        for im in coco["images"]:
            anns = per_image.get(im["id"], [])
            rgb = np.asarray(Image.open(images_dir / im["file_name"]).convert("RGB"))
            if not anns:
                continue
            image = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0)
            boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                   a["bbox"][1] + a["bbox"][3]] for a in anns], dtype=torch.float32)
            labels = torch.tensor([to_label[a["category_id"]] for a in anns], dtype=torch.int64)
            probs = model.segment_boxes([image], [boxes], [labels])[0]
            binary = (probs[:, 0] >= 0.5).numpy().astype(np.uint8)
            for m in binary:
                mask_utils.encode(np.asfortranarray(m))
            masks += len(anns)
    seconds = time.perf_counter() - start
    return {"engine": "eager torchvision (segment_boxes)", "seconds": seconds,
            "images": len(coco["images"]), "masks": masks}


def time_label(coco: Path, images_dir: Path, model: str, out: Path, engine: str = "local",
               workers: int = 2, precision: str = "fp32") -> dict[str, Any]:
    from boxmask.labeling import LabelOptions, run_label_job

    options = LabelOptions(coco=coco, images=images_dir, out=out, model=model, engine=engine,
                           workers=workers, precision=precision, progress=False,
                           images_per_batch=4)
    start = time.perf_counter()
    report = run_label_job(options)
    seconds = time.perf_counter() - start
    name = f"boxmask label --engine {engine}" + (f" --workers {workers}" if engine == "ray" else "")
    if precision != "fp32":
        name += f" --precision {precision}"
    return {"engine": name, "seconds": seconds, "images": report["summary"]["images"],
            "masks": report["summary"]["annotations_masked"], "out": out, "precision": precision}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="the checkpoint the exported model was made from (for eager)")
    parser.add_argument("--model", default=None, help="exported model directory or bundled name")
    parser.add_argument("--coco", type=Path, help="box-only COCO JSON (default: synthetic)")
    parser.add_argument("--images-dir", type=Path, help="its images folder")
    parser.add_argument("--images", type=int, default=40, help="synthetic images to generate")
    parser.add_argument("--size", type=int, default=256, help="synthetic image side")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads for eager (ONNX Runtime uses its default)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray engine")
    parser.add_argument("--repeats", type=int, default=3, help="runs per engine (the fastest counts)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    from boxmask.labeling.model_source import resolve_model_dir
    from boxmask.runtime.card import ModelCard

    model_dir = resolve_model_dir(args.model)
    card = ModelCard.load(model_dir, verify=False)
    with tempfile.TemporaryDirectory(prefix="boxmask-bench-label-") as tmp:
        root = Path(tmp)
        if args.coco:
            coco, images_dir = args.coco, args.images_dir
        else:
            coco, images_dir = _box_only_dataset(root, args.images, args.size, args.seed)

        # Each engine runs `repeats` times, the order reversed every round, and the fastest
        # run counts: on a shared machine other jobs only ever slow a run down.
        runs: dict[str, list[dict[str, Any]]] = {}
        jobs: list[tuple[str, Any]] = [
            ("eager", lambda r: time_eager(args.checkpoint, coco, images_dir, args.threads)),
            ("local", lambda r: time_label(coco, images_dir, str(model_dir), root / f"local{r}.json"))]
        if any(k.endswith("_int8") for k in card.files):
            jobs.append(("int8", lambda r: time_label(coco, images_dir, str(model_dir),
                                                      root / f"int8{r}.json", precision="int8")))
        if not args.no_ray:
            import ray

            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
            for workers in (1, 2):
                jobs.append((f"ray{workers}", lambda r, w=workers: time_label(
                    coco, images_dir, str(model_dir), root / f"ray{w}_{r}.json", engine="ray",
                    workers=w)))
        for r in range(args.repeats):
            for key, job in (jobs if r % 2 == 0 else jobs[::-1]):
                runs.setdefault(key, []).append(job(r))
        if not args.no_ray:
            ray.shutdown()

        rows = []
        for key, _ in jobs:
            row = dict(min(runs[key], key=lambda row: row["seconds"]))
            row["seconds_all"] = [round(x["seconds"], 2) for x in runs[key]]
            outs = [x.get("out") for x in runs[key]]
            row["out"] = outs[0]
            row["all_outputs_equal"] = outs[0] is None or len({Path(o).read_bytes() for o in outs}) == 1
            rows.append(row)
        reference = Path(rows[1]["out"]).read_bytes()
        for row in rows:
            out = row.pop("out", None)
            if out is not None and row.get("precision") == "fp32":
                # int8 changes the numbers, so only fp32 engines must agree byte for byte.
                row["same_output_as_local"] = Path(out).read_bytes() == reference
            row["images_per_s"] = row["images"] / row["seconds"]
            if not row.pop("all_outputs_equal"):
                row["same_output_as_local"] = False  # a repeat of this engine differed
        base = rows[0]["images_per_s"]
        print(f"\nmodel {card.name} ({model_dir}), {rows[0]['images']} images, "
              f"{platform.machine()} x{os.cpu_count()} CPUs, eager threads {args.threads}, "
              f"fastest of {args.repeats} runs each\n")
        print("| engine | images/s | × eager | masks | same output as local fp32 | seconds of each run |")
        print("|---|---:|---:|---:|---|---|")
        for row in rows:
            same = row.get("same_output_as_local")
            print(f"| {row['engine']} | {row['images_per_s']:.2f} | {row['images_per_s'] / base:.2f} | "
                  f"{row['masks']} | {'—' if same is None else ('yes' if same else 'no')} | "
                  f"{', '.join(str(x) for x in row['seconds_all'])} |")
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
