"""Where a training iteration's time goes on the CPU, and what a setting saves: torch's profiler
over a few iterations of a config (forward, backward and the optimizer step, as the trainer runs
them), the share of the step each part of the model takes, the operators with the most self
time, and for each ``--variant`` (extra overrides) its time per iteration beside the base's,
measured in the same run on the same batches.

    .venv/bin/python benchmarks/train_step_profile.py configs/synth128_clear_paired.yaml \
        --set model.mode=teacher_student model.teacher_ignore_unseen_boxes=true \
        --variant model.mask_rois_per_image=8 --variant model.mask_rois_per_image=4

The parts are timed by forward hooks on the model's modules plus the backward pass and the
step as a whole, so the table reads as "forward of X" rows (inclusive of their children) and
one "backward + step" row. Seconds per iteration with ``--threads`` intra-op threads (default 1,
as the experiment's workers train). Iterations early in a run: the proposals are not yet good,
so there are fewer positive RoIs than later, and a cap on them saves less than it will later.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path
from typing import Any


def measure(config: Path, overrides: list[str], iters: int, warmup: int = 3) -> dict[str, Any]:
    """``{"total": s/iteration, "parts": {name: s/iteration}, "mask_rois": mean per image,
    "profile": torch profiler}`` over ``iters`` iterations after ``warmup``, from a fixed seed."""
    import torch
    from torch.utils.data import DataLoader

    from boxmask.config import load_config
    from boxmask.training.schedule import build_optimizer
    from boxmask.training.trainer import build_training_data, build_training_model, weighted_loss

    torch.manual_seed(0)
    cfg = load_config(config, overrides)
    data = build_training_data(cfg)
    model = build_training_model(cfg, data).train()
    optimizer = build_optimizer(model, cfg.train)
    loader = DataLoader(data.dataset, batch_size=cfg.train.batch_size, shuffle=True,
                        collate_fn=data.collate_fn, generator=torch.Generator().manual_seed(0))
    batches = iter(loader)

    parts = {"backbone": model.backbone, "rpn": model.rpn, "roi_heads": model.roi_heads}
    spent: dict[str, float] = defaultdict(float)
    starts: dict[str, float] = {}
    rois: list[int] = []

    def pre(name: str):
        return lambda *_: starts.__setitem__(name, time.perf_counter())

    def post(name: str):
        return lambda *_: spent.__setitem__(name, spent[name] + time.perf_counter() - starts[name])

    for name, mod in parts.items():
        mod.register_forward_pre_hook(pre(name))
        mod.register_forward_hook(post(name))
    branch = model.roi_heads.mask_branch
    real_losses = branch.losses

    def counting_losses(features, proposals, *args, **kwargs):
        # The mask heads in training: RoI pooling, teacher, pseudo-masks, student and losses.
        rois.extend(len(p) for p in proposals)
        t0 = time.perf_counter()
        out = real_losses(features, proposals, *args, **kwargs)
        spent["roi_heads.mask_branch"] += time.perf_counter() - t0
        return out

    branch.losses = counting_losses

    def step() -> None:
        images, targets = next(batches)
        t0 = time.perf_counter()
        loss = weighted_loss(model(images, targets), cfg.train.loss_weights)
        t1 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        spent["backward + step"] += time.perf_counter() - t1
        spent["forward (all)"] += t1 - t0

    for _ in range(warmup):
        step()
    spent.clear()
    rois.clear()
    t0 = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(iters):
            step()
    total = (time.perf_counter() - t0) / iters
    return {"total": total, "parts": {k: v / iters for k, v in spent.items()},
            "mask_rois": sum(rois) / max(len(rois), 1), "profile": prof}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--set", nargs="*", default=[], help="config overrides of the base")
    ap.add_argument("--variant", action="append", default=[], metavar="OVERRIDES",
                    help="space-separated overrides on top of the base; repeatable")
    ap.add_argument("--iters", type=int, default=8, help="profiled iterations (after 3 warm-up)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--top", type=int, default=15, help="operators listed (0: none)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    base = measure(args.config, args.set, args.iters)
    total = base["total"]
    print(f"{args.config.name} {' '.join(args.set)}: {args.iters} iterations after 3, "
          f"{args.threads} thread(s), under the profiler")
    print()
    print("| part | s / iteration | share |")
    print("|---|---|---|")
    for name, s in sorted(base["parts"].items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {s:.3f} | {s / total:.0%} |")
    print(f"| step | {total:.3f} | 100% |")
    if args.top:
        print()
        print(base["profile"].key_averages().table(sort_by="self_cpu_time_total",
                                                   row_limit=args.top))
    print()
    print("| variant | mask RoIs / image | s / iteration | x base |")
    print("|---|---|---|---|")
    print(f"| base | {base['mask_rois']:.1f} | {total:.3f} | 1.00 |")
    for variant in args.variant:
        r = measure(args.config, args.set + variant.split(), args.iters)
        print(f"| {variant} | {r['mask_rois']:.1f} | {r['total']:.3f} | {total / r['total']:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
