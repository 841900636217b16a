"""What makes the oracle good at the CPU budget? One change at a time, seed 0, oracle only.

The headline benchmark must let the oracle (every mask supervised) reach box-prompted mean IoU
>= 0.80 within about two hours of training on 2 CPU cores; on the first (``dense``) set it
stayed within a few points of the box. Each variant is a file of configs/ablation/, named as
the variant: configs/synth128_clear.yaml (its ``base``) with a few overrides, and the question
it asks (configs/ablation/README.md). The table gives box-prompted mean IoU (seen / unseen)
beside the box-as-mask baseline of the same instances, its margin over the box, mask AP, and
the training time.

Resumable like benchmarks/synthetic_experiment.py: a finished variant's ``result.json`` is kept
in benchmarks/results/recipe_ablation/ and skipped on a rerun while its overrides and the config
are unchanged; a cut-off variant resumes from its last epoch checkpoint; several workers may
share the list (each takes the variants no live worker holds).

    .venv/bin/python benchmarks/recipe_ablation.py --set train.threads=1   # every variant
    .venv/bin/python benchmarks/recipe_ablation.py --variants clear_sgd    # some of them
    .venv/bin/python benchmarks/recipe_ablation.py --table                 # only the table
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import NamedTuple

import yaml
from harness import markdown_table, run_and_keep

ROOT = Path(__file__).resolve().parents[1]
VARIANT_FILES = ROOT / "configs" / "ablation"
RUNS = ROOT / "runs" / "recipe_ablation"
KEPT = ROOT / "benchmarks" / "results" / "recipe_ablation"
COMMAND = "python benchmarks/recipe_ablation.py"

# dataset -> (scene, training images, generator version[, shape set, validation images]); its
# folder is data/<dataset>128, seed 0, 100 val images and the basic eight shapes unless said.
# Version 1 (boxmask.data.synthetic: crosses with a hole) is the version of every row before
# clear_v2, which is the same scenes with solid crosses. The generator seeds every image on its
# own, so clear2k's first 1000 training images and its validation images are clear's.
# clear_x: the extended shape set (twelve seen shapes, the same four unseen), so each unseen
# shape is one in sixteen of the objects instead of one in eight: 300 validation images keep
# about as many unseen instances per shape as clear_v2's 100 (about 60).
DATASETS = {"dense": ("dense", 1000, 1), "clear": ("clear", 1000, 1), "clear2k": ("clear", 2000, 1),
            "clear_v2": ("clear", 1000, 2), "clear_x": ("clear", 1000, 2, "extended", 300)}
_DATA_PATHS = ("data.train_annotations", "data.train_images", "data.val_annotations",
               "data.val_images")


class Variant(NamedTuple):
    """One variant, read from configs/ablation/<name>.yaml (configs/ablation/README.md)."""

    dataset: str  # a key of DATASETS: the generated set it trains on
    overrides: list[str]  # ``--set`` overrides on the base config
    base: Path  # the config file the overrides change
    init_from_variant: str | None = None  # trained first; its final checkpoint is model.init_from


def load_variant(path: Path) -> Variant:
    spec = yaml.safe_load(path.read_text())
    unknown = sorted(set(spec) - {"base", "dataset", "overrides", "init_from_variant"})
    if unknown or spec.get("dataset") not in DATASETS:
        raise SystemExit(f"{path}: unknown keys {unknown} or dataset {spec.get('dataset')!r} "
                         f"(known: {', '.join(DATASETS)})")
    return Variant(spec["dataset"], list(spec["overrides"]),
                   Path(os.path.normpath(path.parent / spec["base"])),
                   spec.get("init_from_variant"))


VARIANTS = {p.stem: load_variant(p) for p in sorted(VARIANT_FILES.glob("*.yaml"))}


def ensure_data(dataset: str) -> None:
    from boxmask.data.synthetic import ensure_generated

    scene, num_train, version, *rest = DATASETS[dataset]
    shapes, num_val = rest if rest else ("basic", 100)
    try:
        ensure_generated(ROOT / "data" / f"{dataset}128", seed=0, num_train=num_train,
                         num_val=num_val, image_size=128, scene=scene, version=version,
                         shapes=shapes)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def fingerprint(name: str, extra: list[str]) -> str:
    """What a variant's result depends on: its base config's bytes, its dataset and overrides
    and any extra overrides that change training (thread counts do not). Data paths count by
    where they point, as absolute paths, as they did when the variants were Python lists, so
    the results kept then stay current."""
    variant = VARIANTS[name]
    overrides = []
    for o in variant.overrides:
        key, _, value = o.partition("=")
        if key in _DATA_PATHS and not os.path.isabs(value):
            o = f"{key}={os.path.normpath(variant.base.parent / value)}"
        overrides.append(o)
    relevant = [o for o in extra if not o.startswith("train.threads=")]
    blob = variant.base.read_bytes() + json.dumps([[variant.dataset, overrides], relevant]).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def run_dir(name: str, extra: list[str], suffix: str = "") -> Path:
    """A variant's run folder: its name, suffix and fingerprint."""
    return RUNS / f"{name}{suffix}_{fingerprint(name, extra)[:8]}"


