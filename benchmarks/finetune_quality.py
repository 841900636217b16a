"""Teach it your classes: fine-tuning a pretrained model on box-only categories (issue 34).

A user's situation, on the clear synthetic scenes (generator version 2, 128 px) and the headline
recipe (configs/synth128_clear.yaml: ResNet-18-FPN, GroupNorm heads, 128-channel mask heads,
the pixel stem, AdamW):

- **Pretrained model**: teacher-student trained with masks on the four *old* shapes only (disc,
  square, triangle, cross), 1680 iterations, on images where the four *new* shapes (hexagon,
  ring, crescent, star) appear but are not annotated: background to it, as objects outside
  COCO's categories are to a COCO model. It has never been told the new shapes exist. Trained
  once (seed 0) and kept.
- **The user's dataset**: fresh images (generator seed 1), every object with its box and
  category, no mask at all (``boxes``). Variant ``replay``: the same plus the pretraining
  images with their old-category masks (a user who still has COCO). Variant ``kN``: N true
  masks per new category, chosen at random per seed (the per-instance curve).
- **Methods**, all from the one pretrained checkpoint, each a row: the box as mask; the
  pretrained class-agnostic head applied zero-shot to the new boxes; fine-tuned agnostic
  (teacher fix); fine-tuned teacher-student (threshold, teacher fix); fine-tuned oracle (the
  new categories' masks given: the ceiling).
- **Metrics**, on the user's validation images (every mask known): box-prompted mean IoU and
  mask AP on the new and the old categories, detection mask AP on the new ones, each beside
  the box; the share of the agnostic-to-oracle gap closed.

Resumable: every run keeps its folder under ``--out`` (checkpoints every 100 iterations); a
rerun skips finished runs (their ``result.json``) and resumes a cut-off one; several workers
may share the list (each takes the runs no live worker holds). Results are also kept in
benchmarks/results/finetune_quality/.

    .venv/bin/python benchmarks/finetune_quality.py --stage pretrain     # once, ~45 min, 1 thread
    .venv/bin/python benchmarks/finetune_quality.py --seeds 0 1 2        # the table
    .venv/bin/python benchmarks/finetune_quality.py --table              # only the table
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "synth128_clear.yaml"
KEPT = ROOT / "benchmarks" / "results" / "finetune_quality"
COMMAND = "python benchmarks/finetune_quality.py"

OLD = ["disc", "square", "triangle", "cross"]
NEW = ["hexagon", "ring", "crescent", "star"]

# The headline recipe (docs/results.md): GroupNorm heads, 128-channel mask heads, pixel stem.
RECIPE = ["model.head_norm=gn", "model.mask_head_channels=128", "model.mask_pixel_channels=16",
          "model.sigma=threshold", "model.teacher_ignore_unseen_boxes=true",
          "train.keep_checkpoints=1", "train.checkpoint_every_iters=100", "train.log_every=25"]
# 7 epochs of the 960 images with objects (1680 iterations), lr x0.1 for the last: the first six
# are the first six of a 12-epoch run (the schedules agree until its step), which was cut there
# to leave the session time for the fine-tunes.
PRETRAIN = ["model.mode=teacher_student", f"data.seen=[{', '.join(OLD)}]", "train.epochs=7",
            "train.lr_steps=[6]", "train.seed=0"]


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def ensure_data(out: Path, user_images: int, val_images: int = 100) -> dict[str, Path]:
    """The pretraining set (seed 0, 1000 images: the headline's own clear_v2 set), the user's
    set (seed 1) and the derived annotation files; each written once, atomically."""
    from boxmask.data.synthetic import ensure_generated

    pre_root = ROOT / "data" / "clear_v2128"
    user_root = out / "data" / (f"user_s1_{user_images}"
                                + ("" if val_images == 100 else f"_v{val_images}"))
    ensure_generated(pre_root, seed=0, num_train=1000, num_val=100, image_size=128,
                     scene="clear", version=2)
    ensure_generated(user_root, seed=1, num_train=user_images, num_val=val_images, image_size=128,
                     scene="clear", version=2)
    derived = out / "data"
    paths = {"pre_images": pre_root / "images" / "train",
             "user_images": user_root / "images" / "train",
             "val": user_root / "annotations" / "instances_val.json",
             "val_images": user_root / "images" / "val",
             "pretrain": derived / "pretrain.json"}
    if not paths["pretrain"].is_file():
        train = json.loads((pre_root / "annotations" / "instances_train.json").read_text())
        old_ids = {c["id"] for c in train["categories"] if c["name"] in OLD}
        _write_json_atomic(paths["pretrain"], {
            **train, "categories": [c for c in train["categories"] if c["id"] in old_ids],
            "annotations": [a for a in train["annotations"] if a["category_id"] in old_ids]})
    return paths


def train_run(name: str, out: Path, overrides: list[str], threads: int) -> Path:
    """Train ``CONFIG`` with the recipe and ``overrides`` into ``out`` (resumed if cut off)."""
    from boxmask.config import load_config
    from boxmask.training.trainer import train

    cfg = load_config(CONFIG, [*RECIPE, *overrides, f"train.output_dir={out}",
                               f"train.threads={threads}"])
    print(f"[{name}] training into {out}", flush=True)
    return train(cfg, resume=Path("auto"))


def _finished(out: Path) -> bool:
    return (out / "done.json").is_file()


def pretrain(args: argparse.Namespace, paths: dict[str, Path]) -> Path:
    out = Path(args.out) / "pretrain"
    ckpt = out / "checkpoint_last.pt"
    if _finished(out):
        return ckpt
    t0 = time.time()
    train_run("pretrain", out, [*PRETRAIN, f"data.train_annotations={paths['pretrain']}",
                                f"data.train_images={paths['pre_images']}",
                                f"data.val_annotations={paths['val']}",
                                f"data.val_images={paths['val_images']}"], args.threads)
    _write_json_atomic(out / "done.json", {"seconds": round(time.time() - t0, 1)})
    return ckpt


# The fine-tune recipe (benchmarks' best; `boxmask finetune` defaults to it): categories seen as
# the data says (per instance), the trunk and pixel stem kept (so the teacher's pseudo-masks
# are the checkpoint's), the checkpoint's student teaching its own categories' box-only
# instances, AdamW at the pretraining's lr.
FINETUNE = ["data.seen=auto", "model.known_targets=checkpoint",
            "model.frozen=[backbone, pixel_stem]", "train.warmup_iters=50"]
# (`boxmask finetune`'s recipe adds model.pseudo_mask_fit=box: the teacher_student_fit row.)
# method -> (mode, the user's data it trains on, further overrides)
METHODS: dict[str, tuple[str, str, list[str]]] = {
    "agnostic": ("agnostic", "boxes", []), "teacher_student": ("teacher_student", "boxes", []),
    "oracle": ("teacher_student", "full", []),
    "agnostic_replay": ("agnostic", "replay", []),
    "teacher_student_replay": ("teacher_student", "replay", []),
    "teacher_student_k5": ("teacher_student", "k5", []),
    "teacher_student_k20": ("teacher_student", "k20", []),
    # Levers for a teacher that learned the new shapes as background (the zero-shot row): its
    # pseudo-masks thresholded down to their box's sides; BoxInst's box terms on the student.
    "teacher_student_fit": ("teacher_student", "boxes", ["model.pseudo_mask_fit=box"]),
    "teacher_student_boxinst": ("teacher_student", "boxes", [
        "model.unseen_box_loss=boxinst", "model.box_pairwise_warmup_iters=150"]),
    # The paper cleans pseudo-masks of the seen masks; box-only data has none, but the
    # checkpoint's own masks of the old categories' instances stand in for them.
    "teacher_student_fit_clean": ("teacher_student", "boxes", [
        "model.pseudo_mask_fit=box", "model.clean_with_known_masks=true"]),
    # The teacher itself learns from the new boxes (BoxInst's terms on its masks).
    "teacher_student_fit_teacherbox": ("teacher_student", "boxes", [
        "model.pseudo_mask_fit=box", "model.teacher_box_loss=boxinst",
        "model.box_pairwise_warmup_iters=150"]),
    "teacher_student_fit_boxinst": ("teacher_student", "boxes", [
        "model.pseudo_mask_fit=box", "model.unseen_box_loss=boxinst",
        "model.box_pairwise_warmup_iters=150"]),
    # A second round (`model.known_pseudo_targets: refit`): from round one's checkpoint (the
    # method named in ROUND_TWO, same seed), the new categories, which it learned from
    # pseudo-masks, are taught again by its student's masks made into pseudo-masks (fitted,
    # cleaned); 6 + 6 epochs, 1500 iterations in all (the budget).
    "teacher_student_fit_clean_r2": ("teacher_student", "boxes", [
        "model.pseudo_mask_fit=box", "model.clean_with_known_masks=true",
        "model.known_pseudo_targets=refit"]),
    # Learning without Forgetting on all the user's data: every positive's old channels match
    # the pretrained student's (`model.known_distill: all`), for the old categories' drift.
    "teacher_student_fit_clean_lwf": ("teacher_student", "boxes", [
        "model.pseudo_mask_fit=box", "model.clean_with_known_masks=true",
        "model.known_distill=all"]),
    # Rounds of self-training inside one run of the budget (12 epochs, 1500
    # iterations): every 375 iterations the student is copied into a frozen round head whose
    # fitted, cleaned masks teach the next round (`model.self_train_every`); the old categories'
    # anchor stays the pretrained student throughout. `_lwf` adds `model.known_distill: all`.
    "teacher_student_fit_clean_st": ("teacher_student", "boxes", [
        "model.pseudo_mask_fit=box", "model.clean_with_known_masks=true",
        "model.self_train_every=375"]),
    "teacher_student_fit_clean_st_lwf": ("teacher_student", "boxes", [
        "model.pseudo_mask_fit=box", "model.clean_with_known_masks=true",
        "model.self_train_every=375", "model.known_distill=all"]),
    # Six rounds of 250 instead of four of 375 (a lever for the weakest seed).
    "teacher_student_fit_clean_st250_lwf": ("teacher_student", "boxes", [
        "model.pseudo_mask_fit=box", "model.clean_with_known_masks=true",
        "model.self_train_every=250", "model.known_distill=all"]),
    # The recipe with the paper's CRF sigma after the fit (pseudo_masks.fit_then_crf): from
    # scratch sigma=crf gained on ring and crescent, the shapes the weakest seed misses.
    "teacher_student_fit_clean_st_lwf_crf": ("teacher_student", "boxes", [
        "model.pseudo_mask_fit=box", "model.clean_with_known_masks=true",
        "model.self_train_every=375", "model.known_distill=all", "model.sigma=crf"]),
}
# The recipe (`boxmask finetune`'s: the _st_lwf row) on the per-instance curve's data (K true
# masks per new category) and with the pretraining set replayed.
RECIPE_ST_LWF = METHODS["teacher_student_fit_clean_st_lwf"][2]
METHODS.update({
    "recipe_k5": ("teacher_student", "k5", RECIPE_ST_LWF),
    "recipe_k20": ("teacher_student", "k20", RECIPE_ST_LWF),
    "recipe_replay": ("teacher_student", "replay", RECIPE_ST_LWF),
})
# Methods whose schedule is not --finetune-epochs: epochs of the user's set.
METHOD_EPOCHS = {"teacher_student_fit_clean_st": 12, "teacher_student_fit_clean_st_lwf": 12,
                 "teacher_student_fit_clean_st250_lwf": 12,
                 "teacher_student_fit_clean_st_lwf_crf": 12,
                 "recipe_k5": 12, "recipe_k20": 12,
                 # 500 user + 1000 replayed images: 4 epochs are the 1500 iterations.
                 "recipe_replay": 4}
ROUND_TWO = {"teacher_student_fit_clean_r2": "teacher_student_fit_clean"}
# Inference-only levers: the method's checkpoint (same seed) evaluated with a changed model
# section (nothing trained again). `model.served_mask_fit: box`: the masks of the categories
# learned from boxes alone served fitted to their box (the old categories' as they are).
EVAL_ONLY: dict[str, tuple[str, list[str]]] = {
    "teacher_student_fit_clean_st_lwf_sfit": ("teacher_student_fit_clean_st_lwf",
                                              ["served_mask_fit=box"]),
    "teacher_student_fit_clean_st_lwf_crf_sfit": ("teacher_student_fit_clean_st_lwf_crf",
                                                  ["served_mask_fit=box"]),
    # The recipe, every served mask then refined by the dense CRF on the image
    # (model.served_crf; boxmask.runtime.crf), old categories' included.
    "teacher_student_fit_clean_st_lwf_crf_sfit_scrf": ("teacher_student_fit_clean_st_lwf_crf",
                                                       ["served_mask_fit=box", "served_crf=true"]),
}


def round_one_checkpoint(args: argparse.Namespace, paths: dict[str, Path], pre: Path,
                         method: str, seed: int) -> Path | None:
    """Round one's final checkpoint for a ROUND_TWO method (trained first if no worker holds
    it), with what taught each category recorded: round-one runs from before the checkpoint
    recorded ``taught_by`` say ``seen: false`` for every category of box-only data, so the
    benchmark, which knows the chain (the old categories' masks taught the pretrained model),
    writes it into a copy. ``None`` while another worker trains round one."""
    import torch

    first = ROUND_TWO[method]
    if not finetune(args, paths, pre, first, seed):
        return None
    src = Path(args.out) / f"{first}_s{seed}" / "checkpoint_last.pt"
    dst = Path(args.out) / f"{method}_s{seed}" / "round_one.pt"
    if not dst.is_file():
        ckpt = torch.load(src, map_location="cpu", weights_only=False)
        for c in ckpt["categories"]:
            c.setdefault("taught_by", "masks" if c["name"] in OLD else "pseudo_masks")
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_suffix(".tmp")
        torch.save(ckpt, tmp)
        os.replace(tmp, dst)
    return dst


def user_data(out: Path, paths: dict[str, Path], kind: str, seed: int) -> tuple[Path, Path]:
    """(annotations, images) of the user's training set in one of its variants: ``boxes`` (no
    mask), ``full`` (every mask: the oracle), ``kN`` (N true masks per new category, drawn
    with ``seed``), ``replay`` (boxes plus the pretraining images with their old masks)."""
    import numpy as np

    base_file = paths["user_images"].parents[1] / "annotations" / "instances_train.json"
    name = f"{kind}_s{seed}.json" if kind.startswith("k") else f"{kind}.json"
    target = out / "data" / name
    images = paths["user_images"]
    if kind == "replay":
        images = out / "data" / "replay_images"
    if target.is_file():
        return target, images
    coco = json.loads(base_file.read_text())
    strip = [{k: v for k, v in a.items() if k != "segmentation"} for a in coco["annotations"]]
    if kind == "full":
        data = coco
    elif kind == "boxes":
        data = {**coco, "annotations": strip}
    elif kind.startswith("k"):
        k = int(kind[1:])
        rng = np.random.default_rng(1000 + seed)
        new_ids = {c["id"] for c in coco["categories"] if c["name"] in NEW}
        keep: set[int] = set()
        for cid in sorted(new_ids):
            ids = sorted(a["id"] for a in coco["annotations"] if a["category_id"] == cid)
            keep |= {int(i) for i in rng.choice(ids, size=min(k, len(ids)), replace=False)}
        data = {**coco, "annotations": [a if a["id"] in keep else b
                                         for a, b in zip(coco["annotations"], strip, strict=True)]}
    elif kind == "replay":
        pre = json.loads(paths["pretrain"].read_text())
        images.mkdir(parents=True, exist_ok=True)
        offset = 10 ** 7
        out_images, out_anns = [], []
        for prefix, src, doc, shift in (("u_", paths["user_images"], {**coco, "annotations": strip}, 0),
                                        ("p_", paths["pre_images"], pre, offset)):
            for im in doc["images"]:
                link = images / (prefix + im["file_name"])
                if not link.exists():
                    os.link(src / im["file_name"], link)
                out_images.append({**im, "id": im["id"] + shift, "file_name": link.name})
            for a in doc["annotations"]:
                out_anns.append({**a, "id": a["id"] + shift, "image_id": a["image_id"] + shift})
        data = {**coco, "images": out_images, "annotations": out_anns}
    else:
        raise ValueError(f"unknown data variant {kind!r}")
    _write_json_atomic(target, data)
    return target, images


def evaluate(model: Any, categories: list[dict], paths: dict[str, Path]) -> dict:
    """Box-prompted mIoU and mask AP (old categories as ``seen``, new as ``unseen``, each
    beside the box) and detection mask AP, on the user's validation images."""
    from boxmask.config import load_config
    from boxmask.data.coco import CocoInstances
    from boxmask.evaluation.run import evaluate_model

    cfg = load_config(None, base={"data": {"train_annotations": str(paths["val"]),
                                           "train_images": str(paths["val_images"])},
                                  "model": {}, "train": {}, "eval": {"plots": False}})
    val = json.loads(paths["val"].read_text())
    old_ids = {c["id"] for c in val["categories"] if c["name"] in OLD}
    cats = [{**c, "seen": c["name"] in OLD} for c in categories]
    dataset = CocoInstances(paths["val_images"], paths["val"], old_ids, drop_empty=False)
    report = evaluate_model(model, dataset, cats, cfg, progress=False)
    bp = report["box_prompted"]

    def side(name: str) -> dict:
        def ap(tree: dict) -> float | None:
            return (tree.get(name) or {}).get("AP")

        return {"miou": bp["mean_iou"][name], "box_miou": bp["box_baseline"]["mean_iou"][name],
                "mask_ap": ap(bp["mask_ap"]), "box_mask_ap": ap(bp["box_baseline"]["mask_ap"]),
                "detection_mask_ap": ap(report["segm"])}

    return {
        "new": side("unseen"), "old": side("seen"),
        "by_category": {c["name"]: {"miou": c["mean_iou"], "seen": c["seen"]}
                        for c in bp["by_category"]},
        "box_by_category": {c["name"]: c["mean_iou"] for c in bp["box_baseline"]["by_category"]},
    }


