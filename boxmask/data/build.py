"""Datasets from a config's ``data`` section: the one place that joins paths, split and transforms."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from boxmask.config import ConfigError, DataConfig
from boxmask.data.coco import CocoInstances
from boxmask.data.splits import AUTO, categories_with_masks, resolve_seen
from boxmask.data.transforms import training_transforms


def read_categories(annotations: str | Path) -> list[dict]:
    """The ``categories`` list of a COCO JSON file (to resolve a split before loading images)."""
    path = Path(annotations)
    if not path.is_file():
        raise ConfigError(f"annotations file {str(path)!r} does not exist")
    try:
        cats = json.loads(path.read_text()).get("categories")
    except json.JSONDecodeError as exc:
        raise ConfigError(f"annotations file {str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(cats, list) or not cats:
        raise ConfigError(f"annotations file {str(path)!r} has no categories")
    return cats


def is_auto(spec: object) -> bool:
    """True for ``data.seen: auto`` (seen follows the annotations, instance by instance)."""
    return isinstance(spec, str) and " ".join(spec.lower().split()) == AUTO


def train_seen_ids(data: DataConfig) -> set[int]:
    """The training set's seen category ids: the split of ``data.seen``, or for ``auto`` the
    categories of which at least one training annotation has a mask."""
    categories = read_categories(data.train_annotations)
    if not is_auto(data.seen):
        return resolve_seen(data.seen, categories)
    try:
        annotations = json.loads(Path(data.train_annotations).read_text()).get("annotations") or []
        masked = categories_with_masks(a for a in annotations if isinstance(a, dict))
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ConfigError(f"annotations file {str(data.train_annotations)!r}: cannot read its "
                          f"annotations ({exc})") from exc
    return resolve_seen(AUTO, categories, with_masks=masked)


def build_dataset(data: DataConfig, split: Literal["train", "val"] = "train",
                  every_mask: bool = False) -> CocoInstances:
    """The training set (with flips, empty images dropped) or the validation set (neither).

    The seen split is resolved against the *training* categories, so train and val agree on
    which categories are seen even if the val file orders or names them differently.
    ``every_mask`` (the oracle's training set) loads every category's masks; the labels are
    the same either way (they follow the category ids).
    """
    categories = read_categories(data.train_annotations)
    seen = train_seen_ids(data)
    if split == "train":
        mask_ids = {int(c["id"]) for c in categories} if every_mask else seen
        return CocoInstances(data.train_images, data.train_annotations, mask_ids,
                             transforms=training_transforms(data.horizontal_flip,
                                                            data.background_holes,
                                                            data.random_shapes,
                                                            data.random_shapes_count),
                             drop_empty=data.drop_images_without_annotations,
                             allow_no_masks=is_auto(data.seen))
    if split == "val":
        if data.val_annotations is None or data.val_images is None:
            raise ConfigError("data.val_annotations and data.val_images must be set to evaluate")
        val_ids = {int(c["id"]) for c in read_categories(data.val_annotations)}
        missing = sorted(seen - val_ids)
        if missing:
            raise ConfigError(f"seen category ids {missing} of the training set are missing "
                              f"from {str(data.val_annotations)!r}")
        return CocoInstances(data.val_images, data.val_annotations, seen, drop_empty=False,
                             allow_no_masks=is_auto(data.seen))
    raise ValueError(f"split must be 'train' or 'val', got {split!r}")
