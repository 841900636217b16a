"""`boxmask finetune`: from a model that knows some categories to masks for your box-only ones.

One command does what a user otherwise strings together: check the data, fine-tune the
checkpoint with the fine-tune recipe (benchmarks/finetune_quality.py measured it), evaluate on a
validation set with the box as mask beside every figure, export the bundle (int8 too) and say
how to serve it. A run folder holds everything:

    RUN/finetune.json     what was asked (checkpoint and data hashes, iterations): a rerun with
                          the same request resumes, another request is refused
    RUN/train/            the training run (checkpoints every 100 iterations: resumable)
    RUN/evaluation.json   box-prompted mean IoU per category, beside the box
    RUN/model/            the exported bundle (`boxmask serve --model-dir RUN/model`)

The recipe (``RECIPE``): categories seen as the data says, instance by instance (an annotation
with a mask supervises the student and trains the teacher; one without gets the teacher's
cleaned pseudo-mask, thresholded down to where it reaches its box's sides (a teacher pretrained
where the new categories were background scores them low) and refined by the dense CRF on the
image's colours, or for a category the checkpoint already segments, the checkpoint's own mask); the pseudo-masks also cleaned of the
checkpoint's masks of the image's objects of known categories; four rounds of self-training
(from the second on, the last round's student makes the pseudo-masks in the teacher's place);
the checkpoint's categories held by Learning without Forgetting's term on every positive; the
backbone, FPN and pixel stem kept as they are, so the teacher reads the features it was trained
on; the teacher kept too when no instance has a mask; AdamW. The bundle serves the categories
learned from boxes alone fitted to their box (``model.served_mask_fit``), as their pseudo-masks
were, and every mask refined by the dense CRF on the image (``model.served_crf``, applied by
the runtime: +0.025 to +0.028 box-prompted mIoU on the new categories and +0.028 on the old in
each of three seeds of the fine-tune benchmark, docs/results.md).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boxmask.config import BoxMaskConfig, ConfigError, load_config
from boxmask.files import sha256_file

# The fine-tune recipe: model and train settings over the checkpoint's own model section.
RECIPE: dict[str, dict[str, Any]] = {
    "model": {"mode": "teacher_student", "sigma": "crf", "known_targets": "checkpoint",
              "teacher_ignore_unseen_boxes": True, "frozen": ["backbone", "pixel_stem"],
              "pseudo_mask_fit": "box", "clean_with_known_masks": True, "known_distill": "all",
              "served_mask_fit": "box", "served_crf": True},
    "train": {"optimizer": "adamw", "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.01,
              "batch_size": 4, "warmup_iters": 50, "warmup_factor": 0.001, "gamma": 0.1,
              "log_every": 25, "keep_checkpoints": 1, "checkpoint_every_iters": 100},
}
# Iterations by default: 12 passes over the data, within these bounds (1500: under an hour on
# 2 CPU cores for the synthetic benchmark's model).
MIN_ITERATIONS, MAX_ITERATIONS = 200, 1500
# Rounds of self-training in the run (model.self_train_every = iterations / ROUNDS): from the
# second on, the last round's student makes the box-only instances' pseudo-masks.
ROUNDS = 4


@dataclass
class FinetuneRequest:
    checkpoint: Path
    coco: Path
    images: Path
    out: Path
    val_coco: Path | None = None
    val_images: Path | None = None
    iterations: int | None = None
    overrides: Sequence[str] = ()
    int8: bool = True
    # Keep every category the checkpoint knows, also those the COCO file lacks or gives no box:
    # the model then knows the checkpoint's categories and the file's (the Label Studio loop's
    # project versions). Without it the model knows the file's categories only.
    keep_categories: bool = False


def _read_coco(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigError(f"{what} {str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "annotations", "categories")):
        raise ConfigError(f"{what} {str(path)!r} is not a COCO instances file (it needs lists "
                          "'images', 'annotations' and 'categories')")
    return data


def _norm(name: object) -> str:
    return " ".join(str(name).strip().lower().split())


def with_checkpoint_categories(coco: dict[str, Any], ckpt: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``coco`` with the checkpoint's categories that it lacks (matched by name) appended, each
    under the checkpoint's id when that id is free, else a new one; and their names."""
    have = {_norm(c.get("name")) for c in coco["categories"]}
    used = {c.get("id") for c in coco["categories"]}
    added, categories = [], list(coco["categories"])
    next_id = max([int(i) for i in used if isinstance(i, int)] + [0]) + 1
    for c in ckpt.get("categories") or []:
        if _norm(c.get("name")) in have:
            continue
        cid = c.get("id")
        if not isinstance(cid, int) or cid in used:
            cid, next_id = next_id, next_id + 1
        used.add(cid)
        categories.append({"id": cid, "name": str(c["name"]), "supercategory": "kept"})
        added.append(str(c["name"]))
    return {**coco, "categories": categories}, added