def _keep(name: str, result: dict) -> None:
    KEPT.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(KEPT / f"{name}.json", result)


def evaluate_checkpoint_file(ckpt: Path, paths: dict[str, Path]) -> dict:
    import torch

    from boxmask.model.checkpoint import load_checkpoint, model_from_checkpoint

    model, cats = model_from_checkpoint(load_checkpoint(ckpt))
    with torch.no_grad():
        return evaluate(model, cats, paths)


def zero_shot(args: argparse.Namespace, paths: dict[str, Path], pre: Path) -> dict:
    """The pretrained class-agnostic teacher on the new boxes, untrained: the checkpoint loaded
    into an agnostic model of all eight categories (box rows of the new ones fresh, so only the
    box-prompted figures mean anything)."""
    kept = KEPT / "zero_shot_agnostic.json"
    if kept.is_file():
        return json.loads(kept.read_text())
    import torch

    from boxmask.config import load_config
    from boxmask.training.trainer import build_training_data, build_training_model

    ann, images = user_data(Path(args.out), paths, "boxes", 0)
    cfg = load_config(CONFIG, [*RECIPE, *FINETUNE, "model.mode=agnostic",
                               f"model.init_from={pre}", f"data.train_annotations={ann}",
                               f"data.train_images={images}"])
    data = build_training_data(cfg)
    model = build_training_model(cfg, data)
    with torch.no_grad():
        result = {"method": "zero_shot_agnostic", **evaluate(model, data.categories, paths)}
    result["new"]["detection_mask_ap"] = None  # the new categories' box rows are untrained
    _keep("zero_shot_agnostic", result)
    return result


