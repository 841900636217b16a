"""A project's annotations -> the COCO files of a training round (train and held-out).

Per task, its newest annotation (as for predictions: two annotators' boxes of one object would
make two instances of it). Its regions become instances:

- `RectangleLabels`: a box and its category (rotated boxes: the axis-aligned box around them);
- `BrushLabels` (Label Studio's brush RLE, decoded by `label_studio_sdk.converter.brush`) and
  `PolygonLabels`: a mask. A mask is matched to the box of its category it falls in (at least
  half of its pixels inside; the box holding the larger share wins, then the smaller box), one
  mask per box; a mask without such a box is an instance with its own box (the mask's extent).

Labels become categories through the served model's card and the label map (the
predictions' rule, `LabelMapper`): a label the model knows keeps that category's id and name,
so a round fine-tunes the categories it already has; a label it does not know becomes a new
category, named as the label, with the next free id.

Held-out: among the tasks that have at least one mask, those whose hash (of project and task
id) falls under `heldout_percent` are kept out of training and used to score the new version
against the served one. The split depends on nothing else, so a task stays on its side from
round to round. Held-out instances without a mask cannot be scored and are left out.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
from label_studio_sdk.converter import brush
from PIL import Image
from pycocotools import mask as mask_utils

from boxmask.integrations.labels import LabelMapper
from boxmask.integrations.labelstudio.backend import TaskError, region_to_box
from boxmask.integrations.labelstudio.protocol import Region
from boxmask.integrations.labelstudio.store import StoredAnnotation
from boxmask.runtime.card import ModelCard
from boxmask.runtime.errors import UnknownLabel

log = logging.getLogger("boxmask.integrations.labelstudio.dataset")

BRUSH, POLYGON, RECTANGLE = "brushlabels", "polygonlabels", "rectanglelabels"
# A mask "falls in" a box when at least this share of its pixels is inside it.
INSIDE_SHARE = 0.5


@dataclass
class Instance:
    """One object of a task: its label, box (xyxy pixels) and mask (bool H x W) if any."""

    label: str
    box: tuple[float, float, float, float]
    mask: np.ndarray | None = None


@dataclass
class RoundData:
    """What `write_round` wrote: the files and what they hold."""

    train: Path
    heldout: Path | None
    images: Path
    categories: list[dict[str, Any]]
    train_images: int = 0
    train_instances: int = 0
    train_masks: int = 0
    heldout_images: int = 0
    heldout_instances: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    digest: str = ""

    def summary(self) -> dict[str, Any]:
        return {"train_images": self.train_images, "train_instances": self.train_instances,
                "train_masks": self.train_masks, "heldout_images": self.heldout_images,
                "heldout_instances": self.heldout_instances, "skipped": self.skipped,
                "categories": [c["name"] for c in self.categories]}


class Categories:
    """Label -> COCO category, through the served model's card and the label map."""

    def __init__(self, card: ModelCard, label_map: Mapping[str, str | int]) -> None:
        known = {c.id for c in card.categories}
        mapping = {k: v for k, v in label_map.items() if _resolvable(card, v)}
        self.mapper = LabelMapper(card, mapping)
        self.next_id = max(known) + 1
        self.by_label: dict[str, dict[str, Any]] = {}

    def category(self, label: str) -> dict[str, Any]:
        found = self.by_label.get(label)
        if found is not None:
            return found
        try:
            c = self.mapper.category(label)
            found = {"id": c.id, "name": c.name}
        except UnknownLabel:
            same = [v for v in self.by_label.values() if v["name"] == label]
            found = same[0] if same else {"id": self.next_id, "name": label}
            if not same:
                self.next_id += 1
        self.by_label[label] = found
        return found


def _resolvable(card: ModelCard, target: str | int) -> bool:
    try:
        card.resolve(target)
    except UnknownLabel:
        return False
    return True


