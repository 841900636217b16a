"""`PredictorOptions`: everything a `Predictor` can be told, as one value.

Each caller builds it once from its own settings (the server from `ServerSettings`, CVAT from
`CvatSettings`, `boxmask label` from its options) and hands it to `Predictor.from_dir`; nothing
passes the options one argument at a time. What a box may be (`max_boxes`,
`max_mask_pixels`) goes on to the box policy as `limits` (`boxmask.runtime.boxes`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from boxmask.runtime.boxes import BoxLimits
from boxmask.runtime.images import DEFAULT_MAX_PIXELS

Backend = Literal["onnxruntime", "triton"]
Precision = Literal["fp32", "fp16", "int8"]


@dataclass(frozen=True)
class PredictorOptions:
    """How a predictor runs its graphs, what it keeps, and what it accepts.

    Where the graphs run: `backend` ("onnxruntime" in-process, or "triton" at `triton_url`
    over `triton_protocol`), `precision` (the card's variant of each graph, fp32 where it has
    none), ONNX Runtime's `providers`, `intra_op_threads` and whether those threads spin while
    they wait (`intra_op_spinning`) (None: its defaults), and whether the files' checksums are
    `verify`-ed on load.

    What it keeps and accepts: `cache_bytes` of encoder outputs (an LRU; 0 keeps none between
    calls), images of at most `max_pixels`, at most `max_boxes` boxes and `max_mask_pixels`
    (boxes x image pixels) per call (None: no limit), masks thresholded at `mask_threshold`,
    the encoder's input resized to `input_min_size` / `input_max_size` (None: the card's), and
    the decoder's memory bounded by `decoder_budget_bytes` (None: all boxes in one run).

    How masks are finished: `mask_refine` ("auto": as the model card says; "crf": every mask
    refined by the dense CRF on the image, boxmask.runtime.crf; "crf_wide": the same with the
    appearance kernel as wide as the box; "none": as the decoder gave).
    """

    backend: Backend = "onnxruntime"
    precision: Precision = "fp32"
    triton_url: str | None = None
    triton_protocol: Literal["http", "grpc"] = "http"
    providers: tuple[str, ...] | None = None
    intra_op_threads: int | None = None
    intra_op_spinning: bool | None = None
    verify: bool = True
    cache_bytes: int = 512 << 20
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    max_boxes: int | None = None
    max_mask_pixels: int | None = None
    mask_threshold: float = 0.5
    input_min_size: int | None = None
    input_max_size: int | None = None
    decoder_budget_bytes: int | None = None
    mask_refine: Literal["auto", "none", "crf", "crf_wide"] = "auto"

    def __post_init__(self) -> None:
        if self.mask_refine not in ("auto", "none", "crf", "crf_wide"):
            raise ValueError("mask_refine must be auto, none, crf or crf_wide, got "
                             f"{self.mask_refine!r}")
        if self.backend not in ("onnxruntime", "triton"):
            raise ValueError(f"backend must be 'onnxruntime' or 'triton', got {self.backend!r}")
        if self.precision not in ("fp32", "fp16", "int8"):
            raise ValueError(f"precision must be fp32, fp16 or int8, got {self.precision!r}")
        if self.backend == "triton" and not self.triton_url:
            raise ValueError("backend='triton' needs triton_url (e.g. 'localhost:8000' or "
                             "'grpc://localhost:8001')")
        if self.decoder_budget_bytes is not None and self.decoder_budget_bytes < 1:
            raise ValueError("decoder_budget_bytes must be >= 1 or None, got "
                             f"{self.decoder_budget_bytes}")
        if self.providers is not None and not isinstance(self.providers, tuple):
            object.__setattr__(self, "providers", tuple(self.providers))

    @property
    def limits(self) -> BoxLimits:
        """What one call may ask for, as the box policy takes it."""
        return BoxLimits(max_boxes=self.max_boxes, max_mask_pixels=self.max_mask_pixels)

    def replace(self, **changes: Any) -> PredictorOptions:
        """These options with some fields changed (checked again)."""
        return dataclasses.replace(self, **changes)