def evaluate_only(args: argparse.Namespace, paths: dict[str, Path], pre: Path, method: str,
                  seed: int) -> dict:
    """An EVAL_ONLY method: its base method's checkpoint (trained first if need be) evaluated
    with the model section changed."""
    import torch

    from boxmask.config import BoxMaskConfig
    from boxmask.model.checkpoint import load_checkpoint, model_from_checkpoint

    name = f"{method}_s{seed}"
    out = Path(args.out) / name
    if (out / "result.json").is_file():
        return json.loads((out / "result.json").read_text())
    base, changes = EVAL_ONLY[method]
    trained = finetune(args, paths, pre, base, seed)
    if not trained:
        return {}
    ckpt = Path(args.out) / f"{base}_s{seed}" / "checkpoint_last.pt"
    raw = load_checkpoint(ckpt)
    stored = BoxMaskConfig.model_validate(raw["config"]).model
    update = {k: yaml.safe_load(v) for k, v in (c.split("=", 1) for c in changes)}
    model, cats = model_from_checkpoint(raw, stored.model_copy(update=update), ckpt)
    with torch.no_grad():
        figures = evaluate(model, cats, paths)
    result = {**{k: v for k, v in trained.items() if k not in figures},
              "method": method, "evaluated_from": f"{base}_s{seed}", "model_changes": changes,
              **figures}
    out.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(out / "result.json", result)
    _keep(name, result)
    return result