def check_data(coco: dict[str, Any], images: Path, what: str,
               may_be_empty: frozenset[str] = frozenset()) -> None:
    """Refuse, with one line, data a fine-tune cannot use: a missing images folder, images that
    are missing or unreadable, a category without a single box."""
    from PIL import Image

    if not images.is_dir():
        raise ConfigError(f"{what}: images folder {str(images)!r} does not exist")
    bad: list[str] = []
    for info in coco["images"]:
        path = images / str(info.get("file_name", ""))
        try:
            with Image.open(path) as im:
                im.verify()
        except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for a bad file
            bad.append(f"{info.get('file_name')!r} ({type(exc).__name__})")
    if bad:
        raise ConfigError(f"{what}: {len(bad)} images are missing or unreadable under "
                          f"{str(images)!r}, e.g. {', '.join(bad[:3])}")
    with_boxes = {a.get("category_id") for a in coco["annotations"]
                  if isinstance(a, dict) and a.get("bbox")}
    empty = [str(c.get("name")) for c in coco["categories"]
             if c.get("id") not in with_boxes and str(c.get("name")) not in may_be_empty]
    if empty:
        raise ConfigError(f"{what}: categories without a single box: {', '.join(empty)}; "
                          "give each category at least one annotated box, or remove it")


def default_iterations(num_images: int, batch_size: int) -> int:
    """12 passes over the data, at least MIN_ITERATIONS and at most MAX_ITERATIONS."""
    per_epoch = max(1, math.ceil(num_images / batch_size))
    return int(min(MAX_ITERATIONS, max(MIN_ITERATIONS, 12 * per_epoch)))


