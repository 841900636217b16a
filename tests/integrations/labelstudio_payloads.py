"""Label Studio 1.23.2's webhook payloads, built as its `webhooks/serializers_for_hooks.py` writes
them (annotation and task with every field, `task`/`project` as ids, the project serialized),
from the synthetic dataset's images and masks."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
from label_studio_sdk.converter import brush
from pycocotools import mask as mask_utils

NAMES = ["disc", "square", "triangle", "cross", "hexagon", "ring", "crescent", "star"]


def label_config(names: list[str] = NAMES, polygons: bool = True) -> str:
    labels = "".join(f'<Label value="{n}"/>' for n in names)
    polygon = f'<PolygonLabels name="poly" toName="image">{labels}</PolygonLabels>' if polygons \
        else ""
    return (f'<View><Image name="image" value="$image"/>'
            f'<RectangleLabels name="box" toName="image" smart="true">{labels}</RectangleLabels>'
            f'<BrushLabels name="mask" toName="image">{labels}</BrushLabels>{polygon}</View>')


def project(project_id: int = 1) -> dict[str, Any]:
    return {"id": project_id, "title": "shapes", "label_config": label_config(),
            "task_number": 12, "created_by": 1, "model_version": ""}


def rectangle(label: str, bbox: list[float], w: int, h: int, rid: str) -> dict[str, Any]:
    x, y, bw, bh = bbox
    return {"id": rid, "type": "rectanglelabels", "from_name": "box", "to_name": "image",
            "original_width": w, "original_height": h, "image_rotation": 0,
            "value": {"x": 100 * x / w, "y": 100 * y / h, "width": 100 * bw / w,
                      "height": 100 * bh / h, "rotation": 0, "rectanglelabels": [label]}}


def brush_region(label: str, mask: np.ndarray, rid: str) -> dict[str, Any]:
    h, w = mask.shape
    return {"id": rid, "type": "brushlabels", "from_name": "mask", "to_name": "image",
            "original_width": w, "original_height": h, "image_rotation": 0,
            "value": {"format": "rle", "rle": brush.mask2rle(mask.astype(np.uint8) * 255),
                      "brushlabels": [label]}}


def polygon_region(label: str, points_px: list[tuple[float, float]], w: int, h: int,
                   rid: str) -> dict[str, Any]:
    return {"id": rid, "type": "polygonlabels", "from_name": "poly", "to_name": "image",
            "original_width": w, "original_height": h, "image_rotation": 0,
            "value": {"points": [[100 * x / w, 100 * y / h] for x, y in points_px],
                      "closed": True, "polygonlabels": [label]}}


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def task(task_id: int, png: bytes, project_id: int = 1) -> dict[str, Any]:
    return {"id": task_id, "data": {"image": data_uri(png)}, "project": project_id,
            "meta": {}, "is_labeled": True, "overlap": 1, "inner_id": task_id,
            "total_annotations": 1, "cancelled_annotations": 0, "total_predictions": 0,
            "created_at": "2026-12-06T10:00:00.000000Z", "updated_at": "2026-12-06T10:00:00Z"}


def annotation(annotation_id: int, task_id: int, result: list[dict[str, Any]],
               project_id: int = 1, updated_at: str = "2026-12-06T10:00:00.000000Z",
               was_cancelled: bool = False) -> dict[str, Any]:
    return {"id": annotation_id, "result": result, "task": task_id, "project": project_id,
            "completed_by": 1, "was_cancelled": was_cancelled, "ground_truth": False,
            "created_at": "2026-12-06T10:00:00.000000Z", "updated_at": updated_at,
            "draft_created_at": None, "lead_time": 12.5, "prediction": {}, "result_count": 0,
            "unique_id": f"u{annotation_id}", "import_id": None, "last_action": None,
            "bulk_created": False, "updated_by": 1, "parent_prediction": None,
            "parent_annotation": None, "last_created_by": None}


def created(ann: dict[str, Any], tsk: dict[str, Any], project_id: int = 1,
            action: str = "ANNOTATION_CREATED") -> dict[str, Any]:
    return {"action": action, "annotation": ann, "task": tsk, "project": project(project_id)}


def deleted(ids: list[int], project_id: int = 1) -> dict[str, Any]:
    return {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": i} for i in ids],
            "project": project(project_id)}


def dataset_events(dataset: Path, project_id: int = 1, with_masks: bool = True
                   ) -> list[dict[str, Any]]:
    """One ANNOTATION_CREATED per image of the synthetic dataset (train then val): each
    instance a rectangle and, with `with_masks`, a brush region of its true mask."""
    events = []
    task_id = 100
    for split in ("train", "val"):
        coco = json.loads((dataset / "annotations" / f"instances_{split}.json").read_text())
        names = {c["id"]: c["name"] for c in coco["categories"]}
        for info in coco["images"]:
            task_id += 1
            png = (dataset / "images" / split / info["file_name"]).read_bytes()
            w, h = info["width"], info["height"]
            result = []
            for k, ann in enumerate(a for a in coco["annotations"] if a["image_id"] == info["id"]):
                label = names[ann["category_id"]]
                result.append(rectangle(label, ann["bbox"], w, h, f"r{task_id}-{k}"))
                if with_masks and ann.get("segmentation"):
                    seg = ann["segmentation"]
                    rle = mask_utils.frPyObjects(seg, h, w) if isinstance(seg, list) else (
                        {"size": seg["size"], "counts": seg["counts"].encode()}
                        if isinstance(seg["counts"], str) else mask_utils.frPyObjects(seg, h, w))
                    if isinstance(rle, list):
                        rle = mask_utils.merge(rle)
                    result.append(brush_region(label, mask_utils.decode(rle) > 0,
                                               f"m{task_id}-{k}"))
            events.append(created(annotation(task_id * 10, task_id, result, project_id),
                                  task(task_id, png, project_id), project_id))
    return events