def finetune(args: argparse.Namespace, paths: dict[str, Path], pre: Path, method: str,
             seed: int) -> dict:
    if method in EVAL_ONLY:
        return evaluate_only(args, paths, pre, method, seed)
    name = f"{method}_s{seed}"
    out = Path(args.out) / name
    if (out / "result.json").is_file():
        return json.loads((out / "result.json").read_text())
    from harness import claim as _claim  # the run locking several workers share

    if not _claim(out):
        print(f"[{name}] held by another worker: skipped", flush=True)
        return {}
    mode, kind, extra = METHODS[method]
    start = pre
    if method in ROUND_TWO:
        start = round_one_checkpoint(args, paths, pre, method, seed)
        if start is None:
            print(f"[{name}] round one is held by another worker: skipped", flush=True)
            (out / "worker.lock").unlink(missing_ok=True)
            return {}
    ann, images = user_data(Path(args.out), paths, kind, seed)
    epochs = METHOD_EPOCHS.get(method, args.finetune_epochs)
    t0 = time.time()
    ckpt = train_run(name, out, [*FINETUNE, f"model.mode={mode}", f"model.init_from={start}",
                                 f"data.train_annotations={ann}", f"data.train_images={images}",
                                 f"data.val_annotations={paths['val']}",
                                 f"data.val_images={paths['val_images']}",
                                 f"train.epochs={epochs}", f"train.lr_steps=[{epochs - 1}]",
                                 f"train.seed={seed}", *extra,
                                 *([f"train.max_iters_per_epoch={args.iters_per_epoch}"]
                                   if args.iters_per_epoch else [])], args.threads)
    seconds = time.time() - t0
    result = {"method": method, "seed": seed, "data": kind, "mode": mode,
              "train_seconds": round(seconds, 1), "epochs": epochs,
              "rounds": 2 if method in ROUND_TWO else 1,
              **evaluate_checkpoint_file(ckpt, paths)}
    _write_json_atomic(out / "result.json", result)
    _keep(name, result)
    return result


