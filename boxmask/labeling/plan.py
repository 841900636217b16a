"""From a COCO file to a list of per-image tasks: which boxes to segment with which category.

Everything that can be decided without looking at pixels is decided here, once, in input
order, so that the local and the Ray engine (and a resumed run) work from the same plan.
Annotations that will not get a mask are recorded with the reason, never dropped.
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any

from boxmask.labeling.label_map import CategoryMapping, map_categories


@dataclass(frozen=True)
class ImageTask:
    """One image's work.

    index: position of the image in the input's ``images`` list (the output keeps that order).
    ann_indices: positions in the input's ``annotations`` list of the annotations to segment.
    boxes: their boxes, ``[x1, y1, x2, y2]`` in pixels (from COCO ``[x, y, w, h]``).
    category_ids: the **model's** category id for each box.
    height, width: what the input says about the image (``None`` if it says nothing); a decoded
        image of another size is skipped, since its masks would not fit the annotations.
    pre_annotate: run the detector on this image (it has no box at all).
    """

    index: int
    image_id: int
    file_name: str
    path: str  # "" when file_name is absolute or leads out of --images
    height: int | None
    width: int | None
    ann_indices: list[int] = field(default_factory=list)
    boxes: list[list[float]] = field(default_factory=list)
    category_ids: list[int] = field(default_factory=list)
    pre_annotate: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ImageTask:
        return cls(**d)


@dataclass
class LabelPlan:
    """The tasks, in input order, and what was set aside before any image was read.

    skipped_annotations: input annotation position -> reason (``no_box``, ``invalid_box``,
        ``has_segmentation``, ``crowd``, ``unknown_category``, ``unmapped``, ``unknown_image``).
    unknown_categories: dataset category id -> {"name", "reason", "annotations"} for categories
        the model cannot label, with how many annotations they have.
    """

    tasks: list[ImageTask]
    mapping: CategoryMapping
    skipped_annotations: dict[int, str]
    unknown_categories: dict[int, dict[str, Any]]
    num_annotations: int


def confined_path(images_dir: Path, file_name: str) -> str:
    """``images_dir / file_name`` as a string, or "" when `file_name` is absolute or climbs out
    of `images_dir` (``../../etc/hostname``): a dataset names images under --images, nowhere
    else. Checked on the names only, so an --images folder of symlinks still works."""
    name = str(file_name).replace("\\", "/")
    if not name or name.startswith("/") or PureWindowsPath(name).drive:
        return ""
    normal = posixpath.normpath(name)
    if normal == ".." or normal.startswith("../"):
        return ""
    return str(images_dir / normal)


def has_segmentation(ann: Mapping[str, Any]) -> bool:
    """True if the annotation already carries a non-empty polygon list or RLE."""
    seg = ann.get("segmentation")
    if isinstance(seg, Mapping):
        return bool(seg.get("counts"))
    if isinstance(seg, Sequence) and not isinstance(seg, (str, bytes)):
        return any(len(p) >= 6 for p in seg if isinstance(p, Sequence))
    return False


def _box_xyxy(bbox: Any) -> list[float] | None:
    """COCO ``[x, y, w, h]`` as ``[x1, y1, x2, y2]``, or None if it is not a usable box."""
    if not isinstance(bbox, Sequence) or isinstance(bbox, (str, bytes)) or len(bbox) != 4:
        return None
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        return None
    if x + w <= x or y + h <= y:  # a size below the coordinates' precision: no box either
        return None
    return [x, y, x + w, y + h]


def build_plan(coco: Mapping[str, Any], images_dir: str | Path, model_names: Mapping[str, int],
               label_map: Mapping[str, str | None] | None = None, only_missing: bool = False,
               pre_annotate: bool = False) -> LabelPlan:
    """Group the annotations to segment by image, in input order.

    coco: a file `boxmask.labeling.coco_file.check_coco` accepted (integer ids, unique image
        ids, string file names).
    model_names: model category name -> model category id.
    """
    mapping = map_categories(coco["categories"], model_names, label_map)
    images_dir = Path(images_dir).absolute()  # workers (Ray actors) may run elsewhere
    cat_names = {c["id"]: c["name"] for c in coco["categories"]}
    position = {im["id"]: i for i, im in enumerate(coco["images"])}
    per_image: list[list[tuple[int, list[float], int]]] = [[] for _ in coco["images"]]
    has_box = [False] * len(coco["images"])
    skipped: dict[int, str] = {}
    unknown: dict[int, dict[str, Any]] = {}

    for a, ann in enumerate(coco["annotations"]):
        img_pos = position.get(ann["image_id"])
        box = _box_xyxy(ann.get("bbox"))
        if img_pos is None:
            skipped[a] = "unknown_image"
            continue
        if box is not None:
            has_box[img_pos] = True
        cat_id = ann.get("category_id")
        if "bbox" not in ann:
            reason = "no_box"
        elif box is None:
            reason = "invalid_box"
        elif ann.get("iscrowd", 0):
            # A crowd region is many objects: one box cannot prompt its mask.
            reason = "crowd"
        elif only_missing and has_segmentation(ann):
            reason = "has_segmentation"
        elif cat_id in mapping.to_model:
            per_image[img_pos].append((a, box, mapping.to_model[cat_id]))
            continue
        else:
            reason = mapping.unknown.get(cat_id, "unknown_category")
            entry = unknown.setdefault(cat_id, {"name": cat_names.get(cat_id), "reason": reason,
                                                "annotations": 0})
            entry["annotations"] += 1
        skipped[a] = reason

    tasks = []
    for i, im in enumerate(coco["images"]):
        items = per_image[i]
        tasks.append(ImageTask(
            index=i, image_id=im["id"], file_name=im["file_name"],
            path=confined_path(images_dir, im["file_name"]),
            height=im.get("height"), width=im.get("width"),
            ann_indices=[a for a, _, _ in items], boxes=[b for _, b, _ in items],
            category_ids=[c for _, _, c in items],
            pre_annotate=pre_annotate and not has_box[i]))
    return LabelPlan(tasks=tasks, mapping=mapping, skipped_annotations=skipped,
                     unknown_categories=unknown, num_annotations=len(coco["annotations"]))
