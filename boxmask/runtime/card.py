"""`model.json`, the card of an exported model directory (docs/contracts.md §4).

The card is the contract between export and everything after it: which categories the model
knows (COCO id, name, contiguous label, seen in training or not), how images are preprocessed,
which graph files exist and their sha256.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from boxmask.files import sha256_file
from boxmask.runtime.contract import CARD_NAME
from boxmask.runtime.errors import ModelDirError, UnknownLabel

# 2: the detector runs over the encoder's features (p2..p5, image_size). Version 1 detectors
# took the image; such a directory must be exported again.
SUPPORTED_FORMAT_VERSIONS = (2,)


class Category(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    id: int
    name: str
    label: int = Field(
        ge=1, description="contiguous label 1..C used by the graphs (0 = background)"
    )
    seen: bool = Field(description="whether masks of this category were used in training")


class Preprocess(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    min_size: int = Field(gt=0)
    max_size: int = Field(gt=0)
    size_divisible: int = Field(32, gt=0)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input: str = "RGB float32 0..255, normalised in the graph"


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ModelCard(BaseModel):
    """Parsed `model.json`. Unknown top-level fields are kept (newer exporters may add some)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    format_version: int
    name: str
    created: str | None = None
    categories: list[Category] = Field(min_length=1)
    num_classes: int = Field(gt=0)
    mask_resolution: int = Field(gt=0)
    preprocess: Preprocess
    files: dict[str, FileEntry]
    onnx: dict[str, Any] = Field(default_factory=dict)
    provenance: dict[str, Any] = Field(default_factory=dict)
    # Where the mask grid's cells sit in their box: "aligned" (roi_align aligned=True targets)
    # or "torchvision" (its half-pixel grid: torchvision's weights and every model exported
    # before this field existed). The runtime pastes the latter half a resized pixel down-right
    # (boxmask/model/paste.py).
    mask_grid: Literal["aligned", "torchvision"] = "torchvision"
    # Whether both decoders have the `quality` output (contract.QUALITY): each mask's predicted
    # IoU from the mask-quality head (model.mask_quality). Cards written before it: no head.
    mask_quality: bool = False
    # How the runtime finishes the decoders' masks (model.served_crf): "crf" refines each by a
    # dense CRF on the image (boxmask.runtime.crf, the local kernel), "crf_wide" by one whose
    # appearance kernel is as wide as the box (model.served_crf_kernel: wide), "none" serves
    # them as they are. Not in the graphs; cards written before it: none.
    mask_refine: Literal["none", "crf", "crf_wide"] = "none"

    @model_validator(mode="after")
    def _check_consistency(self) -> ModelCard:
        if self.format_version not in SUPPORTED_FORMAT_VERSIONS:
            hint = (
                ": it was written by an older boxmask; export its checkpoint again with "
                "`boxmask export CHECKPOINT --out DIR`"
                if self.format_version < min(SUPPORTED_FORMAT_VERSIONS)
                else ": it was written by a newer boxmask; upgrade boxmask"
            )
            raise ValueError(
                f"model.json format_version {self.format_version} is not supported by this runtime "
                f"(supported: {SUPPORTED_FORMAT_VERSIONS}){hint}"
            )
        labels = sorted(c.label for c in self.categories)
        if labels != list(range(1, self.num_classes + 1)):
            raise ValueError(
                f"categories must carry the contiguous labels 1..{self.num_classes} once each, got {labels}"
            )
        for field, values in (
            ("id", [c.id for c in self.categories]),
            ("name", [c.name for c in self.categories]),
        ):
            if len(set(values)) != len(values):
                raise ValueError(f"category {field}s must be unique, got {values}")
        return self

    # -- loading ------------------------------------------------------------------------------

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelCard:
        try:
            return cls.model_validate_json(text)
        except ValidationError as e:
            raise ModelDirError(f"invalid model.json: {e}") from e

    @classmethod
    def load(cls, model_dir: str | Path, verify: bool | Iterable[str] = True) -> ModelCard:
        """Read `model_dir/model.json`.

        verify: True checks the sha256 of every file the card lists, an iterable of file keys
        (e.g. `["encoder", "decoder"]`) checks only those, False checks none.
        """
        model_dir = Path(model_dir)
        path = model_dir / CARD_NAME
        if not path.is_file():
            raise ModelDirError(
                f"{model_dir} is not an exported model directory: {CARD_NAME} is missing"
            )
        card = cls.from_json(path.read_bytes())
        if verify is not False:
            card.verify_files(model_dir, None if verify is True else verify)
        return card

    def file_path(self, model_dir: str | Path, key: str) -> Path:
        if key not in self.files:
            raise ModelDirError(
                f"model.json lists no file {key!r} (it has: {', '.join(sorted(self.files))})"
            )
        return Path(model_dir) / self.files[key].path

    def verify_files(self, model_dir: str | Path, keys: Iterable[str] | None = None) -> None:
        """Raise `ModelDirError` if a listed file is missing or its sha256 differs from the card."""
        for key in sorted(self.files) if keys is None else keys:
            path = self.file_path(model_dir, key)
            if not path.is_file():
                raise ModelDirError(f"model file {key!r} is missing: {path}")
            actual = sha256_file(path)
            expected = self.files[key].sha256
            if actual != expected:
                raise ModelDirError(
                    f"checksum mismatch for {key!r} ({path}): model.json says sha256 {expected}, "
                    f"the file has {actual}; the directory was modified or copied incompletely"
                )

    # -- categories ---------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.categories]

    @property
    def ids(self) -> list[int]:
        return [c.id for c in self.categories]

    def _unknown(self, label: object) -> UnknownLabel:
        return UnknownLabel(label, self.names, self.ids)

    def by_id(self, category_id: int) -> Category:
        for c in self.categories:
            if c.id == category_id:
                return c
        raise self._unknown(category_id)

    def by_name(self, name: str) -> Category:
        for c in self.categories:
            if c.name == name:
                return c
        raise self._unknown(name)

    def by_label(self, label: int) -> Category:
        for c in self.categories:
            if c.label == label:
                return c
        raise self._unknown(label)

    def resolve(self, label: int | str) -> Category:
        """A category from a COCO id (int) or a name (str). Booleans are rejected, not taken as 0/1."""
        if isinstance(label, bool):
            raise self._unknown(label)
        if isinstance(label, str):
            return self.by_name(label)
        try:
            as_int = int(label)
        except (TypeError, ValueError):
            raise self._unknown(label) from None
        if as_int != label:  # 1.5 is not category 1
            raise self._unknown(label)
        return self.by_id(as_int)

    def label_to_id(self) -> list[int]:
        """Index = contiguous label, value = COCO id; index 0 (background) maps to 0."""
        table = [0] * (self.num_classes + 1)
        for c in self.categories:
            table[c.label] = c.id
        return table

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2)