def _fmt(x: float | None, scale: float = 1.0) -> str:
    return "-" if x is None else f"{x * scale:.3f}" if scale == 1.0 else f"{x * scale:.1f}"


def table(results: list[dict]) -> str:
    """Rows per method (seeds averaged, each seed listed), new and old categories."""
    by: dict[str, list[dict]] = {}
    for r in results:
        by.setdefault(r["method"], []).append(r)
    with_new = [r for r in results if r["new"].get("box_miou") is not None]
    box = with_new[0]["new"]["box_miou"] if with_new else None
    box_old = with_new[0]["old"]["box_miou"] if with_new else None
    header = ("| method | seeds | new: mIoU | over the box | mask AP | detection mask AP | "
              "old: mIoU | old over the box |")
    lines = [header, "|---|---|---|---|---|---|---|---|",
             f"| box as mask | - | {_fmt(box)} | 0 | - | - | {_fmt(box_old)} | 0 |"]
    import statistics

    for method, rows in by.items():
        def mean(side: str, key: str, rows: list[dict] = rows) -> float | None:
            vals = [r[side][key] for r in rows if r[side][key] is not None]
            return statistics.mean(vals) if vals else None

        new, old = mean("new", "miou"), mean("old", "miou")
        per_seed = ", ".join(_fmt(r["new"]["miou"]) for r in sorted(
            rows, key=lambda r: r.get("seed", 0)))
        lines.append(f"| {method} | {len(rows)} ({per_seed}) | {_fmt(new)} | "
                     f"{_fmt(None if new is None or box is None else new - box)} | "
                     f"{_fmt(mean('new', 'mask_ap'), 100)} | {_fmt(mean('new', 'detection_mask_ap'), 100)} | "
                     f"{_fmt(old)} | {_fmt(None if old is None or box_old is None else old - box_old)} |")
    return "\n".join(lines)


