"""The gate a new version passes before it is served: box-prompted mean IoU on held-out tasks.

Both the new version and the served one are scored here, by the same code on the same
held-out set, through the runtime (`Predictor`, torch-free, at the server's own precision and
input size): the figure is what an annotator would get from each, as served. Each held-out
instance's true box and category go in, one mask comes out, its IoU with the annotator's mask
is the score; the box itself taken as the mask (the box baseline) is scored beside it. An
instance of a category a model does not know scores 0 for that model (the annotator would get
no mask from it).

`boxmask finetune --val-coco` also writes RUN/evaluation.json (eager torch, the trainer's own
figure); it is kept with the version's figures but does not decide.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pycocotools import mask as mask_utils

from boxmask.runtime.boxes import BoxLimits, check_boxes
from boxmask.runtime.card import Category
from boxmask.runtime.errors import UnknownLabel

# Boxes per decoder call: far under the server's max_boxes, so a crowded image never trips it.
BOXES_PER_CALL = 8


class _Prompted(Protocol):
    card: Any
    limits: BoxLimits

    def set_image(self, image: bytes) -> str: ...

    def image_size(self, key: str | None = ...) -> tuple[int, int]: ...

    def predict(self, boxes: Any, labels: Any = ..., key: str | None = ...,
                class_scores: bool = ...) -> Any: ...


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def box_mask(bbox: list[float], height: int, width: int) -> np.ndarray:
    """A COCO [x, y, w, h] box as a mask: the pixels whose centre lies inside it."""
    x, y, w, h = bbox
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    return (xs >= x) & (xs <= x + w) & (ys >= y) & (ys <= y + h)


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def score(predictor: _Prompted, coco_path: Path, images: Path) -> dict[str, Any]:
    """`{"mean_iou", "box_mean_iou", "instances", "unknown_category", "by_category"}` of
    `predictor` on the held-out COCO file (every annotation has a mask)."""
    coco = json.loads(Path(coco_path).read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    model: dict[str, list[float]] = {}
    box: dict[str, list[float]] = {}
    unknown = 0
    for info in sorted(coco["images"], key=lambda i: i["id"]):
        anns = by_image.get(info["id"], [])
        if not anns:
            continue
        h, w = int(info["height"]), int(info["width"])
        key = predictor.set_image((Path(images) / info["file_name"]).read_bytes())
        truths = [mask_utils.decode({"size": a["segmentation"]["size"],
                                     "counts": a["segmentation"]["counts"].encode("ascii")}
                                    ).astype(bool) for a in anns]
        ious = [0.0] * len(anns)
        known: dict[int, Category] = {}  # each instance's category in this model, resolved once
        for k, a in enumerate(anns):
            try:
                known[k] = predictor.card.resolve(names[a["category_id"]])
            except UnknownLabel:
                unknown += 1
        order = list(known)
        for start in range(0, len(order), BOXES_PER_CALL):
            chunk = order[start:start + BOXES_PER_CALL]
            boxes = check_boxes([anns[k]["bbox"] for k in chunk], [known[k] for k in chunk],
                                card=predictor.card, image_size=predictor.image_size(key),
                                limits=predictor.limits, box_format="xywh")
            pred = predictor.predict(boxes, key=key, class_scores=False)
            for j, k in enumerate(chunk):
                ious[k] = mask_iou(np.asarray(pred.mask(j)).astype(bool), truths[k])
        for k, a in enumerate(anns):
            name = names[a["category_id"]]
            model.setdefault(name, []).append(ious[k])
            box.setdefault(name, []).append(mask_iou(box_mask(a["bbox"], h, w), truths[k]))
    every = [v for values in model.values() for v in values]
    every_box = [v for values in box.values() for v in values]
    return {"mean_iou": _mean(every), "box_mean_iou": _mean(every_box), "instances": len(every),
            "unknown_category": unknown,
            "by_category": [{"name": n, "instances": len(model[n]), "mean_iou": _mean(model[n]),
                             "box_mean_iou": _mean(box[n])} for n in sorted(model)]}


def decide(new: dict[str, Any], served: dict[str, Any], min_gain: float) -> tuple[bool, str]:
    """Whether the new version is better than the served one on the held-out set, and why."""
    a, b = new.get("mean_iou"), served.get("mean_iou")
    if a is None or b is None:
        return False, "no held-out instance could be scored"
    line = (f"held-out mean IoU {a:.4f} against the served version's {b:.4f} "
            f"(box baseline {new.get('box_mean_iou', float('nan')):.4f}; "
            f"{new.get('instances')} instances)")
    if a > b + min_gain:
        return True, f"promoted: {line}"
    need = "better" if min_gain == 0 else f"better by more than {min_gain}"
    return False, f"not promoted: {line}; a new version must be {need}"
