"""Fine-tuning for box-only classes, where a user meets the paper: does it beat the box?

The scenario of tests/training/finetune_scenario.py at a chosen size: a model pretrained
(oracle) on four synthetic categories with masks is fine-tuned (``model.init_from``) on a set
that adds four new categories with boxes only, once class-agnostic and once teacher-student
(both with the teacher fix, same start, data and steps). Box-prompted mean IoU on the
validation instances of the new and of the old categories, beside the box as mask.

Resumable: each stage's run folder under ``--out`` keeps its checkpoints; a rerun skips
finished stages and resumes a cut-off one.

    .venv/bin/python benchmarks/finetune_quality.py --finetune-epochs 12 --threads 1  # the test's
    .venv/bin/python benchmarks/finetune_quality.py --pretrain-epochs 24 --finetune-epochs 8
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.training.finetune_scenario import (
    NEW,
    OLD,
    QUALITY_MODEL,
    box_prompted_miou,
    train_run,
    write_datasets,
)


def _done(out: Path, epochs: int) -> bool:
    last = out / "checkpoint_last.pt"
    if not last.is_file():
        return False
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return any(r.get("kind") == "epoch" and r.get("epoch") == epochs for r in lines)


def run(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    data = out / "data"
    if not (data / "finetune.json").is_file():
        write_datasets(data, num_train=args.train_images, num_val=args.val_images, size=args.size,
                       seed=args.data_seed)
    paths = {"images": data / "synth" / "images" / "train", "pretrain": data / "pretrain.json",
             "finetune": data / "finetune.json",
             "val": data / "synth" / "annotations" / "instances_val.json",
             "val_images": data / "synth" / "images" / "val"}
    common = {"base": QUALITY_MODEL, "threads": args.threads, "seed": args.seed, "lr": args.lr}
    times: dict[str, float] = {}
    pre_dir = out / "pretrain"
    t0 = time.time()
    pre = train_run(paths, "pretrain", pre_dir, {"mode": "oracle"}, epochs=args.pretrain_epochs,
                    lr_steps=[args.pretrain_epochs - max(1, args.pretrain_epochs // 6)],
                    resume=True, **common) if not _done(pre_dir, args.pretrain_epochs) \
        else pre_dir / "checkpoint_last.pt"
    times["pretrain"] = time.time() - t0
    fine = {}
    for mode in ("teacher_student", "agnostic"):
        d = out / mode
        t0 = time.time()
        fine[mode] = train_run(
            paths, "finetune", d, {"mode": mode, "init_from": str(pre),
                                   "teacher_ignore_unseen_boxes": True},
            epochs=args.finetune_epochs, lr_steps=[args.finetune_epochs - 1],
            warmup_iters=10, resume=True, **common) if not _done(d, args.finetune_epochs) \
            else d / "checkpoint_last.pt"
        times[mode] = time.time() - t0
    rows = {"box as mask": None, "pretrained (old categories only)": pre,
            "agnostic fine-tune": fine["agnostic"], "teacher-student fine-tune": fine["teacher_student"]}
    result = {"args": vars(args), "seconds": {k: round(v, 1) for k, v in times.items()},
              "new": {}, "old": {}}
    for name, ckpt in rows.items():
        result["new"][name] = None if name.startswith("pretrained") else box_prompted_miou(ckpt, paths, NEW)
        result["old"][name] = box_prompted_miou(ckpt, paths, OLD)
    (out / "result.json").write_text(json.dumps(result, indent=1))
    return result


def table(result: dict) -> str:
    lines = ["| model | new categories (boxes only) | old categories (masks) |", "|---|---|---|"]
    for name in result["new"]:
        new, old = result["new"][name], result["old"][name]
        lines.append(f"| {name} | {'-' if new is None else f'{new:.3f}'} | {old:.3f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "runs" / "finetune_quality" / "default"))
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--train-images", type=int, default=200)
    p.add_argument("--val-images", type=int, default=24)
    p.add_argument("--pretrain-epochs", type=int, default=16)
    p.add_argument("--finetune-epochs", type=int, default=6)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    print(f"box-prompted mean IoU, {args.val_images} validation images of {args.size} px; "
          f"pretrain {args.pretrain_epochs} epochs, fine-tunes {args.finetune_epochs} epochs each "
          f"({args.train_images} training images, batch 4); seconds {result['seconds']}")
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