def all_results() -> list[dict]:
    order = ["zero_shot_agnostic", "pretrained", *METHODS, *EVAL_ONLY]
    found = [json.loads(p.read_text()) for p in sorted(KEPT.glob("*.json"))]
    return sorted(found, key=lambda r: (order.index(r["method"]) if r["method"] in order else 99,
                                        r.get("seed", 0)))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "runs" / "finetune_quality_v2"))
    p.add_argument("--stage", choices=["pretrain", "all"], default="all")
    p.add_argument("--methods", nargs="+", default=["teacher_student", "agnostic", "oracle"],
                   choices=[*METHODS, *EVAL_ONLY])
    p.add_argument("--user-images", type=int, default=500)
    p.add_argument("--val-images", type=int, default=100)
    p.add_argument("--finetune-epochs", type=int, default=12,
                   help="epochs of the user's set (500 images, batch 4: 125 iterations each)")
    p.add_argument("--iters-per-epoch", type=int, default=None, help="for smoke runs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--table", action="store_true", help="print the table of kept results only")
    p.add_argument("--kept", default=None, help="where results are kept (default: "
                   "benchmarks/results/finetune_quality)")
    p.add_argument("--smoke", action="store_true",
                   help="2 iterations an epoch everywhere, 16 user images, results kept under --out")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Config paths are resolved against the config's folder: every path here is absolute.
    args.out = str(Path(args.out).resolve())
    global KEPT
    if args.kept:
        KEPT = Path(args.kept)
    if args.smoke:
        KEPT = Path(args.out) / "kept"
        args.iters_per_epoch, args.user_images, args.val_images = 2, 16, 6
        PRETRAIN.append("train.max_iters_per_epoch=2")
    if args.table:
        print(table(all_results()))
        return 0
    paths = ensure_data(Path(args.out), args.user_images, args.val_images)
    pre = pretrain(args, paths)
    if args.stage == "pretrain":
        return 0
    kept = KEPT / "pretrained.json"
    if not kept.is_file():
        _keep("pretrained", {"method": "pretrained", **evaluate_pretrained(pre, paths)})
    zero_shot(args, paths, pre)
    for seed in args.seeds:
        for method in args.methods:
            finetune(args, paths, pre, method, seed)
            print(table(all_results()), flush=True)
    return 0


def evaluate_pretrained(pre: Path, paths: dict[str, Path]) -> dict:
    """The pretrained model on the old categories only (it knows no new one)."""
    import torch

    from boxmask.model.checkpoint import load_checkpoint, model_from_checkpoint

    model, cats = model_from_checkpoint(load_checkpoint(pre))
    val = json.loads(paths["val"].read_text())
    old = {**val, "categories": [c for c in val["categories"] if c["name"] in OLD]}
    old["annotations"] = [a for a in val["annotations"]
                          if a["category_id"] in {c["id"] for c in old["categories"]}]
    old_file = paths["pretrain"].parent / "instances_val_old.json"
    _write_json_atomic(old_file, old)
    with torch.no_grad():
        result = evaluate(model, cats, {**paths, "val": old_file})
    result["new"] = {k: None for k in result["new"]}
    return result


if __name__ == "__main__":
    raise SystemExit(main())