def heldout(project: str, task_id: str, percent: float) -> bool:
    """Whether a task (with masks) is held out: a fixed hash of project and task, so a task
    never changes sides between rounds."""
    digest = hashlib.sha256(f"{project}:{task_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 10_000 < percent * 100


def newest_per_task(annotations: Sequence[StoredAnnotation]) -> list[StoredAnnotation]:
    """Each task's newest annotation (by `updated_at`, then store order), by task id."""
    best: dict[str, StoredAnnotation] = {}
    for a in annotations:  # in store order: a later change wins a tie
        b = best.get(a.task_id)
        if b is None or (a.updated_at or "") >= (b.updated_at or ""):
            best[a.task_id] = a
    return [best[k] for k in sorted(best, key=_task_order)]


def _task_order(task_id: str) -> tuple[int, int, str]:
    return (0, int(task_id), "") if task_id.isdigit() else (1, 0, task_id)


def _label(value: Mapping[str, Any], key: str) -> str | None:
    names = value.get(key) or value.get("labels")
    return str(names[0]) if isinstance(names, list) and names else None


def _positive_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _brush_mask(item: Mapping[str, Any], width: int, height: int) -> np.ndarray:
    value = item.get("value") or {}
    rle = value.get("rle")
    ow, oh = item.get("original_width"), item.get("original_height")
    if not isinstance(rle, list) or not rle or not all(isinstance(v, int) and 0 <= v < 256
                                                      for v in rle):
        raise ValueError("brush region without an RLE")
    if not (_positive_int(ow) and _positive_int(oh)):
        ow, oh = width, height
    # The RLE's header says how many values it decodes to: check it before decoding, so a
    # forged header cannot make the decoder allocate gigabytes.
    if len(rle) < 4 or int.from_bytes(bytes(rle[:4]), "big") != ow * oh * 4:
        raise ValueError("brush RLE does not match its image size")
    if ow * oh > 4 * width * height + 1_000_000:
        raise ValueError("brush region far larger than its image")
    try:
        flat = brush.decode_rle(rle)
    except (ValueError, IndexError) as exc:
        raise ValueError(f"brush RLE cannot be decoded ({type(exc).__name__})") from None
    mask = flat.reshape(oh, ow, 4)[:, :, 3] > 0
    if (oh, ow) != (height, width):
        resized = Image.fromarray(mask.astype(np.uint8) * 255).resize(
            (width, height), Image.Resampling.NEAREST)
        mask = np.asarray(resized) > 0
    return mask


def _polygon_mask(item: Mapping[str, Any], width: int, height: int) -> np.ndarray:
    points = (item.get("value") or {}).get("points")
    if not isinstance(points, list) or len(points) < 3:
        raise ValueError("polygon region with fewer than 3 points")
    flat: list[float] = []
    for p in points:
        if (not isinstance(p, list) or len(p) != 2
                or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in p)):
            raise ValueError("polygon point is not [x, y] in percent")
        flat += [p[0] / 100 * width, p[1] / 100 * height]
    rle = mask_utils.merge(mask_utils.frPyObjects([flat], height, width))
    return mask_utils.decode(rle).astype(bool)


def _mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def instances_of(result: Sequence[Any], width: int, height: int,
                 problems: dict[str, int] | None = None) -> list[Instance]:
    """The instances of one annotation's result on an image of `width` x `height`."""
    problems = problems if problems is not None else {}

    def skip(why: str) -> None:
        problems[why] = problems.get(why, 0) + 1

    boxes: list[Instance] = []
    masks: list[tuple[str, np.ndarray]] = []
    for item in result:
        if not isinstance(item, Mapping):
            continue
        kind = item.get("type")
        try:
            if kind == RECTANGLE:
                region = Region.parse(item)
                assert region is not None
                box = region_to_box(region, width, height)
                x1, y1 = max(box.xyxy[0], 0.0), max(box.xyxy[1], 0.0)
                x2, y2 = min(box.xyxy[2], float(width)), min(box.xyxy[3], float(height))
                if x2 - x1 < 1 or y2 - y1 < 1:
                    skip("box outside its image")
                    continue
                boxes.append(Instance(label=box.label, box=(x1, y1, x2, y2)))
            elif kind in (BRUSH, POLYGON):
                if not isinstance(item.get("value"), Mapping):
                    raise ValueError(f"{kind} region without a value")
                label = _label(item["value"], kind)
                if label is None:
                    skip("mask without a label")
                    continue
                mask = (_brush_mask if kind == BRUSH else _polygon_mask)(item, width, height)
                if mask.any():
                    masks.append((label, mask))
                else:
                    skip("empty mask")
        except (ValueError, TaskError) as exc:
            log.debug("region skipped", extra={"error": str(exc)})
            skip(f"malformed {kind} region")
    pairs = []
    for m, (label, mask) in enumerate(masks):
        area = int(mask.sum())
        for b, inst in enumerate(boxes):
            if inst.label != label:
                continue
            x1, y1, x2, y2 = (round(v) for v in inst.box)
            share = mask[max(y1, 0):y2, max(x1, 0):x2].sum() / area
            if share >= INSIDE_SHARE:
                box_area = (inst.box[2] - inst.box[0]) * (inst.box[3] - inst.box[1])
                pairs.append((-share, box_area, m, b))
    used_masks: set[int] = set()
    for _, _, m, b in sorted(pairs):
        if m in used_masks or boxes[b].mask is not None:
            continue
        boxes[b].mask = masks[m][1]
        used_masks.add(m)
    own = [Instance(label=label, box=_mask_box(mask), mask=mask)
           for m, (label, mask) in enumerate(masks) if m not in used_masks]
    return boxes + own


