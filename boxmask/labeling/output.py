"""Building the output COCO file from the input and the per-image results, and writing it
atomically.

Every field of the input is kept as it was, in its order. A masked annotation gets (or has
replaced) its ``segmentation`` and a new ``boxmask`` field::

    "boxmask": {"score": 0.93, "model": "synthetic-demo", "version": "3f2a9c01b7de",
                "mask_area": 812}

``score`` is the runtime's score for the box and its category (the box head's probability of
that category), ``version`` the first 12 hex digits of the sha256 of the model's ``model.json``,
``mask_area`` the mask's pixel count (COCO ``area`` is left as the input had it). Pre-annotated
annotations are appended after all input annotations, in image order, with new ids and
``"boxmask": {..., "pre_annotated": true}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from boxmask.files import atomic_output
from boxmask.labeling.plan import LabelPlan


def apply_results(coco: dict[str, Any], plan: LabelPlan, results: Mapping[int, Mapping[str, Any]],
                  model: Mapping[str, str]) -> dict[str, int]:
    """Write the results into `coco` (modified in place) and return counts.

    model: ``{"name", "version"}`` for the ``boxmask`` field. Results are applied in image
    order, whatever order they finished in.
    """
    anns = coco["annotations"]
    next_id = max((a["id"] for a in anns if isinstance(a.get("id"), int)), default=0) + 1
    counts = {"masked": 0, "pre_annotations": 0, "pre_annotations_unmatched": 0}
    new_anns = []
    for task in plan.tasks:
        result = results.get(task.index)
        if result is None or result["status"] != "ok":
            continue
        for m in result["masks"]:
            ann = anns[m["ann"]]
            ann["segmentation"] = m["segmentation"]
            ann["boxmask"] = {"score": m["score"], "model": model["name"],
                              "version": model["version"], "mask_area": m["area"]}
            counts["masked"] += 1
        for d in result["detections"]:
            cat = plan.mapping.to_dataset.get(d["category_id"])
            if cat is None:  # a model category the dataset does not have
                counts["pre_annotations_unmatched"] += 1
                continue
            new_anns.append({
                "id": next_id, "image_id": task.image_id, "category_id": cat,
                "bbox": d["bbox"], "area": d["area"], "iscrowd": 0,
                "segmentation": d["segmentation"],
                "boxmask": {"score": d["score"], "model": model["name"],
                            "version": model["version"], "mask_area": d["area"],
                            "pre_annotated": True}})
            next_id += 1
    anns.extend(new_anns)
    counts["pre_annotations"] = len(new_anns)
    return counts


def write_json_atomic(path: Path, obj: Any, indent: int | None = None) -> None:
    """Write `obj` as JSON to `path` so that readers see the old file or the whole new one
    (`boxmask.files.atomic_output`: temporary file, fsync, rename).

    UTF-8 with non-ASCII text as is; a string that UTF-8 cannot hold (a lone surrogate, which
    JSON's ``\\ud83d`` escapes can carry) makes the whole file ASCII with escapes instead of
    failing after the work is done.
    """
    separators = (",", ":") if indent is None else None
    with atomic_output(path, "w", hidden=True) as f:
        try:
            json.dump(obj, f, indent=indent, separators=separators, ensure_ascii=False)
        except UnicodeEncodeError:
            f.seek(0)
            f.truncate()
            json.dump(obj, f, indent=indent, separators=separators, ensure_ascii=True)


def remove_stale_temporaries(path: Path) -> None:
    """Delete temporary files a killed run left beside `path` (they were never renamed)."""
    for stale in Path(path).parent.glob(f".{Path(path).name}.*.tmp"):
        stale.unlink(missing_ok=True)
