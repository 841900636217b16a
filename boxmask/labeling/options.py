"""The options of a labeling job.

`LabelSettings` are the options that change the output; they are written into the resume
journal's header, and a resume with different settings is refused. `LabelOptions` adds where
things are and how the work is spread, which a resumed run may change freely.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from boxmask.config import ConfigError

MaskFormat = Literal["rle", "polygon"]
# The decoder's memory per image being labeled (`--workers` images at once): about 80 boxes a
# run for the demo model, 40 for a COCO R50-FPN; runs of that size are no slower per box than one
# run of thousands (docs/labeling.md, "Speed").
DEFAULT_BATCH_BYTES = 256 << 20
Engine = Literal["local", "ray"]


@dataclass(frozen=True)
class LabelSettings:
    """What each image's result depends on (besides the model and the pixels).

    mask_format: ``rle`` (COCO compressed RLE, counts as a string) or ``polygon``.
    min_score: masks whose score is below this are not written (the annotation stays as it was).
    batch_boxes: at most this many boxes per decoder call (0: as many as `batch_bytes` allows).
    batch_bytes: the decoder's memory budget per image being labeled, in bytes: the boxes of one
        decoder run are as many as fit in it (`boxmask.runtime.predictor.decoder_bytes_per_box`),
        so a crowded image cannot take the machine's memory (0: no budget, every box of an
        image in one run).
    detect_threshold, max_detections: for pre-annotation of images without boxes.
    tight_boxes: write each mask's tight box (``boxmask.tight_bbox``) beside the annotation's
        ``bbox``, which is never changed (``--tight-boxes``).
    """

    mask_format: MaskFormat = "rle"
    min_score: float = 0.0
    batch_boxes: int = 0
    batch_bytes: int = DEFAULT_BATCH_BYTES
    detect_threshold: float = 0.5
    max_detections: int = 100
    tight_boxes: bool = False

    def __post_init__(self) -> None:
        if self.mask_format not in ("rle", "polygon"):
            raise ConfigError(f"--format must be rle or polygon, got {self.mask_format!r}")
        if not 0.0 <= self.min_score <= 1.0:
            raise ConfigError(f"--min-score must be in [0, 1], got {self.min_score}")
        if self.batch_boxes < 0:
            raise ConfigError(f"--batch-boxes must be >= 0, got {self.batch_boxes}")
        if self.batch_bytes < 0:
            raise ConfigError(f"--batch-mb must be >= 0, got {self.batch_bytes / (1 << 20):g}")
        if not 0.0 <= self.detect_threshold <= 1.0:
            raise ConfigError(f"--detect-threshold must be in [0, 1], got {self.detect_threshold}")
        if self.max_detections < 1:
            raise ConfigError(f"max_detections must be >= 1, got {self.max_detections}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if not self.tight_boxes:
            # Off is what a job meant before the option existed: its journal resumes.
            del out["tight_boxes"]
        return out


@dataclass(frozen=True)
class LabelOptions:
    """A whole job: `boxmask label`'s command line as a value.

    model: an exported model directory, or the name of a model bundled with the package.
    workers: images labeled at once (threads, each with one ONNX Runtime thread, plus as many
        reading threads) for the local engine; model actors for the Ray engine. Default: one
        per CPU core.
    images_per_batch: images per Ray Data batch (the Ray engine only).
    """

    coco: Path
    images: Path
    out: Path
    model: str | Path | None = None
    settings: LabelSettings = field(default_factory=LabelSettings)
    only_missing: bool = False
    pre_annotate: bool = False
    label_map: Path | None = None
    resume: bool = False
    engine: Engine = "local"
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    images_per_batch: int = 4
    precision: str = "fp32"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.engine not in ("local", "ray"):
            raise ConfigError(f"--engine must be local or ray, got {self.engine!r}")
        if self.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {self.workers}")
        if self.precision not in ("fp32", "fp16", "int8"):
            raise ConfigError(f"--precision must be fp32, fp16 or int8, got {self.precision!r}")
        if self.images_per_batch < 1:
            raise ConfigError(f"images per batch must be >= 1, got {self.images_per_batch}")
