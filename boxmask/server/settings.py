"""Server settings, read from the environment (prefix ``BOXMASK_``) by pydantic-settings.

Every limit that protects the process from a client has a setting here, with a default that a
2-core CPU box survives. ``boxmask serve`` fills the same class from its options, so the CLI and
the environment cannot drift apart.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from boxmask.runtime.contract import BUNDLED_MODELS_DIR
from boxmask.runtime.options import PredictorOptions


class ServerSettings(BaseSettings):
    """Everything the HTTP service can be told; ``BOXMASK_<FIELD>`` sets a field."""

    model_config = SettingsConfigDict(env_prefix="BOXMASK_", extra="ignore",
                                      protected_namespaces=())

    # --- models -----------------------------------------------------------------------------
    # A folder of exported model directories (or one exported model directory itself).
    # Default: the models bundled with the package, each served under its card's ``name``.
    model_dir: Path = BUNDLED_MODELS_DIR
    # Served when a request names no model; None = the first model by name.
    default_model: str | None = None
    # Load only these models (by card name); None = every model in model_dir.
    models: list[str] | None = None
    backend: Literal["onnxruntime", "triton"] = "onnxruntime"
    # Setting a Triton URL switches the backend to Triton (the BOXMASK_TRITON_URL).
    triton_url: str | None = None
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    # How masks are finished: "auto" as each model's card says (its model.served_crf), "crf"
    # every mask refined by the dense CRF on its image (boxmask.runtime.crf: about 1-3 ms a
    # mask on a CPU core), "crf_wide" the same with the appearance kernel as wide as the box
    # (about 1.4 times the cost: benchmarks/crf_kernels.py, crf_cost.py), "none" as the decoder gave them.
    mask_refine: Literal["auto", "none", "crf", "crf_wide"] = "auto"
    # Byte budget of each model's encoder-output cache (the runtime's LRU).
    cache_bytes: int = Field(default=512 << 20, ge=0)
    # The encoder's input size (shorter / longer side, torchvision's resize rule); None = the
    # model card's (what the model was trained at). Smaller is faster for a new image (the
    # encoder's cost grows with the pixels) at some cost in mask quality: docs/benchmarks.md.
    input_min_size: int | None = Field(default=None, ge=32)
    input_max_size: int | None = Field(default=None, ge=32)
    # ONNX Runtime threads per session; None = ONNX Runtime's default (one per core).
    threads: int | None = Field(default=None, ge=1)
    # Whether those threads spin while they wait for work (ONNX Runtime's default). Off here:
    # a server's cores are shared, by its own concurrent requests (max_concurrency sessions of
    # one thread per core each), its event loop and worker threads, and the Label Studio
    # training jobs it starts; spinning threads burn what those need. On a busy 2-core machine
    # a cached R50-FPN box over HTTP took 2.5-3x as long with spinning (docs/benchmarks.md).
    intra_op_spinning: bool = False
    # A /v1/segment request for an image the cache holds, with at most this many boxes and RLE
    # masks, is decoded on the event loop instead of in a worker thread: the thread hand-off
    # (waking a worker, the GIL passed there and back) was the largest part of the server's
    # own cost of a cached box (R50-FPN int8 on 2 idle cores: 1.8-1.9 ms over the bare decoder
    # against 2.0-2.2 in a thread, docs/benchmarks.md). The loop stalls for that one decode
    # (a few milliseconds), which the request waits for anyway, and such requests no longer
    # overlap each other: at 2 clients sending without pause, 170-200 cached boxes a second
    # against 235-250. 0: every request in a worker thread (a server under heavy concurrent
    # load).
    inline_boxes: int = Field(default=1, ge=0)
    # A model that failed to load (or whose backend failed) is retried at most this often.
    reload_interval_s: float = Field(default=10.0, ge=0.0)

    # --- safety limits ----------------------------------------------------------------------
    max_body_bytes: int = Field(default=32 << 20, ge=1024)
    # Decompression bombs: checked from the image header before any pixel is decoded.
    max_image_pixels: int = Field(default=40_000_000, ge=1)
    max_boxes: int = Field(default=100, ge=1)
    # Boxes x image pixels of one request's masks: each mask is a full-image plane to paste and
    # encode, 10-30 ns a pixel on one busy core, so this bounds how long one request holds an
    # inference slot (2-8 s). 20 boxes on a 12-megapixel photo, 100 on 2.5 megapixels. More is
    # refused with 422 before the request queues (detections: the best that fit are kept).
    # (55 full-image boxes on a 36-megapixel image, 2e9 mask pixels, held a slot for a minute.)
    max_mask_pixels: int = Field(default=250_000_000, ge=1)
    # Each caller (client address) has a budget of mask pixels (an image it sends or a task
    # image fetched for it counts as one plane), refilled at this rate and holding at most
    # `caller_mask_pixels_burst`: a request that needs more than is left gets 429 with
    # Retry-After, before it queues. What one caller costs stays bounded however fast it sends,
    # so one caller cannot hold every slot. 0 turns the per-caller budget off. Label Studio is
    # one caller (its server makes every /labelstudio call).
    caller_mask_pixels_per_minute: int = Field(default=1_500_000_000, ge=0)
    caller_mask_pixels_burst: int = Field(default=500_000_000, ge=1)
    max_detections: int = Field(default=100, ge=1)
    # Requests computing at once (each runs in a worker thread), and requests allowed to wait.
    max_concurrency: int = Field(default=2, ge=1)
    max_queue: int = Field(default=16, ge=0)
    # A request that waited this long for a slot gets 503 instead of hanging.
    queue_timeout_s: float = Field(default=30.0, gt=0.0)
    # Seconds a client is told to wait (Retry-After) when the queue is full.
    retry_after_s: int = Field(default=1, ge=0)

    # --- access -----------------------------------------------------------------------------
    # When set, every route but the probes (/healthz, /readyz, /labelstudio/health and
    # /labelstudio/) and the demo page needs it: ``Authorization: Bearer <api_token>``, or HTTP
    # Basic with it as the password (what Label Studio's "Use authentication" sends).
    api_token: SecretStr | None = None
    cors_origins: list[str] = Field(default_factory=list)
    # Serve the demo page at /.
    demo: bool = True

    # --- logs -------------------------------------------------------------------------------
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = True

    @field_validator("api_token")
    @classmethod
    def _empty_token_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        # BOXMASK_API_TOKEN="" is how a deployment template says "no auth": not a token of "".
        if value is not None and not value.get_secret_value():
            return None
        return value

    @property
    def effective_backend(self) -> Literal["onnxruntime", "triton"]:
        return "triton" if self.triton_url else self.backend

    def predictor_options(self) -> PredictorOptions:
        """The options of every predictor this server loads. Every path (the /v1 routes, Label
        Studio) gets the same limits: the box policy reads them from the predictor."""
        backend = self.effective_backend
        return PredictorOptions(
            backend=backend, precision=self.precision,
            triton_url=self.triton_url if backend == "triton" else None,
            cache_bytes=self.cache_bytes, max_pixels=self.max_image_pixels,
            intra_op_threads=self.threads, intra_op_spinning=self.intra_op_spinning,
            max_boxes=self.max_boxes,
            max_mask_pixels=self.max_mask_pixels, input_min_size=self.input_min_size,
            input_max_size=self.input_max_size, mask_refine=self.mask_refine)


class LabelStudioSettings(BaseSettings):
    """Settings of the Label Studio ML backend at /labelstudio (`BOXMASK_LABELSTUDIO_<FIELD>`)."""

    model_config = SettingsConfigDict(env_prefix="BOXMASK_LABELSTUDIO_", extra="ignore",
                                      protected_namespaces=(), populate_by_name=True)

    # Which served model answers Label Studio; None = the server's default model.
    model: str | None = None
    # Label Studio label name -> model category name or id, as JSON: '{"Car": "car"}'.
    label_map: dict[str, str | int] = Field(default_factory=dict)
    # Where Label Studio is and the key to read task images from it. Task images are fetched
    # only from this origin and `allowed_origins`; the key is sent only to this origin.
    url: str | None = Field(default=None, validation_alias=AliasChoices(
        "BOXMASK_LABELSTUDIO_URL", "LABEL_STUDIO_URL"))
    api_key: str | None = Field(default=None, validation_alias=AliasChoices(
        "BOXMASK_LABELSTUDIO_API_KEY", "LABEL_STUDIO_API_KEY"))
    # Other origins task images may come from (no key is sent there), as a JSON list or
    # comma-separated: '["https://bucket.s3.amazonaws.com"]'.
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Let a project's /setup say where its Label Studio is when `url` is not set. Off: any
    # caller of /setup could point the fetches (and a project's token) at a host it picks.
    trust_setup_hostname: bool = False
    # Label Studio's Local Files root, to read `/data/local-files/?d=` from disk (else they are
    # fetched from Label Studio): only regular files inside it, no symlink out of it.
    local_files_root: str | None = Field(default=None, validation_alias=AliasChoices(
        "BOXMASK_LABELSTUDIO_LOCAL_FILES_ROOT", "LOCAL_FILES_DOCUMENT_ROOT"))
    score_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    max_detections: int = Field(default=100, ge=1)
    polygon_tolerance: float = Field(default=1.0, ge=0.0)
    # One image's fetch: a total deadline (connect, redirects, body) and a per-read timeout.
    fetch_timeout_s: float = Field(default=10.0, gt=0.0)
    read_timeout_s: float = Field(default=5.0, gt=0.0)
    # Fetches at once, in their own pool: inference and probes never wait behind them.
    fetch_concurrency: int = Field(default=8, ge=1)
    max_image_bytes: int = Field(default=32 << 20, ge=1024)
    # Tasks one /predict may carry: "Retrieve Predictions" sends every selected task in one
    # call, each costing a fetch, an encoder run and masks, and Label Studio stops waiting after
    # 100 s. More is refused with 422 (select fewer tasks, or raise this).
    max_tasks: int = Field(default=100, ge=1)
    # Log lines one /predict may write for its failed tasks; the rest are counted in one line.
    max_task_log_lines: int = Field(default=10, ge=0)

    # --- learning from the annotators (docs/labelstudio.md, "Training") -----------------------
    # The folder of each project's annotation store (SQLite), task images, rounds and versions.
    # None: webhook events are acknowledged and nothing is kept or trained.
    data_dir: Path | None = None
    # The checkpoint the served model (`model`) was exported from: the first round starts
    # from it (a served bundle is ONNX only); later rounds start from the served version's.
    base_checkpoint: Path | None = None
    # Start a round after this many new or changed annotations; None: only "Start training".
    train_every: int | None = Field(default=None, ge=1)
    # `boxmask finetune --iterations` (None: its default, 12 passes over the data, 200-1500),
    # and config overrides after it (JSON list or space-separated: 'train.lr=0.0005').
    train_iterations: int | None = Field(default=None, ge=1)
    train_overrides: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Threads the job's torch may use (None: torch's default, one per core).
    train_threads: int | None = Field(default=None, ge=1)
    # The job's address-space limit (RLIMIT_AS; torch alone maps about 3 GB; 0: none, for
    # CUDA, which maps far more address space than it uses) and wall clock.
    train_memory_bytes: int = Field(default=12 << 30, ge=0)
    train_timeout_s: float = Field(default=4 * 3600.0, gt=0.0)
    # The command that runs `boxmask finetune` (JSON list or a shell-like line); empty: this
    # server's Python (`python -m boxmask`), which then needs `boxmask[train]`.
    train_command: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Share (percent) of the tasks with masks held out of training to score each new version.
    heldout_percent: float = Field(default=20.0, ge=0.0, le=90.0)
    # A new version is promoted when its held-out mean IoU beats the served one's by more.
    promote_min_gain: float = Field(default=0.0, ge=0.0, le=1.0)
    # Promote versions that could not be scored (no held-out masks); off: they are kept unserved.
    promote_without_heldout: bool = False
    # Byte budget of the task images kept on disk for rounds.
    image_cache_bytes: int = Field(default=2 << 30, ge=1 << 20)

    @field_validator("train_overrides", "train_command", mode="before")
    @classmethod
    def _word_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return shlex.split(text)
        return value

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _origin_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [v.strip() for v in text.split(",") if v.strip()]
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _origins_are_origins(cls, value: list[str]) -> list[str]:
        for item in value:
            parts = urlsplit(item)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"allowed_origins: {item!r} is not an http(s) origin like "
                                 "'https://host:port'")
        return value

    @field_validator("label_map", mode="before")
    @classmethod
    def _json_map(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(f"label_map must be a JSON object like '{{\"Car\": \"car\"}}': {exc}") from exc
        return value
