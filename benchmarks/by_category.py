"""Box-prompted mean IoU per category, for groups of kept results, beside the box as mask.

Every kept result of the experiment and the recipe ablation carries ``box_prompted.by_category``
(and the box's own under ``box_prompted.box_baseline``); this script puts them side by side:
one row per group (the mean over the group's files, e.g. the seeds of a method), one column per
category, a ``*`` on the categories the group's runs treat as unseen (learnt from boxes only),
and the runs' own seen / unseen means.

    python benchmarks/by_category.py \\
        oracle='benchmarks/results/synthetic_experiment_clear/oracle_s*.json' \\
        ts='benchmarks/results/synthetic_experiment_clear/teacher_student_threshold_ignore_s*.json'

A group is ``label=glob`` (or a bare glob, labelled by itself). All files of a group must
split the categories the same way, or the script stops: a mean over two splits means nothing.
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
from pathlib import Path
from typing import Any


def load_groups(specs: list[str]) -> dict[str, list[dict[str, Any]]]:
    """``{label: [result, ...]}`` from ``label=glob`` specs, in the order given."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for spec in specs:
        label, _, pattern = spec.partition("=") if "=" in spec else (spec, "", spec)
        paths = sorted(glob.glob(pattern))
        if not paths:
            raise SystemExit(f"{spec}: no file matches {pattern!r}")
        groups[label] = [json.loads(Path(p).read_text()) for p in paths]
    return groups


def _split(result: dict[str, Any]) -> tuple[str, ...]:
    return tuple(c["name"] for c in result["box_prompted"]["by_category"] if not c["seen"])


def table(groups: dict[str, list[dict[str, Any]]]) -> str:
    """The markdown table (x100)."""
    first = next(iter(groups.values()))[0]["box_prompted"]
    names = [c["name"] for c in sorted(first["by_category"], key=lambda c: c["id"])]
    lines = ["| run | files | " + " | ".join(names) + " | seen | unseen |",
             "|---|---|" + "---|" * (len(names) + 2)]
    box = first.get("box_baseline")
    if box:
        cells = {c["name"]: c["mean_iou"] for c in box["by_category"]}
        lines.append("| box as mask | | " + " | ".join(f"{100 * cells[n]:.1f}" for n in names)
                     + f" | {100 * box['mean_iou']['seen']:.1f} "
                     f"| {100 * box['mean_iou']['unseen']:.1f} |")
    for label, results in groups.items():
        splits = {_split(r) for r in results}
        if len(splits) > 1:
            raise SystemExit(f"{label}: its files split the categories differently: {splits}")
        unseen = set(splits.pop())
        row = []
        for n in names:
            vals = [next(c["mean_iou"] for c in r["box_prompted"]["by_category"]
                         if c["name"] == n) for r in results]
            row.append(f"{100 * statistics.mean(vals):.1f}" + ("*" if n in unseen else ""))
        means = [statistics.mean(r["box_prompted"]["mean_iou"][side] for r in results)
                 for side in ("seen", "unseen")]
        lines.append(f"| {label} | {len(results)} | " + " | ".join(row)
                     + f" | {100 * means[0]:.1f} | {100 * means[1]:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("groups", nargs="+", metavar="LABEL=GLOB")
    args = ap.parse_args(argv)
    print("Box-prompted mean IoU by category, x100 (* : unseen in that run, learnt from boxes; "
          "a group's figures are the mean over its files)\n")
    print(table(load_groups(args.groups)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