def run_one(name: str, extra: list[str], suffix: str = "") -> dict:
    """Train and evaluate one variant; its result is kept as ``<name><suffix>.json``.

    ``suffix`` keeps runs made elsewhere (``_gpu``: a CUDA machine) apart from the CPU ones.
    """
    from boxmask.config import load_config

    variant = VARIANTS[name]
    if (first := variant.init_from_variant) is not None:
        if not run_one(first, extra, suffix):
            return {}
        extra = [*extra, f"model.init_from={run_dir(first, extra, suffix) / 'checkpoint_last.pt'}"]
    out = run_dir(name, extra, suffix)
    head = {"variant": name + suffix, "fingerprint": fingerprint(name, extra),
            "scene": variant.dataset, "overrides": variant.overrides + extra}
    return run_and_keep(
        out, KEPT / f"{name}{suffix}.json", head,
        config=lambda: load_config(variant.base, [*variant.overrides, f"train.output_dir={out}",
                                                  *extra]),
        prepare=lambda: ensure_data(variant.dataset))


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def table(results: list[dict]) -> str:
    head = ["variant", "data", "device", "iterations", "s/it", "box-prompted mIoU seen / unseen",
            "box as mask seen / unseen", "margin seen / unseen",
            "box-prompted mask AP seen / unseen", "mask AP (detection) seen / unseen"]
    rows = []
    for r in results:
        bp = r["box_prompted"]
        box, margin = bp["box_baseline"], bp["margin_over_box"]
        rows.append([
            r["variant"], r["scene"], r.get("device", "cpu"), r["iterations"], r["seconds_per_iter"],
            f"{_pct(bp['mean_iou']['seen'])} / {_pct(bp['mean_iou']['unseen'])}",
            f"{_pct(box['mean_iou']['seen'])} / {_pct(box['mean_iou']['unseen'])}",
            f"{100 * margin['mean_iou']['seen']:+.1f} / {100 * margin['mean_iou']['unseen']:+.1f}",
            f"{_pct(bp['mask_ap']['seen']['AP'])} / {_pct(bp['mask_ap']['unseen']['AP'])}",
            f"{_pct(r['seen_mask_ap'])} / {_pct(r['unseen_mask_ap'])}"])
    return markdown_table(head, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--set", nargs="*", default=[], help="extra config overrides")
    parser.add_argument("--table", action="store_true", help="only print the table")
    parser.add_argument("--suffix", default="",
                        help="kept as <variant><suffix>.json (e.g. _gpu for runs on a GPU machine)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    if not args.table:
        for name in args.variants:
            r = run_one(name, args.set, args.suffix)
            done = (f"box-prompted mIoU unseen {r['box_prompted']['mean_iou']['unseen']:.3f}"
                    if r else "another worker runs it")
            print(f"{name}: {done}", flush=True)
    results = sorted((json.loads(p.read_text()) for p in KEPT.glob("*.json")),
                     key=lambda r: (r.get("device", "cpu"), r["iterations"] or 0, r["variant"]))
    text = table(results)
    print(text)
    write_block(text)
    return 0


def write_block(text: str) -> None:
    """The table into docs/results.md between the ablation markers; the prose is kept."""
    results_md = ROOT / "docs" / "results.md"
    begin, end = "<!-- ablation:begin -->", "<!-- ablation:end -->"
    doc = results_md.read_text()
    if begin not in doc or end not in doc:
        return
    head, rest = doc.split(begin, 1)
    block = (f"{begin}\nFinished variants, full validation set (100 images), x100 "
             f"(generated by `{COMMAND}`):\n\n{text}\n{end}")
    results_md.write_text(head + block + rest.split(end, 1)[1])


if __name__ == "__main__":
    raise SystemExit(main())