def _coco_annotation(ann_id: int, image_id: int, category_id: int, inst: Instance
                     ) -> dict[str, Any]:
    x1, y1, x2, y2 = inst.box
    record: dict[str, Any] = {"id": ann_id, "image_id": image_id, "category_id": category_id,
                              "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3),
                                       round(y2 - y1, 3)],
                              "area": round((x2 - x1) * (y2 - y1), 3), "iscrowd": 0}
    if inst.mask is not None:
        rle = mask_utils.encode(np.asfortranarray(inst.mask.astype(np.uint8)))
        record["segmentation"] = {"size": [int(s) for s in rle["size"]],
                                  "counts": rle["counts"].decode("ascii")}
        record["area"] = int(inst.mask.sum())
    return record


def _write_json(path: Path, data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return hashlib.sha256(text.encode()).hexdigest()


#: Gives the image file of a task: (task id, its data) -> the file, or raises with the reason.
ImageOf = Callable[[str, Mapping[str, Any]], Path]


def write_round(project: str, annotations: Sequence[StoredAnnotation], image_of: ImageOf,
                categories: Categories, heldout_percent: float, out: Path,
                image_size: Callable[[Path], tuple[int, int]]) -> RoundData:
    """Write `out/train.json` and (when some task is held out) `out/heldout.json`.

    `image_of(task id, task data)` fetches a task's image into the image folder (every image
    must be in one folder: COCO file names are relative to it); a task whose image cannot be
    had is skipped and counted, so one broken URL does not stop a round.
    """
    out.mkdir(parents=True, exist_ok=True)
    skipped: dict[str, int] = {}
    sides: dict[str, dict[str, list]] = {"train": {"images": [], "annotations": []},
                                         "heldout": {"images": [], "annotations": []}}
    used: dict[str, set[int]] = {"train": set(), "heldout": set()}
    folder: Path | None = None
    for number, annotation in enumerate(newest_per_task(annotations), start=1):
        if annotation.task_data is None:
            skipped["task data never sent"] = skipped.get("task data never sent", 0) + 1
            continue
        try:
            path = image_of(annotation.task_id, annotation.task_data)
        except Exception as exc:  # noqa: BLE001 - any fetch failure skips this task only
            log.warning("task image not fetched", extra={"project": project,
                                                        "task": annotation.task_id,
                                                        "error": getattr(exc, "detail", str(exc))})
            skipped["image not fetched"] = skipped.get("image not fetched", 0) + 1
            continue
        folder = path.parent
        width, height = image_size(path)
        instances = instances_of(annotation.result, width, height, skipped)
        if not instances:
            skipped["no region to learn from"] = skipped.get("no region to learn from", 0) + 1
            continue
        has_mask = any(i.mask is not None for i in instances)
        side = "heldout" if has_mask and heldout(project, annotation.task_id,
                                                  heldout_percent) else "train"
        if side == "heldout":
            instances = [i for i in instances if i.mask is not None]
        sides[side]["images"].append({"id": number, "file_name": path.name, "width": width,
                                      "height": height, "label_studio_task": annotation.task_id})
        for inst in instances:
            category = categories.category(inst.label)
            used[side].add(category["id"])
            sides[side]["annotations"].append((number, category["id"], inst))
    if folder is None or not sides["train"]["images"]:
        raise ValueError("no task to train on: "
                         + (", ".join(f"{n} {why}" for why, n in sorted(skipped.items()))
                            or "no annotation with a box, a brush or a polygon yet"))
    cats = sorted({c["id"]: c for c in categories.by_label.values()}.values(),
                  key=lambda c: c["id"])
    train_cats = [c for c in cats if c["id"] in used["train"]]
    data = RoundData(train=out / "train.json", heldout=None, images=folder,
                     categories=train_cats, skipped=skipped)
    digests = []
    for side in ("train", "heldout"):
        keep = {c["id"] for c in train_cats}
        anns = [(i, c, inst) for i, c, inst in sides[side]["annotations"] if c in keep]
        images = [im for im in sides[side]["images"] if any(a[0] == im["id"] for a in anns)]
        if side == "heldout" and not anns:
            continue
        coco = {"images": images, "categories": train_cats,
                "annotations": [_coco_annotation(k, i, c, inst)
                                for k, (i, c, inst) in enumerate(anns, start=1)]}
        path = out / f"{side}.json"
        digests.append(_write_json(path, coco))
        if side == "train":
            data.train_images, data.train_instances = len(images), len(anns)
            data.train_masks = sum(inst.mask is not None for _, _, inst in anns)
        else:
            data.heldout, data.heldout_images, data.heldout_instances = path, len(images), len(anns)
    stale = out / "heldout.json"
    if data.heldout is None and stale.exists():
        stale.unlink()
    data.digest = hashlib.sha256("".join(digests).encode()).hexdigest()
    return data
