"""The report of a labeling job: what was masked, what was skipped and why, how fast, and,
which masks to check first (the masks' review scores, boxmask.runtime.review).

Written as JSON beside the output (``OUT.report.json``) and printed as a summary table.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from boxmask.labeling.output import not_masked_reasons
from boxmask.labeling.plan import LabelPlan


def report_path(out: Path) -> Path:
    """``labels.json`` -> ``labels.report.json``."""
    out = Path(out)
    return out.with_name((out.stem if out.suffix == ".json" else out.name) + ".report.json")


def journal_path(out: Path) -> Path:
    """``labels.json`` -> ``labels.json.journal.jsonl``, the resume journal."""
    out = Path(out)
    return out.with_name(out.name + ".journal.jsonl")


def build_report(coco: Mapping[str, Any], plan: LabelPlan, results: Mapping[int, Mapping[str, Any]],
                 counts: Mapping[str, int], *, resumed: int, seconds: float,
                 job: Mapping[str, Any], paths: Mapping[str, str]) -> dict[str, Any]:
    """The JSON report.

    resumed: images whose results came from the journal of an earlier run.
    seconds: wall time of this run; images/s counts only the images this run labeled.
    """
    anns = coco["annotations"]
    # Each entry names the annotation by its position in the input (ids may repeat) and its
    # image, as well as by id.
    not_masked: dict[str, list[dict[str, Any]]] = {}
    for a, reason in not_masked_reasons(plan, results).items():
        not_masked.setdefault(reason, []).append(
            {"index": a, "id": anns[a].get("id"), "image_id": anns[a].get("image_id")})
    skipped_images = []
    for task in plan.tasks:
        r = results.get(task.index)
        if r is not None and r["status"] != "ok":
            skipped_images.append({"index": task.index, "image_id": task.image_id,
                                   "file_name": task.file_name, "reason": r["reason"],
                                   "detail": r["detail"]})
    this_run = len(results) - resumed
    review = review_list(coco, plan, results)
    quality = ({"mask_quality": {
        "masks": len(review),
        "mean": round(sum(r["quality"] for r in review) / len(review), 5),
        "lowest": review[0]["quality"]}} if review else {})
    return {
        **paths,
        "job": dict(job),
        "summary": {
            "images": len(plan.tasks),
            "images_labeled": sum(1 for r in results.values() if r["status"] == "ok"),
            "images_skipped": dict(sorted(Counter(s["reason"] for s in skipped_images).items())),
            "images_from_journal": resumed,
            "annotations": plan.num_annotations,
            "annotations_masked": counts["masked"],
            "annotations_not_masked": {k: len(v) for k, v in sorted(not_masked.items())},
            "pre_annotations": counts["pre_annotations"],
            "pre_annotations_unmatched": counts["pre_annotations_unmatched"],
            "seconds": round(seconds, 3),
            "images_per_second": round(this_run / seconds, 3) if seconds > 0 else None,
            **quality,
        },
        "skipped_images": skipped_images,
        "unknown_categories": [{"id": cid, **info} for cid, info in plan.unknown_categories.items()],
        "not_masked": {k: v for k, v in sorted(not_masked.items())},
        **({"review": review} if review else {}),
    }


def review_list(coco: Mapping[str, Any], plan: LabelPlan,
                results: Mapping[int, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The masks this job made that carry a quality (their review score), worst first:
    ``{"index", "id", "image_id", "category_id", "quality"}`` (``index``: the annotation's
    position in the output, ``pre_annotated`` for the detector's)."""
    anns = coco["annotations"]
    made = sorted({m["ann"] for r in results.values() if r["status"] == "ok" for m in r["masks"]})
    # Pre-annotations are appended after the input's annotations.
    made += range(plan.num_annotations, len(anns))
    review = []
    for i in made:
        marker = anns[i].get("boxmask")
        if not isinstance(marker, Mapping) or "quality" not in marker:
            continue
        entry = {"index": i, "id": anns[i].get("id"), "image_id": anns[i].get("image_id"),
                 "category_id": anns[i].get("category_id"), "quality": marker["quality"]}
        if marker.get("pre_annotated"):
            entry["pre_annotated"] = True
        review.append(entry)
    review.sort(key=lambda e: (e["quality"], e["index"]))
    return review


def nothing_labeled(report: Mapping[str, Any]) -> str | None:
    """One line saying why no image at all could be labeled; None when one was (or when the
    input has no image to label)."""
    s = report["summary"]
    if not s["images"] or s["images_labeled"]:
        return None
    reasons = ", ".join(f"{k}: {v}" for k, v in s["images_skipped"].items()) or "none labeled"
    return (f"no image could be labeled ({s['images']} of {s['images']} skipped; {reasons}); "
            f"the output has no new masks; see {report.get('report') or 'the report'}")


def print_summary(report: Mapping[str, Any], console: Console) -> None:
    s = report["summary"]
    table = Table(title="boxmask label", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("images", f"{s['images']} ({s['images_labeled']} labeled"
                  + (f", {s['images_from_journal']} from the journal" if s["images_from_journal"] else "")
                  + ")")
    skipped = ", ".join(f"{k}: {v}" for k, v in s["images_skipped"].items())
    table.add_row("images skipped", skipped or "none")
    table.add_row("annotations masked", f"{s['annotations_masked']} of {s['annotations']}")
    not_masked = ", ".join(f"{k}: {v}" for k, v in s["annotations_not_masked"].items())
    table.add_row("not masked", not_masked or "none")
    if report["unknown_categories"]:
        table.add_row("unknown categories", ", ".join(
            f"{c['name']} ({c['annotations']})" for c in report["unknown_categories"]))
    if s["pre_annotations"] or s["pre_annotations_unmatched"]:
        table.add_row("pre-annotations", str(s["pre_annotations"]))
    if "mask_quality" in s:
        q = s["mask_quality"]
        worst = report["review"][0]
        table.add_row("mask quality", f"mean {q['mean']:.3f}, lowest {q['lowest']:.3f} "
                      f"(annotation id {worst['id']}); check first: the report's review list")
    rate = s["images_per_second"]
    table.add_row("time", f"{s['seconds']:.1f} s" + (f", {rate:.2f} images/s" if rate else ""))
    table.add_row("output", report.get("output", ""))
    table.add_row("report", report.get("report", ""))
    console.print(table)
