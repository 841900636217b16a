"""Masks that transfer beyond look-alikes: the transfer split, three seeds, paired.

On the headline scenes every unseen shape has a seen look-alike in texture, and teacher-student
with the pixel stem closes about half of the agnostic-to-oracle gap on box-prompted unseen mean
IoU. This benchmark asks for transfer instead: the ``transfer`` shape set of
boxmask.data.synthetic (``clear`` scenes, 1000 training and 200 validation images at 128 px),
whose four unseen shapes (slab, wave, zigzag, arch) share no shape family and no texture kind
with the four seen ones (disc, triangle, cross, star), and whose slab nearly fills its box.

Runs, for seeds 0, 1 and 2: agnostic, teacher-student and the oracle with the headline recipe
(configs/synth128_clear.yaml with the overrides of the recipe ablation's
``clear_v2_ts_fix_headgn128_pixels16``: GroupNorm heads of 128 channels, the teacher fix, the
pixel stem, 1500 iterations), then the levers, each one change to a method's recipe:

- ``sfit`` (inference only): the masks of the categories learned from boxes served fitted to
  their box (``model.served_mask_fit=box``, the fine-tune recipe's lever), evaluated from the
  method's own checkpoint: nothing trained again.
- ``guard`` (inference only): a box-taught category's mask served as its box where the box's
  expected IoU with the object, by the mask's own probabilities, beats the mask's
  (``model.served_box_guard=expected_iou``; boxmask.model.mask_branch.box_guard).
- ``crf`` (inference only): every served mask refined by the dense CRF on the image
  (``model.served_crf=true``; boxmask.runtime.crf), for each method.
- ``crf_wide`` (inference only): the same with the appearance kernel as wide as the box
  (``model.served_crf_kernel=wide``), for each method.
- ``fit``: each teacher pseudo-mask thresholded as low as it takes to reach its box's sides
  (``model.pseudo_mask_fit=box``, the fine-tune recipe's training lever).
- ``shapes``: random shapes pasted into the training images as teacher-only instances
  (``data.random_shapes=0.5``; boxmask.data.random_shapes), for agnostic and teacher-student.
  The mask branch trains the teacher alone on them (boxmask/model/objecthood.py); a model
  that did not (a build without that wiring) is refused before its runs start.

The table (x100): box-prompted unseen and seen mean IoU per method (mean ± std over the seeds,
and each seed) beside the box as mask; the share of the agnostic-to-oracle gap on box-prompted
unseen mean IoU that each method closes, per seed; each lever minus the method it changes, per
seed, and whether it wins in every seed (the paper's method stays the default until one does);
and the margin over the box per category.

``--split headline`` runs the same on the headline split (data/clear_v2128, the basic shapes,
each unseen one with a seen texture look-alike), so that both tables come from one recipe.

Resumable like benchmarks/recipe_ablation.py (the same run-and-keep loop,
benchmarks/harness.py): a finished run's ``result.json`` is kept in
benchmarks/results/transfer/ and skipped on a rerun while its fingerprint (the config file's
bytes, the split and the run's overrides) is unchanged; a cut-off run resumes from its last
epoch checkpoint in runs/transfer/; several workers may share the list (each takes the runs no
live worker holds).

    .venv/bin/python benchmarks/transfer.py --set train.threads=1     # every run, then the table
    .venv/bin/python benchmarks/transfer.py --levers                  # the methods only
    .venv/bin/python benchmarks/transfer.py --table                   # only the table
    .venv/bin/python benchmarks/transfer.py --split headline          # the headline split
    .venv/bin/python benchmarks/transfer.py --smoke                   # 2 iterations, a temp folder
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness import claim, keep, kept_result, report_figures, run_and_keep, write_json

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "synth128_clear.yaml"
SEEDS = (0, 1, 2)
COMMAND = "python benchmarks/transfer.py"


@dataclass(frozen=True)
class Split:
    """A synthetic set and its suggested split; the data lie in ``data/<dataset>128``."""

    name: str
    dataset: str
    scene: str
    num_train: int
    num_val: int
    version: int
    shapes: str


# 200 validation images: each unseen shape is one in eight of the objects, about 120 instances
# apiece, for per-category margins. The headline split's set is the recipe ablation's and the
# experiment's clear_v2 (same recipe, so the folder is shared).
SPLITS = {
    "transfer": Split("transfer", "clear_transfer", "clear", 1000, 200, 2, "transfer"),
    "headline": Split("headline", "clear_v2", "clear", 1000, 100, 2, "basic"),
}

_HEADGN128_PIXELS = ["model.head_norm=gn", "model.mask_head_channels=128",
                     "train.keep_checkpoints=1", "model.mask_pixel_channels=16"]
# The recipe ablation's clear_v2_{agnostic,ts}_fix_headgn128_pixels16 and
# clear_v2_oracle_headgn128_pixels16.
METHODS: dict[str, list[str]] = {
    "agnostic": ["model.mode=agnostic", "model.teacher_ignore_unseen_boxes=true",
                 *_HEADGN128_PIXELS],
    "teacher_student": ["model.mode=teacher_student", "model.sigma=threshold",
                        "model.teacher_ignore_unseen_boxes=true", *_HEADGN128_PIXELS],
    "oracle": ["model.mode=oracle", *_HEADGN128_PIXELS],
}
# lever -> (its overrides, the methods it changes).
LEVERS: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "shapes": (["data.random_shapes=0.5"], ("teacher_student", "agnostic")),
    # Each pseudo-mask thresholded as low as it takes to reach its box's sides (the fine-tune
    # recipe's training lever): for a teacher that has never seen a shape that fills its box.
    "fit": (["model.pseudo_mask_fit=box"], ("teacher_student",)),
    # Rounds of self-training with fitted pseudo-masks (the fine-tune recipe's training levers,
    # "Teach it your classes"; the demo recipe's): every 500 iterations the student, copied
    # into a frozen round head, makes the box-only instances' pseudo-masks in the teacher's
    # place, each thresholded down to reach its box's sides. Paired with `fit`, it is the
    # rounds' own gain; with teacher-student, the two together.
    "fit_st": (["model.pseudo_mask_fit=box", "model.self_train_every=500"], ("teacher_student",)),
    # BoxInst's box-only terms (projection + pairwise colour affinity) on the student's masks
    # of the box-taught categories beside the pseudo-mask loss (the boundary cue; on the
    # headline scenes without the stem they gave nothing, docs/results.md "What bounds the
    # unseen masks"); the pairwise weight ramps up over the first 150 iterations.
    "boxinst": (["model.unseen_box_loss=boxinst", "model.box_pairwise_warmup_iters=150"],
                ("teacher_student",)),
    # The same with the pairwise term's neighbours adjacent (model.box_pairwise_dilation=1):
    # BoxInst's 2 cells apart never tie the RoI grid's four parity sublattices together, and
    # `boxinst`'s student drew a checkerboard of holes on the slab
    # (docs/notebook/2026-12-07-the-slab.md).
    "boxinst1": (["model.unseen_box_loss=boxinst", "model.box_pairwise_warmup_iters=150",
                  "model.box_pairwise_dilation=1"], ("teacher_student",)),
    # The same terms on the *teacher's* masks of the box-only instances
    # (model.teacher_box_loss=boxinst): the teacher, whose prior from the seen shapes is that
    # an object never reaches its box's edges (docs/notebook/2026-12-07-the-slab.md), learns
    # from the unseen boxes that their objects fill them, and its pseudo-masks follow.
    # Adjacent neighbours, as boxinst1 (the teacher's head is a stride-2 transposed conv too).
    "tboxinst": (["model.teacher_box_loss=boxinst", "model.box_pairwise_warmup_iters=150",
                  "model.box_pairwise_dilation=1"], ("teacher_student",)),
    # Served masks of the box-taught categories fitted to their box (the fine-tune recipe's
    # inference lever, "Teach it your classes"): nothing trained again. Teacher-student only:
    # agnostic serves its class-agnostic head, which the fit does not touch.
    "sfit": (["model.served_mask_fit=box"], ("teacher_student",)),
    # The guard against masks worse than the box (model.served_box_guard=expected_iou): a
    # box-taught category's mask is served as its box where the box's expected IoU, by the
    # mask's own probabilities, is the higher. Inference only, like sfit.
    "guard": (["model.served_box_guard=expected_iou"], ("teacher_student", "agnostic")),
    # Every served mask refined by the dense CRF on the image (model.served_crf,
    # boxmask.runtime.crf; the paper's sigma = crf, applied to what is served instead of the
    # pseudo-masks): the "CRF at inference, re-measured here". Inference only; on every
    # method, so that its share of the gap can be read against refined baselines too.
    "crf": (["model.served_crf=true"], ("teacher_student", "agnostic", "oracle")),
    # The same with the appearance kernel as wide as the box (model.served_crf_kernel=wide,
    # boxmask.runtime.crf.WIDE; chosen on the headline scenes' tuning set, benchmarks/
    # crf_kernels.py): does the choice hold on shapes and textures it was not chosen on?
    "crf_wide": (["model.served_crf=true", "model.served_crf_kernel=wide"],
                 ("teacher_student", "agnostic", "oracle")),
}
# Levers that change only inference: the method's own checkpoint evaluated with the lever's
# overrides (its run must have finished first, here or in another worker).
INFERENCE_LEVERS = {"sfit", "guard", "crf", "crf_wide"}
# Levers whose loss the mask branch must produce, and that loss's name.
NEEDS_LOSS = {"shapes": "loss_mask_objecthood"}
SHORT = {"agnostic": "agn", "teacher_student": "TS", "oracle": "oracle"}


@dataclass(frozen=True)
class Run:
    split: Split
    method: str
    lever: str | None
    seed: int

    @property
    def name(self) -> str:
        lever = f"_{self.lever}" if self.lever else ""
        return f"{self.split.name}_{self.method}{lever}_s{self.seed}"

    def overrides(self, data_root: Path) -> list[str]:
        from boxmask.data.synthetic import suggested_split

        folder = data_root / f"{self.split.dataset}128"
        seen = ", ".join(suggested_split(self.split.shapes)["seen"])
        lever = LEVERS[self.lever][0] if self.lever not in (None, *INFERENCE_LEVERS) else []
        return [*METHODS[self.method], *lever, f"train.seed={self.seed}", f"data.seen=[{seen}]",
                f"data.train_annotations={folder}/annotations/instances_train.json",
                f"data.train_images={folder}/images/train",
                f"data.val_annotations={folder}/annotations/instances_val.json",
                f"data.val_images={folder}/images/val"]


def runs_of(split: Split, seeds: tuple[int, ...], levers: list[str]) -> list[Run]:
    """The methods for every seed first (the table's baselines), then each lever."""
    out = [Run(split, m, None, s) for s in seeds for m in METHODS]
    out += [Run(split, m, lever, s) for lever in levers for s in seeds for m in LEVERS[lever][1]]
    return out


@dataclass(frozen=True)
class Place:
    """Where data, runs and kept results live: the repository, or a smoke run's folder."""

    data: Path
    runs: Path
    kept: Path
    extra: tuple[str, ...] = ()  # overrides every run gets (the smoke schedule)
    smoke: bool = False


def ensure_data(split: Split, place: Place) -> None:
    from boxmask.data.synthetic import ensure_generated

    num_train, num_val = (6, 3) if place.smoke else (split.num_train, split.num_val)
    try:
        ensure_generated(place.data / f"{split.dataset}128", seed=0, num_train=num_train,
                         num_val=num_val, image_size=128, scene=split.scene,
                         version=split.version, shapes=split.shapes)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def fingerprint(run: Run, place: Place, extra: list[str]) -> str:
    relevant = [o for o in [*place.extra, *extra] if not o.startswith("train.threads=")]
    blob = CONFIG.read_bytes() + json.dumps(
        [asdict(run.split), run.method, run.lever, run.seed, run.overrides(Path("data")),
         relevant]).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# -- training and evaluation ---------------------------------------------------------------

_WIRED: dict[tuple[str, str], bool] = {}


def lever_is_wired(lever: str, cfg: Any) -> bool:
    """True when the model of ``cfg`` produces the lever's loss: one training step of a fresh
    model on a random image with one seen instance and one teacher-only shape (once per lever
    and mode)."""
    loss = NEEDS_LOSS.get(lever)
    if loss is None:
        return True
    key = (lever, cfg.model.mode)
    if key not in _WIRED:
        _WIRED[key] = _produces(loss, cfg)
    return _WIRED[key]


def _produces(loss: str, cfg: Any) -> bool:
    import torch

    from boxmask.data.random_shapes import TEACHER_ONLY, TEACHER_ONLY_LABEL
    from boxmask.model import build_model

    state = torch.random.get_rng_state()
    try:
        model = build_model(cfg.model, 2, {1}).train()
        masks = torch.zeros(2, 64, 64, dtype=torch.uint8)
        masks[0, 4:30, 4:30] = 1
        masks[1, 36:60, 30:58] = 1
        target = {"boxes": torch.tensor([[4.0, 4.0, 30.0, 30.0], [30.0, 36.0, 58.0, 60.0]]),
                  "labels": torch.tensor([1, TEACHER_ONLY_LABEL]), "masks": masks,
                  "mask_valid": torch.tensor([True, True]),
                  TEACHER_ONLY: torch.tensor([False, True])}
        return loss in model([torch.rand(3, 64, 64)], [target])
    finally:
        torch.random.set_rng_state(state)


def run_one(run: Run, place: Place, extra: list[str], suffix: str = "") -> dict:
    """Train and evaluate one run; its result is kept as ``<name><suffix>.json``. ``{}`` when
    another worker holds it or its lever is not wired."""
    from boxmask.config import load_config

    if run.lever in INFERENCE_LEVERS:
        return evaluate_only(run, place, extra, suffix)
    fp = fingerprint(run, place, extra)
    out = place.runs / f"{run.name}{suffix}_{fp[:8]}"
    overrides = run.overrides(place.data)

    def config() -> Any:
        cfg = load_config(CONFIG, [*overrides, *place.extra, f"train.output_dir={out}", *extra])
        if run.lever and not lever_is_wired(run.lever, cfg):
            print(f"{run.name}: skipped: the model does not produce {NEEDS_LOSS[run.lever]} (the "
                  "lever is not wired into the mask branch yet; boxmask/model/objecthood.py says "
                  "how)", flush=True)
            return None
        return cfg

    head = {"run": run.name + suffix, "suffix": suffix, "fingerprint": fp,
            "split": run.split.name, "method": run.method, "lever": run.lever, "seed": run.seed,
            "overrides": [*overrides, *place.extra, *extra]}
    return run_and_keep(out, place.kept / f"{run.name}{suffix}.json", head, config,
                        prepare=lambda: ensure_data(run.split, place))


def evaluate_only(run: Run, place: Place, extra: list[str], suffix: str = "") -> dict:
    """An inference lever: the method's finished run's checkpoint evaluated with the lever's
    overrides. ``{}`` when that run has not finished (or its checkpoint is not on this machine)
    or another worker holds this evaluation."""
    from boxmask.evaluation.run import evaluate_checkpoint

    base = Run(run.split, run.method, None, run.seed)
    base_fp = fingerprint(base, place, extra)
    base_out = place.runs / f"{base.name}{suffix}_{base_fp[:8]}"
    changes = LEVERS[run.lever][0]
    fp = hashlib.sha256(json.dumps([base_fp, run.lever, changes]).encode()).hexdigest()[:16]
    out = place.runs / f"{run.name}{suffix}_{fp[:8]}"
    kept = place.kept / f"{run.name}{suffix}.json"
    if (done := kept_result(out, kept, fp)) is not None:
        return done
    trained = kept_result(base_out, place.kept / f"{base.name}{suffix}.json", base_fp)
    ckpt = base_out / "checkpoint_last.pt"
    if trained is None or not ckpt.is_file():
        print(f"{run.name}: waits for {base.name} (its checkpoint {ckpt} is not there yet)",
              flush=True)
        return {}
    if not claim(out):
        return {}
    threads = [o for o in extra if o.startswith("train.threads=")]
    report = evaluate_checkpoint(ckpt, out_dir=out / "eval", overrides=[*changes, *threads],
                                 progress=False)
    result = {"run": run.name + suffix, "suffix": suffix, "fingerprint": fp,
              "split": run.split.name, "method": run.method, "lever": run.lever,
              "seed": run.seed, "evaluated_from": base.name + suffix, "model_changes": changes,
              **report_figures(report)}
    write_json(out / "result.json", result)
    keep(out / "result.json", kept)
    return result


# -- the table ------------------------------------------------------------------------------

def _miou(r: dict, side: str) -> float | None:
    return (r.get("box_prompted") or {}).get("mean_iou", {}).get(side)


def _f(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{round(100 * x, 1) + 0.0:+.1f}" if signed else f"{100 * x:.1f}"


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return _f(values[0])
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def _label(method: str, lever: str | None) -> str:
    name = method.replace("_", "-")
    return f"{name} + {lever}" if lever else name


def table(results: list[dict], seeds: tuple[int, ...] = SEEDS) -> str:
    """The markdown tables (x100) of one split's kept results."""
    by = {(r["method"], r.get("lever"), r["seed"]): r for r in results}
    rows = [(m, None) for m in METHODS] + [(m, lever) for lever in LEVERS for m in LEVERS[lever][1]]
    rows = [row for row in rows if any((*row, s) in by for s in seeds)]
    any_result = next(iter(results), None)
    lines = [("Box-prompted mean IoU (x100), mean ± std over the seeds and per seed; the box as "
              "mask is the ground-truth box's rectangle:"), "",
             "| method | unseen | " + " | ".join(f"unseen s{s}" for s in seeds)
             + " | seen | unseen margin over the box |", "|---|---|" + "---|" * (len(seeds) + 2)]
    if any_result:
        box = any_result["box_prompted"]["box_baseline"]["mean_iou"]
        lines.append(f"| box as mask | {_f(box['unseen'])} | " + " | ".join("" for _ in seeds)
                     + f" | {_f(box['seen'])} | |")
    for method, lever in rows:
        rs = [by[(method, lever, s)] for s in seeds if (method, lever, s) in by]
        unseen = [_miou(r, "unseen") for r in rs if _miou(r, "unseen") is not None]
        seen = [_miou(r, "seen") for r in rs if _miou(r, "seen") is not None]
        margins = [r["box_prompted"]["margin_over_box"]["mean_iou"]["unseen"] for r in rs]
        per_seed = [_f(_miou(by[(method, lever, s)], "unseen")) if (method, lever, s) in by
                    else "-" for s in seeds]
        lines.append(f"| {_label(method, lever)} | {_mean_std(unseen)} | " + " | ".join(per_seed)
                     + f" | {_mean_std(seen)} | "
                     f"{_f(statistics.mean(margins), signed=True) if margins else '-'} |")

    lines += ["", ("Share of the agnostic-to-oracle gap on box-prompted unseen mean IoU closed, "
                   "(method - agnostic) / (oracle - agnostic), per seed (the baselines without "
                   "levers):"),
              "", "| method | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
              "|---|" + "---|" * (len(seeds) + 1)]
    for method, lever in rows:
        if (method, lever) in (("agnostic", None), ("oracle", None)):
            continue
        shares = []
        cells = []
        for s in seeds:
            m, a, o = by.get((method, lever, s)), by.get(("agnostic", None, s)), \
                by.get(("oracle", None, s))
            if not (m and a and o):
                cells.append("-")
                continue
            gap = _miou(o, "unseen") - _miou(a, "unseen")
            if gap <= 0:
                cells.append("n/a (no gap)")
                continue
            share = (_miou(m, "unseen") - _miou(a, "unseen")) / gap
            shares.append(share)
            cells.append(f"{round(100 * share):d} %")
        mean = f"{round(100 * statistics.mean(shares)):d} %" if shares else "-"
        lines.append(f"| {_label(method, lever)} | " + " | ".join(cells) + f" | {mean} |")

    levers = [(m, lever) for m, lever in rows if lever]
    if levers:
        lines += ["", ("Each lever minus the method it changes, box-prompted unseen mean IoU "
                       "(x100), paired by seed; a lever becomes the default only if it wins in "
                       "every seed:"), "",
                  "| lever | " + " | ".join(f"seed {s}" for s in seeds) + " | wins in |",
                  "|---|" + "---|" * (len(seeds) + 1)]
        for method, lever in levers:
            cells, wins, both = [], 0, 0
            for s in seeds:
                m, b = by.get((method, lever, s)), by.get((method, None, s))
                if not (m and b):
                    cells.append("-")
                    continue
                d = _miou(m, "unseen") - _miou(b, "unseen")
                both += 1
                wins += d > 0
                cells.append(_f(d, signed=True))
            lines.append(f"| {_label(method, lever)} - {_label(method, None)} | "
                         + " | ".join(cells) + f" | {wins} of {both} seeds |")

    if any_result:
        cats = sorted(any_result["box_prompted"]["box_baseline"]["by_category"],
                      key=lambda c: (c["seen"], c["id"]))
        lines += ["", ("Margin over the box per category, box-prompted mean IoU (x100), mean "
                       "over the seeds (unseen categories first, marked *; † where the seeds "
                       "disagree in sign); the first row is the box's own mean IoU:"), "",
                  "| method | " + " | ".join(c["name"] + ("" if c["seen"] else " *") for c in cats)
                  + " |", "|---|" + "---|" * len(cats),
                  "| box as mask | " + " | ".join(_f(c["mean_iou"]) for c in cats) + " |"]
        for method, lever in rows:
            rs = [by[(method, lever, s)] for s in seeds if (method, lever, s) in by]
            cells = []
            for c in cats:
                ms = [r["box_prompted"]["margin_over_box"]["by_category"].get(c["name"])
                      for r in rs]
                ms = [x for x in ms if x is not None]
                if not ms:
                    cells.append("-")
                    continue
                mixed = min(ms) < 0 < max(ms)
                cells.append(_f(statistics.mean(ms), signed=True) + (" †" if mixed else ""))
            lines.append(f"| {_label(method, lever)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_block(split: Split, text: str) -> None:
    """The tables into docs/results.md between the split's markers; the prose is kept."""
    results_md = ROOT / "docs" / "results.md"
    begin, end = f"<!-- transfer-{split.name}:begin -->", f"<!-- transfer-{split.name}:end -->"
    doc = results_md.read_text()
    if begin not in doc or end not in doc:
        return
    head, rest = doc.split(begin, 1)
    flag = "" if split.name == "transfer" else f" --split {split.name}"
    block = (f"{begin}\nFinished runs, {split.num_val} validation images (generated by "
             f"`{COMMAND}{flag}`):\n\n{text}\n{end}")
    results_md.write_text(head + block + rest.split(end, 1)[1])


def _smoke_place(folder: str | None) -> Place:
    root = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="transfer-smoke-"))
    extra = ("train.epochs=1", "train.max_iters_per_epoch=2", "train.batch_size=2",
             "train.threads=1", "train.log_every=1", "eval.plots=false")
    return Place(root / "data", root / "runs", root / "results", extra, smoke=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=list(SPLITS), default="transfer")
    parser.add_argument("--seeds", nargs="*", type=int, default=list(SEEDS))
    parser.add_argument("--levers", nargs="*", default=list(LEVERS),
                        help="levers to run (none: the methods only)")
    parser.add_argument("--set", nargs="*", default=[], help="extra config overrides")
    parser.add_argument("--table", action="store_true", help="only print the table")
    parser.add_argument("--suffix", default="",
                        help="kept as <run><suffix>.json (e.g. _gpu for runs on a GPU machine)")
    parser.add_argument("--smoke", action="store_true",
                        help="2 iterations an epoch on 6 training and 3 validation images, in a "
                             "temporary folder (or --smoke-dir); docs/results.md is not touched")
    parser.add_argument("--smoke-dir", default=None, help="the smoke run's folder")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.levers) - set(LEVERS))
    if unknown:
        parser.error(f"unknown levers {unknown}; known: {', '.join(LEVERS)}")
    split = SPLITS[args.split]
    place = (_smoke_place(args.smoke_dir) if args.smoke else
             Place(ROOT / "data", ROOT / "runs" / "transfer", ROOT / "benchmarks" / "results" / "transfer"))
    seeds = tuple(args.seeds)
    if args.smoke:
        print(f"smoke run in {place.data.parent}", flush=True)
    if not args.table:
        for run in runs_of(split, seeds, args.levers):
            r = run_one(run, place, args.set, args.suffix)
            done = (f"box-prompted mIoU unseen {_miou(r, 'unseen'):.3f}" if r
                    else "not run here (another worker, or the lever is not wired)")
            print(f"{run.name}: {done}", flush=True)
    results = [json.loads(p.read_text()) for p in sorted(place.kept.glob(f"{split.name}_*.json"))]
    results = [r for r in results if r.get("suffix", "") == args.suffix]
    text = table(results, seeds)
    print(text)
    if results and not args.smoke:
        write_block(split, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
