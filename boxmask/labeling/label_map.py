"""Which model category labels which dataset category: by name, with a file for renames.

A label map is a YAML or JSON mapping from a dataset category name to a model category name,
e.g. ``{"automobile": "car", "person": null}``. A name absent from the map is looked up in the
model unchanged; ``null`` means "never label this category" (its annotations are kept as they
are and reported as unmapped).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from boxmask.config import ConfigError


def load_label_map(path: str | Path) -> dict[str, str | None]:
    """Read a label map file (YAML or JSON; JSON is YAML) into ``{dataset name: model name}``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"label map {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"label map {path} is not valid YAML/JSON: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"label map {path} must be a mapping of dataset category name -> model category name "
            f"(or null), got {type(raw).__name__}")
    out: dict[str, str | None] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not (value is None or isinstance(value, str)):
            raise ConfigError(
                f"label map {path}: entry {key!r}: {value!r} must map a name to a name or null")
        out[key] = value
    return out


@dataclass(frozen=True)
class CategoryMapping:
    """The resolved correspondence between dataset and model categories.

    to_model: dataset category id -> model category id, for the categories the model labels.
    unknown: dataset category id -> why it is not labelled (``unknown_category``: the model has
        no category of that name; ``unmapped``: the label map sends it to null).
    to_dataset: model category id -> dataset category id, used for pre-annotation; when several
        dataset categories map to one model category, the first one in the file wins.
    """

    to_model: dict[int, int]
    unknown: dict[int, str]
    to_dataset: dict[int, int]
    label_map: dict[str, str | None] = field(default_factory=dict)


def map_categories(dataset_categories: Sequence[Mapping[str, Any]], model_names: Mapping[str, int],
                   label_map: Mapping[str, str | None] | None = None) -> CategoryMapping:
    """Match dataset categories to model categories by name, through the label map.

    model_names: model category name -> model category id.
    A label map that names a dataset category the file lacks, or a model category the model
    lacks, is almost always a typo: it raises `ConfigError` listing the names that exist.
    """
    label_map = dict(label_map or {})
    dataset_names = [c["name"] for c in dataset_categories]
    stray = sorted(set(label_map) - set(dataset_names))
    if stray:
        raise ConfigError(
            f"label map names dataset categories that the input does not have: {', '.join(stray)}; "
            f"the input's categories are: {', '.join(dataset_names)}")
    bad_targets = sorted({v for v in label_map.values() if v is not None} - set(model_names))
    if bad_targets:
        raise ConfigError(
            f"label map sends categories to names the model does not know: {', '.join(bad_targets)}; "
            f"the model's categories are: {', '.join(model_names)}")

    to_model: dict[int, int] = {}
    unknown: dict[int, str] = {}
    to_dataset: dict[int, int] = {}
    for cat in dataset_categories:
        target = label_map.get(cat["name"], cat["name"])
        if target is None:
            unknown[cat["id"]] = "unmapped"
        elif target in model_names:
            to_model[cat["id"]] = model_names[target]
            to_dataset.setdefault(model_names[target], cat["id"])
        else:
            unknown[cat["id"]] = "unknown_category"
    return CategoryMapping(to_model=to_model, unknown=unknown, to_dataset=to_dataset,
                           label_map=label_map)

