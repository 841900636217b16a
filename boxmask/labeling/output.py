"""Building the output COCO file from the input and the per-image results, and writing it
atomically.

Every field of the input is kept as it was, in its order, and every input annotation is in
the output. Each carries a ``boxmask`` field saying what boxmask did with it, so a consumer
never mistakes one that got no mask for one that did. A masked annotation gets (or has
replaced) its ``segmentation`` and::

    "boxmask": {"status": "masked", "score": 0.93, "model": "synthetic-demo",
                "version": "3f2a9c01b7de", "mask_area": 812}

one that did not, its input fields untouched and::

    "boxmask": {"status": "not_masked", "reason": "empty_mask", "model": ..., "version": ...}

with the report's reasons (``empty_mask``, ``below_min_score``, ``image_skipped``,
``no_box``, ``crowd``, ``unknown_category``, ...). An annotation left alone because it has a
segmentation (``--only-missing``) keeps a ``boxmask`` field it already had from an earlier run.

``score`` is the runtime's score for the box and its category (the box head's probability of
that category), ``version`` the first 12 hex digits of the sha256 of the model's ``model.json``,
``mask_area`` the mask's pixel count (COCO ``area`` is left as the input had it), ``quality``
the mask's review score (boxmask.runtime.review: confidence, colour separation and, for a
model with the mask-quality head, its predicted IoU; the report lists the masks worst first); ``--tight-boxes`` adds ``tight_bbox``, the box of the mask's pixels as COCO's
``[x, y, width, height]`` (``bbox`` stays the input's). Pre-annotated annotations are appended
after all input annotations, in image order, with new ids and
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
    made_by = {"model": model["name"], "version": model["version"]}
    for a, reason in not_masked_reasons(plan, results).items():
        if reason == "has_segmentation" and isinstance(anns[a].get("boxmask"), Mapping):
            continue  # its segmentation is an earlier run's, and so is its marker
        anns[a]["boxmask"] = {"status": "not_masked", "reason": reason, **made_by}
    new_anns = []
    for task in plan.tasks:
        result = results.get(task.index)
        if result is None or result["status"] != "ok":
            continue
        for m in result["masks"]:
            ann = anns[m["ann"]]
            ann["segmentation"] = m["segmentation"]
            ann["boxmask"] = {"status": "masked", "score": m["score"], **made_by,
                              "mask_area": m["area"], **_extras(m)}
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
                "boxmask": {"status": "masked", "score": d["score"], **made_by,
                            "mask_area": d["area"], **_extras(d), "pre_annotated": True}})
            next_id += 1
    anns.extend(new_anns)
    counts["pre_annotations"] = len(new_anns)
    return counts


def _extras(record: Mapping[str, Any]) -> dict[str, Any]:
    """The optional fields of a mask record that go into ``boxmask`` as they are."""
    return {k: record[k] for k in ("quality", "tight_bbox") if k in record}


def not_masked_reasons(plan: LabelPlan, results: Mapping[int, Mapping[str, Any]]) -> dict[int, str]:
    """Input annotation position -> why it got no mask: set aside by the plan, dropped by the
    labeler, or on an image that was skipped. In annotation order."""
    reasons = dict(plan.skipped_annotations)
    for task in plan.tasks:
        result = results.get(task.index)
        if result is None:
            continue
        if result["status"] != "ok":
            reasons.update((a, "image_skipped") for a in task.ann_indices)
        else:
            reasons.update((a, reason) for a, reason in result["dropped"])
    return dict(sorted(reasons.items()))


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