def build_config(request: FinetuneRequest, ckpt: dict[str, Any], num_images: int
                 ) -> tuple[BoxMaskConfig, int]:
    """The training config: the checkpoint's model section, the recipe, the request's data,
    a schedule over ``iterations`` (lr x0.1 for the last twelfth), then the overrides."""
    stored = ckpt.get("config") or {}
    model = dict(stored.get("model") or {})
    if not model:
        raise ConfigError(f"{str(request.checkpoint)!r} stores no model config: it was not "
                          "written by `boxmask train` or `boxmask import torchvision`")
    model.update(RECIPE["model"])
    model["init_from"] = str(request.checkpoint)
    batch = RECIPE["train"]["batch_size"]
    iterations = request.iterations or default_iterations(num_images, batch)
    per_epoch = max(1, math.ceil(num_images / batch))
    epochs = max(1, math.ceil(iterations / per_epoch))
    per_epoch = math.ceil(iterations / epochs)
    tree = {
        "data": {"train_annotations": str(request.coco), "train_images": str(request.images),
                 "val_annotations": str(request.val_coco) if request.val_coco else None,
                 "val_images": str(request.val_images) if request.val_images else None,
                 "seen": "auto", "horizontal_flip": 0.5},
        "model": model,
        "train": {**RECIPE["train"], "epochs": epochs, "max_iters_per_epoch": per_epoch,
                  "lr_steps": [epochs - max(1, epochs // 12)] if epochs > 1 else [],
                  "output_dir": str(request.out / "train"), "seed": 0},
    }
    model["self_train_every"] = max(1, epochs * per_epoch // ROUNDS)
    cfg = load_config(None, list(request.overrides), base=tree)
    return cfg, epochs * per_epoch


def _describe(request: FinetuneRequest, iterations: int) -> dict[str, Any]:
    return {"checkpoint": str(request.checkpoint), "checkpoint_sha256": sha256_file(request.checkpoint),
            "coco": str(request.coco), "coco_sha256": sha256_file(request.coco),
            "images": str(request.images), "iterations": iterations,
            "keep_categories": request.keep_categories,
            "overrides": list(request.overrides)}


def _claim_run(out: Path, description: dict[str, Any]) -> bool:
    """Write ``finetune.json`` for a new run; for an existing one, check it is this request.
    Returns True when the run resumes."""
    spec = out / "finetune.json"
    if spec.is_file():
        before = json.loads(spec.read_text())
        differ = [k for k in description if before.get(k) != description[k]]
        if differ:
            raise ConfigError(f"{str(out)!r} holds a fine-tune of another request (it differs in "
                              f"{', '.join(differ)}): choose another --out, or remove it")
        return True
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {str(out)!r} exists and is not a fine-tune run folder: "
                          "choose an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    tmp = spec.with_suffix(".tmp")
    tmp.write_text(json.dumps(description, indent=1))
    os.replace(tmp, spec)
    return False


def evaluate_run(checkpoint: Path, cfg: BoxMaskConfig) -> dict[str, Any] | None:
    """Box-prompted mean IoU on the validation set, per category and by whether the category
    had masks in training, beside the box; None when the set has no mask to compare with."""
    from boxmask.evaluation.run import evaluate_checkpoint

    val = json.loads(Path(cfg.data.val_annotations).read_text())  # type: ignore[arg-type]
    if not any(isinstance(a, dict) and a.get("segmentation") for a in val["annotations"]):
        return None
    report = evaluate_checkpoint(checkpoint, out_dir=checkpoint.parent / "eval",
                                 overrides=["eval.plots=false"], progress=False)
    bp = report["box_prompted"]
    box_by_cat = {c["name"]: c["mean_iou"] for c in bp["box_baseline"]["by_category"]}
    return {
        "mean_iou": bp["mean_iou"], "box_mean_iou": bp["box_baseline"]["mean_iou"],
        "by_category": [{"name": c["name"], "had_masks": c["seen"],
                         "instances": c["num_instances"], "mean_iou": c["mean_iou"],
                         "box_mean_iou": box_by_cat.get(c["name"])}
                        for c in bp["by_category"]],
        "detection_mask_ap": (report.get("segm") or {}).get("all", {}).get("AP"),
    }


def finetune(request: FinetuneRequest, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole fine-tune; returns ``{"model_dir", "evaluation", "iterations"}``.

    Raises ConfigError (one line, nothing half-written in RUN/model) on bad input.
    """
    import torch

    from boxmask.export.errors import ExportError
    from boxmask.export.exporter import export_checkpoint
    from boxmask.model.checkpoint import load_checkpoint
    from boxmask.training.trainer import train

    if not request.checkpoint.is_file():
        raise ConfigError(f"--from {str(request.checkpoint)!r} does not exist")
    try:
        ckpt = load_checkpoint(request.checkpoint)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch.load's many kinds of refusal
        raise ConfigError(f"--from {str(request.checkpoint)!r} is not a boxmask checkpoint "
                          f"({type(exc).__name__}); write one with `boxmask train` or "
                          "`boxmask import torchvision`") from None
    coco = _read_coco(request.coco, "--coco")
    kept: list[str] = []
    if request.keep_categories:
        coco, kept = with_checkpoint_categories(coco, ckpt)
    known = frozenset(str(c.get("name")) for c in ckpt.get("categories") or [])
    check_data(coco, request.images, "--coco",
               may_be_empty=known if request.keep_categories else frozenset())
    if (request.val_coco is None) != (request.val_images is None):
        raise ConfigError("give both --val-coco and --val-images, or neither")
    if request.val_coco is not None:
        val = _read_coco(request.val_coco, "--val-coco")
        assert request.val_images is not None
        check_data({**val, "categories": []}, request.val_images, "--val-coco")
    train_request = request
    if kept:
        from dataclasses import replace

        train_request = replace(request, coco=request.out / "train_coco.json")
    cfg, iterations = build_config(train_request, ckpt, len(coco["images"]))
    resumed = _claim_run(request.out, _describe(request, iterations))
    if kept:
        # The file the run trains on: yours, with the checkpoint's other categories listed.
        tmp = train_request.coco.with_suffix(".tmp")
        tmp.write_text(json.dumps(coco))
        os.replace(tmp, train_request.coco)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    say(f"{'resuming' if resumed else 'fine-tuning'} {request.checkpoint.name} on "
        f"{len(coco['images'])} images, {iterations} iterations on {device}")
    last = train(cfg, resume=Path("auto"))

    evaluation = None
    if cfg.data.val_annotations is not None:
        evaluation = evaluate_run(last, cfg)
        if evaluation is None:
            say("the validation set has no masks: quality was not measured")
        else:
            (request.out / "evaluation.json").write_text(json.dumps(evaluation, indent=1))
    model_dir = request.out / "model"
    try:
        card = export_checkpoint(last, model_dir, name=request.out.name or "finetuned",
                                 int8=request.int8, images=request.images,
                                 provenance={"finetune": {**_describe(request, iterations),
                                                          "evaluation": evaluation}})
    except ExportError as exc:
        raise ConfigError(f"export failed: {exc}") from None
    return {"model_dir": model_dir, "evaluation": evaluation, "iterations": iterations,
            "card": card}
