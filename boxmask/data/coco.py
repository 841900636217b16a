"""COCO-format instance segmentation data for training, with a seen/unseen split.

Targets follow torchvision's detection references (``references/detection/coco_utils.py``):
crowd annotations are dropped, ``xywh`` boxes become ``xyxy`` clipped to the image, degenerate
boxes are dropped, and images without a usable annotation are skipped for training.

The partially supervised twist: the masks of *unseen* categories are never decoded. Their
instances keep box and label (the detector and the student still learn them), but their mask is
all zeros and ``mask_valid`` is False, so no mask loss can ever read them.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch import Tensor
from torch.utils.data import Dataset

from boxmask.config import ConfigError
from boxmask.runtime.errors import BadImage
from boxmask.runtime.images import decode_image

Target = dict[str, Any]


def load_coco(annotations: str | Path | Mapping[str, Any]) -> COCO:
    """A pycocotools ``COCO`` from a JSON path or an already-loaded dict, without its prints."""
    if isinstance(annotations, Mapping):
        dataset = dict(annotations)
        source = "annotations dict"
    else:
        path = Path(annotations)
        if not path.is_file():
            raise FileNotFoundError(f"COCO annotations {str(path)!r} do not exist")
        try:
            dataset = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"COCO annotations {str(path)!r} are not valid JSON: {exc}") from exc
        source = str(path)
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise ValueError(  # noqa: TRY004 - the file is wrong, not the argument's type
                f"{source} is not a COCO instances file: it has no {key!r} list")
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
        coco.createIndex()
    return coco


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Decode a COCO ``segmentation`` into a ``[height, width]`` uint8 mask.

    Accepts polygons (a list of ``[x1, y1, x2, y2, ...]``, unioned), uncompressed RLE
    (``counts`` a list of run lengths) and compressed RLE (``counts`` a string or bytes).
    """
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if len(p) >= 6]  # fewer than 3 points has no area
        if not polygons:
            return np.zeros((height, width), dtype=np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, Mapping) and "counts" in segmentation and "size" in segmentation:
        size = [int(s) for s in segmentation["size"]]
        if size != [height, width]:
            raise ValueError(f"RLE size {size} does not match the image size {[height, width]}")
        if isinstance(segmentation["counts"], list):
            rle = mask_utils.frPyObjects(dict(segmentation), height, width)
        else:
            rle = dict(segmentation)
    else:
        raise ValueError(f"unsupported COCO segmentation of type {type(segmentation).__name__}")
    return np.ascontiguousarray(mask_utils.decode(rle), dtype=np.uint8)


def _xywh_to_xyxy_clipped(bbox: Sequence[float], width: int, height: int) -> list[float]:
    x, y, w, h = (float(v) for v in bbox)
    return [min(max(x, 0.0), width), min(max(y, 0.0), height),
            min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)]


def _usable(ann: Mapping[str, Any], width: int, height: int) -> bool:
    """A non-crowd annotation whose clipped box has positive width and height."""
    if ann.get("iscrowd", 0):
        return False
    bbox = ann.get("bbox")
    if bbox is None or len(bbox) != 4:
        return False
    x1, y1, x2, y2 = _xywh_to_xyxy_clipped(bbox, width, height)
    return x2 > x1 and y2 > y1


