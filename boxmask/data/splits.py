"""Seen/unseen category splits.

The paper trains the teacher on the masks of *seen* categories only; every other category keeps
its boxes and class labels but its masks must never be used. A split is written in a config as

- ``"all"``: every category is seen (the oracle setting),
- ``"coco-voc"``: the 20 PASCAL VOC categories of COCO are seen, the other 60 unseen,
- ``"coco-nonvoc"``: the 60 non-VOC categories are seen, the 20 VOC ones unseen,
- ``"auto"``: per instance, as the data says: an annotation with a mask supervises (and trains
  the teacher), one without gets a pseudo-mask; a category is seen when any instance has a mask,
- a list of category names and/or ids (``[disc, square, 3]``).

This module imports no torch: the CLI checks splits before anything heavy is loaded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from boxmask.config import ConfigError

# COCO's names for the 20 PASCAL VOC classes (VOC says aeroplane, diningtable, motorbike,
# pottedplant, sofa, tvmonitor).
VOC_COCO_NAMES: frozenset[str] = frozenset({
    "airplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "dining table", "dog", "horse", "motorcycle", "person", "potted plant", "sheep", "couch",
    "train", "tv",
})

BUILTIN_SPLITS: tuple[str, ...] = ("all", "coco-voc", "coco-nonvoc")
# Not a fixed split: the categories whose annotations carry masks (resolve_seen's with_masks).
AUTO = "auto"

SeenSpec = str | Sequence[str | int]


def _norm(name: str) -> str:
    return " ".join(name.strip().lower().split())


def parse_seen_option(text: str) -> SeenSpec:
    """Turn the CLI's ``--seen`` text into a spec for :func:`resolve_seen`.

    ``"coco-voc"`` stays a built-in split name; ``"disc, square,3"`` becomes
    ``["disc", "square", 3]`` (digits become ids).
    """
    text = text.strip()
    if _norm(text) in (*BUILTIN_SPLITS, AUTO):
        return _norm(text)
    items: list[str | int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        items.append(int(part) if part.isdigit() else part)
    if not items:
        raise ConfigError(
            f"--seen {text!r} names no category; use one of {', '.join(BUILTIN_SPLITS)} "
            "or a comma-separated list of category names or ids")
    return items


def _known(categories: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(f"{c['id']}:{c['name']}" for c in sorted(categories, key=lambda c: c["id"]))


def _builtin(spec: str, categories: Sequence[Mapping[str, Any]]) -> set[int]:
    all_ids = {int(c["id"]) for c in categories}
    if spec == "all":
        return all_ids
    present = {_norm(c["name"]) for c in categories}
    missing = sorted(VOC_COCO_NAMES - present)
    if missing:
        raise ConfigError(
            f"split {spec!r} needs the COCO names of the 20 PASCAL VOC categories, but this "
            f"dataset lacks {', '.join(missing)}; list the seen categories by name or id "
            f"instead (known: {_known(categories)})")
    voc = {int(c["id"]) for c in categories if _norm(c["name"]) in VOC_COCO_NAMES}
    return voc if spec == "coco-voc" else all_ids - voc


def _lookup(item: str | int, categories: Sequence[Mapping[str, Any]],
            by_name: dict[str, int], ids: set[int]) -> int:
    # bool is an int subclass; ``seen: [true]`` is a typo, not category 1.
    if isinstance(item, bool) or not isinstance(item, (str, int)):
        raise ConfigError(f"seen category {item!r} must be a category name or id")
    if isinstance(item, int):
        if item in ids:
            return item
        raise ConfigError(f"unknown seen category id {item}; known categories: {_known(categories)}")
    key = _norm(item)
    if key in by_name:
        return by_name[key]
    if key.isdigit() and int(key) in ids:
        return int(key)
    hint = f" (built-in splits: {', '.join(BUILTIN_SPLITS)})" if "-" in key or key in {"voc", "nonvoc"} else ""
    raise ConfigError(f"unknown seen category {item!r}{hint}; known categories: {_known(categories)}")


def resolve_seen(spec: SeenSpec, categories: Sequence[Mapping[str, Any]],
                 with_masks: set[int] | None = None) -> set[int]:
    """The COCO category ids that a split marks as seen.

    Args:
        spec: ``"all"``, ``"coco-voc"``, ``"coco-nonvoc"``, ``"auto"``, one category name, or
            a list of category names and/or ids.
        categories: the COCO ``categories`` list (dicts with ``id`` and ``name``).
        with_masks: for ``"auto"``: the ids of the categories that have at least one
            annotation with a mask (:func:`categories_with_masks`). ``auto`` follows the data
            per instance: an instance with a mask supervises, one without gets a pseudo-mask,
            so a category is seen when any of its instances has a mask. It may leave nothing
            seen (a box-only fine-tune, whose teacher comes from ``model.init_from``).

    Raises:
        ConfigError: unknown names or ids (the message lists the known ones), a built-in split
            on a dataset without the COCO VOC names, or a split that leaves nothing seen.
    """
    if not categories:
        raise ConfigError("the dataset has no categories, so no seen/unseen split can be made")
    names = [_norm(c["name"]) for c in categories]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"the dataset's categories repeat the names {', '.join(dupes)}")
    ids = {int(c["id"]) for c in categories}
    by_name = {_norm(c["name"]): int(c["id"]) for c in categories}

    if isinstance(spec, str) and _norm(spec) == "auto":
        if with_masks is None:
            raise ConfigError("seen split 'auto' follows the annotations: pass the ids of the "
                              "categories that have masks")
        return {int(i) for i in with_masks} & ids
    if isinstance(spec, str):
        key = _norm(spec)
        if key in BUILTIN_SPLITS:
            seen = _builtin(key, categories)
        else:
            seen = {_lookup(spec, categories, by_name, ids)}
    elif isinstance(spec, Iterable):
        seen = {_lookup(item, categories, by_name, ids) for item in spec}
    else:
        raise ConfigError(f"seen split {spec!r} must be a split name or a list of names/ids")

    if not seen:
        raise ConfigError(
            f"seen split {spec!r} leaves no category seen; the teacher needs at least one "
            f"category with masks (known categories: {_known(categories)})")
    return seen


def categories_with_masks(annotations: Iterable[Mapping[str, Any]]) -> set[int]:
    """Ids of the categories with at least one annotation whose ``segmentation`` is not empty."""
    return {int(a["category_id"]) for a in annotations
            if a.get("segmentation") and "category_id" in a}