class CocoInstances(Dataset):
    """A COCO instances dataset whose unseen categories contribute boxes and labels, not masks.

    Args:
        images_dir: folder the images' ``file_name`` are relative to.
        annotations: COCO instances JSON path (or the loaded dict).
        seen_ids: COCO category ids whose masks may be used (see ``splits.resolve_seen``).
        transforms: ``(image, target) -> (image, target)``, e.g. ``transforms.training_transforms``.
        drop_empty: skip images without a usable (non-crowd, non-degenerate) annotation.
        allow_no_masks: accept an empty ``seen_ids`` (``data.seen: auto`` on box-only data,
            whose teacher comes from ``model.init_from``).

    Item ``(image, target)``: ``image`` ``Tensor[3, H, W]`` float RGB in [0, 1]; ``target`` with
    ``boxes`` ``[N, 4]`` float xyxy, ``labels`` ``[N]`` int64 contiguous 1..C, ``masks``
    ``[N, H, W]`` uint8 (zeros for unseen), ``mask_valid`` ``[N]`` bool, ``iscrowd`` ``[N]``
    int64, ``area`` ``[N]`` float, ``image_id`` int.
    """

    def __init__(self, images_dir: str | Path, annotations: str | Path | Mapping[str, Any],
                 seen_ids: set[int] | Sequence[int],
                 transforms: Callable[[Tensor, Target], tuple[Tensor, Target]] | None = None,
                 drop_empty: bool = True, allow_no_masks: bool = False) -> None:
        self.images_dir = Path(images_dir)
        if not self.images_dir.is_dir():
            raise FileNotFoundError(f"images folder {str(self.images_dir)!r} does not exist")
        self.coco = load_coco(annotations)
        self.transforms = transforms

        cats = sorted(self.coco.dataset["categories"], key=lambda c: int(c["id"]))
        known = {int(c["id"]) for c in cats}
        seen = {int(i) for i in seen_ids}
        unknown = sorted(seen - known)
        if unknown:
            listing = ", ".join(f"{c['id']}:{c['name']}" for c in cats)
            raise ConfigError(f"seen category ids {unknown} are not in the dataset; known: {listing}")
        if not seen and not allow_no_masks:
            raise ConfigError("no seen category: at least one category must keep its masks")
        self.seen_ids: set[int] = seen
        # Contiguous labels in the order of category id; 0 is the background.
        self.label_to_cat_id: list[int] = [0] + [int(c["id"]) for c in cats]
        self.cat_id_to_label: dict[int, int] = {cid: i for i, cid in enumerate(self.label_to_cat_id) if i}
        self.categories: list[dict[str, Any]] = [
            {**c, "label": self.cat_id_to_label[int(c["id"])], "seen": int(c["id"]) in seen}
            for c in cats]
        self.seen_labels: set[int] = {self.cat_id_to_label[i] for i in seen}
        strays = sorted({int(a["category_id"]) for a in self.coco.anns.values()} - known)
        if strays:
            raise ValueError(f"annotations use category ids {strays} that are not in the "
                             f"file's categories")

        ids = sorted(self.coco.imgs)
        if drop_empty:
            ids = [i for i in ids if any(
                _usable(a, self.coco.imgs[i]["width"], self.coco.imgs[i]["height"])
                for a in self.coco.imgToAnns.get(i, []))]
        self.ids: list[int] = ids

    @property
    def num_classes(self) -> int:
        """Number of categories, background excluded."""
        return len(self.label_to_cat_id) - 1

    def __len__(self) -> int:
        return len(self.ids)

    def load_image(self, image_id: int) -> Tensor:
        """``Tensor[3, H, W]`` float RGB in [0, 1]."""
        info = self.coco.imgs[image_id]
        path = self.images_dir / info["file_name"]
        if not path.is_file():
            raise FileNotFoundError(f"image {str(path)!r} of image id {image_id} does not exist")
        # The runtime's decoder, so that training, evaluation, the server and the labeler see the
        # same pixels: EXIF orientation applied (the image as viewers and labeling tools show
        # it), 16-bit images scaled to 8 bits rather than clipped.
        try:
            array = decode_image(path.read_bytes(), max_pixels=None)
        except BadImage as exc:
            raise ValueError(f"image {str(path)!r} of image id {image_id}: {exc}") from None
        if array.shape[:2] != (info["height"], info["width"]):
            raise ValueError(f"image {str(path)!r} is {array.shape[1]}x{array.shape[0]} but the "
                             f"annotations say {info['width']}x{info['height']}")
        return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)

    def load_target(self, image_id: int) -> Target:
        """The training target of one image (see the class docstring)."""
        info = self.coco.imgs[image_id]
        height, width = int(info["height"]), int(info["width"])
        anns = [a for a in self.coco.imgToAnns.get(image_id, []) if _usable(a, width, height)]

        masks = np.zeros((len(anns), height, width), dtype=np.uint8)
        valid = np.zeros(len(anns), dtype=bool)
        for k, ann in enumerate(anns):
            # Decoding only seen masks is the guarantee: an unseen mask never exists as a tensor.
            if int(ann["category_id"]) in self.seen_ids and ann.get("segmentation"):
                masks[k] = decode_segmentation(ann["segmentation"], height, width)
                valid[k] = bool(masks[k].any())

        boxes = [_xywh_to_xyxy_clipped(a["bbox"], width, height) for a in anns]
        return {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([self.cat_id_to_label[int(a["category_id"])] for a in anns],
                                   dtype=torch.int64),
            "masks": torch.from_numpy(masks),
            "mask_valid": torch.from_numpy(valid),
            "iscrowd": torch.zeros(len(anns), dtype=torch.int64),
            "area": torch.tensor([float(a.get("area", 0.0)) for a in anns], dtype=torch.float32),
            "image_id": int(image_id),
        }

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        image_id = self.ids[index]
        image, target = self.load_image(image_id), self.load_target(image_id)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def collate(batch: Sequence[tuple[Tensor, Target]]) -> tuple[list[Tensor], list[Target]]:
    """Batch for torchvision detection models: lists, since images differ in size."""
    images, targets = zip(*batch, strict=True) if batch else ((), ())
    return list(images), list(targets)
