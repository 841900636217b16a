"""`Predictor`: boxes in, full-resolution class-specific masks out, without torch.

Like Segment Anything's `SamPredictor`, the expensive part runs once per image and the cheap part
once per set of boxes: `set_image` runs the encoder (image -> FPN features) and caches its
outputs under the image's sha256; `predict` runs the decoder on all boxes of one call at once
and pastes the R x R masks into the image. When every box comes with its label and the caller
does not ask for class scores, `predict` runs the labelled decoder instead (where the model
directory has one): the mask branch alone, without the box head, whose only product for a
given label is its class score (`Prediction.scores` is then NaN). `detect` runs the detector over the same cached
features, so an image is encoded once whether boxes are drawn on it, it is pre-annotated, or
both.

Every mask gets `Prediction.quality`, the review score of `boxmask.runtime.review` (which masks
to check first, higher: more likely right): the mean of the mask's confidence, how well it
separates its box's colours (the encoded image's pixels are cached with its features for
this) and, for a model with the mask-quality head (the card's ``mask_quality``), the head's
predicted IoU. The head is one more decoder output, ``quality``: `predict` asks whichever
decoder it runs for it; `detect` asks the labelled decoder for the detections' boxes and labels
(the detector has no such output; the mask is the same).

Boxes are xyxy in original-image pixels. `predict` takes them checked by the box policy
(`boxmask.runtime.boxes.check_boxes`: the caller's edge checks them once, against this
predictor's `limits`) and decodes them as they are; plain lists are checked by the same policy
first, so a library caller gets the same errors as every other entry point. Labels are COCO
category ids (int) or names (str), or None per box for "no label: use the predicted class".
How a predictor runs and what it accepts is one `PredictorOptions` value.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from boxmask.runtime.boxes import BoxLimits, CheckedBoxes, LabelLike, check_boxes
from boxmask.runtime.cache import ByteLRUCache, CacheStats
from boxmask.runtime.card import ModelCard
from boxmask.runtime.contract import (
    BOXES,
    CLASS_SCORES,
    DECODER,
    DETECTOR,
    DETECTOR_OUTPUTS,
    ENCODER,
    ENCODER_INPUT,
    GRAPHS,
    IMAGE_SIZE,
    LABELLED_DECODER,
    LABELS,
    LABELS_OUT,
    MASK_LOGITS,
    MASK_PROBS,
    QUALITY,
    SCORES,
    TRITON_MODEL_NAMES,
    decoder_outputs,
    file_key,
)
from boxmask.runtime.crf import KERNELS, refine_boxes
from boxmask.runtime.errors import ModelDirError, NoDetector, UnknownImage
from boxmask.runtime.images import image_key, load_image
from boxmask.runtime.masks import CroppedMask, grid_offset, mask_box, paste_cropped_mask
from boxmask.runtime.options import PredictorOptions
from boxmask.runtime.review import review_boxes, weights_for
from boxmask.runtime.sessions import InferenceSession
from boxmask.runtime.transforms import ResizeInfo, boxes_to_original, boxes_to_resized, preprocess

logger = logging.getLogger(__name__)

# What one box costs the decoder, for a budget of boxes per run: its activations are, per box,
# the multi-scale RoI pool (an RoIAlign per FPN level, and their casts and gather), the mask
# tower at R/2 x R/2, the upsampled mask features and pixel map at R x R and the class logits,
# and ONNX Runtime's arena grows by doubling on top of them. About this many R x R planes of
# the widest of the FPN, mask head and pixel-map channels, plus the class logits, cover that:
# on the bundled demo model (64 / 128 / 16 channels, R = 28) the estimate is 3.2 MB a box,
# where its graph's per-box intermediates sum to 1.3 MB and the process's peak RSS grew 1.2 to
# 2.9 MB a box (100 to 3,000 boxes in one run).
DECODER_PLANES_PER_BOX = 8
# Channel widths a card does not state: torchvision's Mask R-CNN FPN and mask head.
DEFAULT_CHANNELS = 256


def _channels(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def decoder_bytes_per_box(card: ModelCard) -> int:
    """An upper estimate of the decoder's working memory per box, in bytes (float32), from the
    card: the channels of its feature inputs (``onnx.decoder.inputs``), the mask head's width
    (the training config in ``provenance``; torchvision's 256 where unknown) and the mask
    resolution. See `DECODER_PLANES_PER_BOX`."""
    inputs = card.onnx.get(DECODER, {}).get("inputs", {}) if isinstance(card.onnx, dict) else {}
    widths = [_channels(shape[1]) for shape in inputs.values()
              if isinstance(shape, list) and len(shape) == 4]
    config = card.provenance.get("config") or {}
    model = config.get("model") if isinstance(config, dict) else None
    head = _channels(model.get("mask_head_channels")) if isinstance(model, dict) else None
    known = [w for w in widths if w] or [DEFAULT_CHANNELS]
    widest = max(*known, head or DEFAULT_CHANNELS)
    r = card.mask_resolution
    return 4 * r * r * (DECODER_PLANES_PER_BOX * widest + card.num_classes + 1)


#: A mask whose every cell is at least this sure is its box (the guard's box has logit 12 on
#: every cell, sigmoid 0.999994; int8 graphs keep it above 0.999).
BOX_FALLBACK_PROB = 0.999


@dataclass
class Prediction:
    """Masks for N boxes of one image (N = K detections for `detect`).

    The masks are kept as the decoder's `[N, R, R]` probabilities and pasted on demand, one
    `[H, W]` plane at a time (`mask(i)`, `iter_masks()`), each cropped to its box: encoding N
    masks never holds N full-size planes; `cropped_mask(i)` is mask i without its plane, the
    pixels of its box alone, for an encoder that needs no more (RLE, the tight box). `masks`
    stacks all N planes, for callers that want the array and can afford N x H x W bytes.
    """

    scores: np.ndarray  # [N] float32: class score of the label used (NaN: not computed)
    labels: np.ndarray  # [N] int64 COCO category ids
    boxes: np.ndarray  # [N, 4] float32 xyxy original pixels (clipped to the image)
    mask_probs: np.ndarray  # [N, R, R] float32 mask probabilities before pasting
    names: list[str] = field(default_factory=list)  # [N] category names
    image_size: tuple[int, int] = (0, 0)  # (H, W)
    key: str | None = None
    mask_threshold: float = 0.5
    # (dx, dy) original pixels the masks are pasted off their boxes by: non-zero for a model of
    # torchvision's half-pixel mask grid (`ModelCard.mask_grid`; boxmask/model/paste.py).
    paste_offset: tuple[float, float] = (0.0, 0.0)
    # [N] float32 in [0, 1]: each mask's review score (boxmask.runtime.review: confidence,
    # colour separation and the mask-quality head's IoU where the model has the head); NaN
    # where nothing scored it (an answer built without the image's pixels and without the
    # head). None at construction: NaN.
    quality: np.ndarray | None = None
    # [N] float32: the mask-quality head's predicted IoU alone (one of the review score's
    # terms); NaN for a model without the head. None at construction: NaN.
    head_quality: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.quality is None:
            self.quality = np.full((len(self),), np.nan, dtype=np.float32)
        if self.head_quality is None:
            self.head_quality = np.full((len(self),), np.nan, dtype=np.float32)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def box_fallback(self) -> np.ndarray:
        """`[N]` bool: mask i is its whole box, every cell of its grid at least
        `BOX_FALLBACK_PROB`: what a model served with `served_box_guard` returns where it judged
        the box a better mask than its own (boxmask.model.mask_branch.box_guard), or a mask
        that fills its box."""
        return self.mask_probs.min(axis=(1, 2)) >= BOX_FALLBACK_PROB

    @property
    def has_quality(self) -> bool:
        """Whether the masks carry a review score (else `quality` is NaN)."""
        assert self.quality is not None
        return bool(len(self)) and not bool(np.isnan(self.quality).all())

    def tight_box(self, i: int, mask: np.ndarray | CroppedMask | None = None
                  ) -> tuple[float, float, float, float] | None:
        """The box of mask `i`'s pixels (`boxmask.runtime.masks.mask_box`: xyxy, original
        pixels; None for an empty mask), inside `boxes[i]`, which it never replaces. `mask`:
        `mask(i)` or `cropped_mask(i)` when the caller has it already."""
        return mask_box(self.cropped_mask(i) if mask is None else mask, self.boxes[i])

    def mask(self, i: int) -> np.ndarray:
        """Mask `i` as `[H, W]` bool: `prob > mask_threshold`, pasted pixel-aligned (as the torch
        model does) and cropped to the pixels its box touches."""
        return self.cropped_mask(i).full()

    def cropped_mask(self, i: int) -> CroppedMask:
        """Mask `i` as the pixels its box touches (`mask(i)` without the `[H, W]` plane): what
        an encoder of the mask alone (`boxmask.runtime.masks.to_rle`, `mask_box`) reads."""
        h, w = self.image_size
        return paste_cropped_mask(self.mask_probs[i], self.boxes[i], h, w, self.mask_threshold,
                                  self.paste_offset)

    def iter_masks(self) -> Iterator[np.ndarray]:
        """The masks one at a time (each a fresh `[H, W]` plane)."""
        for i in range(len(self)):
            yield self.mask(i)

    @property
    def masks(self) -> np.ndarray:
        """All masks, `[N, H, W]` bool (N x H x W bytes: prefer `mask(i)` for many or large)."""
        h, w = self.image_size
        out = np.zeros((len(self), h, w), dtype=bool)
        for i in range(len(self)):
            out[i] = self.mask(i)
        return out

    def subset(self, keep: Sequence[int]) -> Prediction:
        """The predictions at positions `keep`, in that order."""
        idx = np.asarray(keep, dtype=np.int64)
        assert self.quality is not None and self.head_quality is not None
        return Prediction(scores=self.scores[idx], labels=self.labels[idx], boxes=self.boxes[idx],
                          mask_probs=self.mask_probs[idx], names=[self.names[i] for i in idx],
                          image_size=self.image_size, key=self.key,
                          mask_threshold=self.mask_threshold, paste_offset=self.paste_offset,
                          quality=self.quality[idx], head_quality=self.head_quality[idx])


@dataclass(frozen=True)
class EncodedImage:
    """One cache entry: the encoder's outputs and what is needed to use them."""

    features: Mapping[str, np.ndarray]  # p2..p5, [1, F, Hp/stride, Wp/stride]
    info: ResizeInfo
    # [h, w, 3] uint8 RGB: the resized image the encoder saw (unpadded), whose colours the
    # review score reads (boxmask.runtime.review). None: an entry made without it (no colour
    # term). A few per cent of the features' bytes: 3 bytes a pixel against F x 4 / stride^2.
    pixels: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        extra = 0 if self.pixels is None else int(self.pixels.nbytes)
        return int(sum(v.nbytes for v in self.features.values())) + extra


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp(-logaddexp(0, -x)) = 1 / (1 + exp(-x)) without overflow warnings for large |x|.
    return np.exp(-np.logaddexp(0.0, -x.astype(np.float32))).astype(np.float32)


class Predictor:
    """Segment boxes of images with an exported boxmask model.

    Thread-safe: sessions run concurrently and the feature cache is locked.
    """

    def __init__(
        self,
        card: ModelCard,
        encoder: InferenceSession,
        decoder: InferenceSession,
        detector: InferenceSession | None = None,
        *,
        labelled_decoder: InferenceSession | None = None,
        detector_factory: Callable[[], InferenceSession] | None = None,
        options: PredictorOptions | None = None,
        **overrides: Any,
    ) -> None:
        """`options` (default: `PredictorOptions()`), with `overrides` naming some of its
        fields (``Predictor(..., max_pixels=100)``) for a caller with no options object."""
        options = (options or PredictorOptions()).replace(**overrides)
        self.options = options
        self.card = card
        self.encoder = encoder
        # The features one encoding holds: the FPN levels, and the pixel map of a model whose
        # mask heads fuse one. Every output the encoder has is a feature the decoders take by
        # the same name (contract.py); read once here, as the graph does not change under a
        # predictor (a reload builds a new one).
        self.feature_names: tuple[str, ...] = tuple(encoder.output_names)
        self.decoder = decoder
        # Optional: masks of labelled boxes without the box head (None: the decoder does all).
        self.labelled_decoder = labelled_decoder
        # The card says whether the decoders have the `quality` output (the mask-quality head).
        self.has_quality = bool(card.mask_quality)
        # Every mask refined by the dense CRF on its image (the card's model.served_crf, or the
        # options' choice): after the decoder and its review score (`_prediction`).
        self.mask_refine = (card.mask_refine if options.mask_refine == "auto"
                            else options.mask_refine)
        self._detector = detector
        self._detector_factory = detector_factory
        self._detector_lock = threading.Lock()
        self.cache: ByteLRUCache[EncodedImage] = ByteLRUCache(options.cache_bytes)
        self.max_pixels = options.max_pixels
        # What one call may ask for (boxes; boxes x image pixels), for the box policy.
        self.limits: BoxLimits = options.limits
        # Boxes per decoder run, from a byte budget: the decoder's memory grows with the boxes
        # of one run (3,000 boxes of the demo model take 3.8 GB at once), and more boxes than
        # this are decoded in runs of at most this many (None: one run, however many).
        budget = options.decoder_budget_bytes
        self.decoder_budget_bytes = budget
        self.boxes_per_run: int | None = (
            None if budget is None else max(1, budget // decoder_bytes_per_box(card)))
        self.mask_threshold = options.mask_threshold
        # The encoder's input size (torchvision's resize rule): the card's, or a smaller one for
        # interactive use, where the encoder is what a new image waits for and its cost grows
        # with the pixel count. The graphs take any size; the model was trained at the card's.
        self.input_min_size = options.input_min_size or card.preprocess.min_size
        self.input_max_size = options.input_max_size or card.preprocess.max_size
        self._label_to_id = np.asarray(card.label_to_id(), dtype=np.int64)
        # Each thread's current image (the last it set or selected), held outside the cache: a
        # `predict` right after `set_image` in the same thread must not fail because the cache
        # (budget 0, or another thread's image) dropped it in between, and a `predict` without
        # a key uses this thread's image, never another thread's. One entry per thread.
        self._pinned = threading.local()

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_dir(cls, model_dir: str | Path, options: PredictorOptions | None = None,
                 **overrides: Any) -> Predictor:
        """A predictor for an exported model directory (docs/contracts.md §4).

        `options` (default: `PredictorOptions()`), with `overrides` naming some of its fields
        (``from_dir(path, precision="int8")``) for a caller with no options object. Backend
        "onnxruntime" loads the directory's ONNX files in-process (the `precision` variant of
        each graph where the card lists one, else fp32), "triton" uses the models
        `boxmask_encoder` / `boxmask_decoder` / `boxmask_detector` of the server at
        `triton_url` and reads only `model.json` here. The detector session is created on first
        `detect`. `decoder_budget_bytes` bounds the decoder's memory (`boxes_per_run`).
        """
        options = (options or PredictorOptions()).replace(**overrides)
        model_dir = Path(model_dir)
        card = ModelCard.load(model_dir, verify=False)
        backend, precision = options.backend, options.precision
        if backend == "onnxruntime":
            keys = cls._file_keys(card, precision)
            if options.verify:
                card.verify_files(model_dir, list(keys.values()))

            def session(graph: str) -> InferenceSession:
                from boxmask.runtime.sessions.onnx_runtime import OnnxRuntimeSession

                return OnnxRuntimeSession(
                    card.file_path(model_dir, keys[graph]),
                    providers=options.providers,
                    intra_op_threads=options.intra_op_threads,
                    allow_spinning=options.intra_op_spinning,
                )

        else:  # "triton": PredictorOptions made sure there is a URL
            triton_url = options.triton_url
            assert triton_url is not None
            keys = {graph: graph for graph in GRAPHS
                    if graph != LABELLED_DECODER or graph in card.files}

            def session(graph: str) -> InferenceSession:
                from boxmask.runtime.sessions.triton_client import TritonSession

                return TritonSession(
                    triton_url, TRITON_MODEL_NAMES[graph], protocol=options.triton_protocol
                )

        factory = (lambda: session(DETECTOR)) if DETECTOR in keys else None
        labelled = session(LABELLED_DECODER) if LABELLED_DECODER in keys else None
        return cls(card, session(ENCODER), session(DECODER), labelled_decoder=labelled,
                   detector_factory=factory, options=options)

    @staticmethod
    def _file_keys(card: ModelCard, precision: str) -> dict[str, str]:
        """Card file key per graph for a precision; fp32 where a graph has no such variant."""
        if precision not in ("fp32", "fp16", "int8"):
            raise ValueError(f"precision must be fp32, fp16 or int8, got {precision!r}")
        keys: dict[str, str] = {}
        for graph in GRAPHS:
            variant = file_key(graph, precision)
            if precision != "fp32" and variant in card.files:
                keys[graph] = variant
            elif graph in card.files:
                keys[graph] = graph
        if ENCODER not in keys or DECODER not in keys:
            raise ModelDirError(
                f"model.json must list an encoder and a decoder, it has {sorted(card.files)}"
            )
        if precision != "fp32":
            if not any(k.endswith(f"_{precision}") for k in keys.values()):
                raise ModelDirError(
                    f"no {precision} graph in this model directory (files: {', '.join(sorted(card.files))}); "
                    f"export with --{precision}"
                )
            fallback = [g for g, k in keys.items() if k == g]
            if fallback:
                logger.info(
                    "no %s variant of %s: using fp32 for them", precision, ", ".join(fallback)
                )
        return keys

    @property
    def detector(self) -> InferenceSession:
        with self._detector_lock:
            if self._detector is None:
                if self._detector_factory is None:
                    raise NoDetector(
                        "this model has no detector graph, so it cannot find objects without "
                        "boxes: give boxes, or export the model again with its detector"
                    )
                self._detector = self._detector_factory()
            return self._detector

    def describe(self) -> dict[str, str]:
        out = {ENCODER: self.encoder.describe(), DECODER: self.decoder.describe()}
        if self.labelled_decoder is not None:
            out[LABELLED_DECODER] = self.labelled_decoder.describe()
        return out

    def cache_stats(self) -> CacheStats:
        return self.cache.stats()

    # -- images -------------------------------------------------------------------------------

    def _encode(self, image: bytes | np.ndarray) -> EncodedImage:
        rgb = load_image(image, self.max_pixels)
        pp = self.card.preprocess
        batch, info = preprocess(rgb, self.input_min_size, self.input_max_size, pp.size_divisible,
                                 pp.mean)
        outputs = self.encoder.run({ENCODER_INPUT: batch}, list(self.feature_names))
        nh, nw = info.resized_size
        pixels = np.ascontiguousarray(
            np.clip(np.rint(batch[0, :, :nh, :nw].transpose(1, 2, 0)), 0, 255).astype(np.uint8))
        return EncodedImage(features=outputs, info=info, pixels=pixels)

    def set_image(self, image: bytes | np.ndarray) -> str:
        """Encode an image (or find it in the cache) and return its key (sha256 hex).

        image: `[H, W, 3]` uint8 RGB (also `[H, W]`, `[H, W, 4]`, uint16), or encoded bytes.
        Raises `BadImage` when it cannot be decoded or has more than `max_pixels` pixels.
        """
        key = image_key(image)
        entry, _ = self.cache.get_or_compute(key, lambda: self._encode(image))
        self._pinned.entry = (key, entry)
        return key

    def select_image(self, key: str) -> str:
        """Make an image already in the cache (a key from `set_image`, e.g. sent back by a
        client) this thread's current one, as `set_image` does for a new image: the
        predictions that follow in this thread use it even if the cache drops it meanwhile.
        Counts a cache hit (or a miss, raising `UnknownImage`)."""
        self._pinned.entry = self._cached(key)
        return key

    def image_size(self, key: str | None = None) -> tuple[int, int]:
        """`(height, width)` of an encoded image: `key`'s, or this thread's current one. Runs
        no graph and decodes nothing; `UnknownImage` when the image is not (or no longer)
        cached."""
        return self._entry(key)[1].info.original_size

    def _entry(self, key: str | None) -> tuple[str, EncodedImage]:
        pinned = getattr(self._pinned, "entry", None)
        if key is None:
            if pinned is None:
                raise UnknownImage("no image has been set in this thread: call set_image first "
                                   "or pass key=")
            return pinned
        if pinned is not None and pinned[0] == key:
            # Set (or selected) by this thread: its cache lookup was counted there.
            return pinned
        return self._cached(key)

    def _cached(self, key: str) -> tuple[str, EncodedImage]:
        """The cache's entry for `key` (one counted lookup), or `UnknownImage`."""
        entry = self.cache.get(key)
        if entry is None:
            raise UnknownImage(
                f"image {key} is not in the cache (never set, or evicted): send the image again"
            )
        return key, entry

    # -- inference ----------------------------------------------------------------------------

    def _prediction(
        self,
        probs: np.ndarray,
        boxes: np.ndarray,
        labels: np.ndarray,
        scores: np.ndarray,
        info: ResizeInfo,
        key: str | None,
        threshold: float | None,
        quality: np.ndarray | None = None,
        pixels: np.ndarray | None = None,
    ) -> Prediction:
        """The answer for N decoded boxes. `quality`: the head's IoU (NaN without the head);
        with `pixels` (the entry's), it becomes the review score (boxmask.runtime.review)."""
        h, w = info.original_size
        ids = self._label_to_id[labels]
        t = self.mask_threshold if threshold is None else threshold
        head = None if quality is None else quality.astype(np.float32)
        if pixels is not None and len(probs):
            resized = boxes_to_resized(boxes, info)
            # The review score: the decoder's confidence, the served mask's colour separation
            # and edge contrast (refined by the CRF where the card says so), the head's IoU,
            # weighed as fitted for this finish (runtime.review).
            served = (refine_boxes(pixels, resized, probs, KERNELS[self.mask_refine])
                      if self.mask_refine != "none" else None)
            quality = review_boxes(pixels, resized, probs, head, t, served,
                                   weights_for(self.mask_refine))
            if served is not None:
                probs = served
        return Prediction(
            mask_threshold=self.mask_threshold if threshold is None else threshold,
            scores=scores.astype(np.float32),
            labels=ids,
            boxes=boxes.astype(np.float32),
            mask_probs=probs,
            names=[self.card.by_id(int(i)).name for i in ids],
            image_size=(h, w),
            key=key,
            paste_offset=self._paste_offset(info),
            quality=None if quality is None else quality.astype(np.float32),
            head_quality=head,
        )

    def _paste_offset(self, info: ResizeInfo) -> tuple[float, float]:
        """`grid_offset` for this model and image."""
        return grid_offset(self.card.mask_grid == "aligned", info.original_size, info.resized_size)

    def predict(
        self,
        boxes: CheckedBoxes | object,
        labels: Sequence[LabelLike] | None = None,
        key: str | None = None,
        mask_threshold: float | None = None,
        class_scores: bool = True,
    ) -> Prediction:
        """Masks for `boxes` of the image `key` (default: the image of the last `set_image`).
        All boxes go through the decoder in one run, or in runs of `boxes_per_run` under a
        decoder budget (the same masks and scores: each box is decoded on its own).

        `boxes`: `CheckedBoxes` from the box policy (their labels with them), decoded as they
        are; or ``[N, 4]`` xyxy original pixels with `labels`, which the policy checks first
        against this predictor's `limits` (`BadBoxes`, `TooManyMaskPixels`, `UnknownLabel`).

        `class_scores=False` allows the labelled decoder when every box has a label: the same
        masks without the box head's cost, and `scores` NaN. Boxes without a label need the box
        head for their class, so they take the full decoder (and get scores) either way."""
        key, entry = self._entry(key)
        h, w = entry.info.original_size
        if isinstance(boxes, CheckedBoxes):
            if labels is not None or boxes.image_size != (h, w):
                raise ValueError(f"boxes checked for a {boxes.image_size} image (labels with "
                                 f"them) cannot be decoded on this {(h, w)} one")
            checked = boxes
        else:
            checked = check_boxes(boxes, labels, card=self.card, image_size=(h, w),
                                  limits=self.limits)
        clipped, contiguous = checked.xyxy, checked.labels
        n = clipped.shape[0]
        r = self.card.mask_resolution
        if n == 0:
            empty = np.zeros((0,), dtype=np.int64)
            return self._prediction(
                np.zeros((0, r, r), np.float32),
                clipped,
                empty,
                np.zeros((0,), np.float32),
                entry.info,
                key,
                mask_threshold,
            )
        rh, rw = entry.info.resized_size
        resized = boxes_to_resized(clipped, entry.info)
        # Decided for all boxes at once, so that runs of a budget use the same graph.
        labelled = (not class_scores and self.labelled_decoder is not None
                    and bool((contiguous > 0).all()))
        step = self.boxes_per_run or n
        probs = np.empty((n, r, r), dtype=np.float32)
        used = contiguous.copy()
        scores = np.full((n,), np.nan, dtype=np.float32)
        quality = np.full((n,), np.nan, dtype=np.float32)
        for start in range(0, n, step):
            part = slice(start, min(start + step, n))
            m = part.stop - part.start
            feed = {
                **entry.features,
                BOXES: resized[part],
                LABELS: contiguous[part],
                IMAGE_SIZE: np.array([rh, rw], dtype=np.int64),
            }
            names = list(decoder_outputs(self.has_quality, labelled=labelled))
            if labelled:
                assert self.labelled_decoder is not None
                outputs = self.labelled_decoder.run(feed, names)
            else:
                outputs = self.decoder.run(feed, names)
                used[part] = outputs[LABELS_OUT].astype(np.int64).reshape(m)
                scores[part] = outputs[CLASS_SCORES][np.arange(m), used[part]]
            probs[part] = _sigmoid(outputs[MASK_LOGITS].reshape(m, r, r))
            if self.has_quality:
                quality[part] = outputs[QUALITY].reshape(m)
        return self._prediction(probs, clipped, used, scores, entry.info, key, mask_threshold,
                                quality, entry.pixels)

    def _detection_quality(self, entry: EncodedImage, boxes: np.ndarray, labels: np.ndarray
                           ) -> np.ndarray:
        """The mask-quality head's IoU for detections (``boxes`` in resized-image pixels,
        ``labels`` contiguous 1..C): the detector has no such output, so the labelled decoder
        (else the decoder, with the labels given) scores the same boxes and labels, whose masks
        are the detector's. Costs one mask branch run over the kept detections; in runs of
        `boxes_per_run` under a decoder budget."""
        n = boxes.shape[0]
        quality = np.full((n,), np.nan, dtype=np.float32)
        session = self.labelled_decoder or self.decoder
        rh, rw = entry.info.resized_size
        step = self.boxes_per_run or max(n, 1)
        for start in range(0, n, step):
            part = slice(start, min(start + step, n))
            feed = {**entry.features, BOXES: boxes[part].astype(np.float32),
                    LABELS: labels[part].astype(np.int64),
                    IMAGE_SIZE: np.array([rh, rw], dtype=np.int64)}
            quality[part] = session.run(feed, [QUALITY])[QUALITY].reshape(-1)
        return quality

    def detect(
        self,
        key: str | None = None,
        image: bytes | np.ndarray | None = None,
        score_threshold: float = 0.5,
        max_detections: int = 100,
        mask_threshold: float | None = None,
    ) -> Prediction:
        """All objects the detector finds with `score >= score_threshold`, best first, at most
        `max_detections`. Give the key of an image already set, or an image: it is encoded (and
        cached, as `set_image` does) first."""
        if image is not None:
            key = self.set_image(image)
        key, entry = self._entry(key)
        info = entry.info
        rh, rw = info.resized_size
        out = self.detector.run(
            {**entry.features, IMAGE_SIZE: np.array([rh, rw], dtype=np.int64)},
            list(DETECTOR_OUTPUTS),
        )
        scores = out[SCORES].astype(np.float32).reshape(-1)
        keep = np.flatnonzero(scores >= score_threshold)
        h, w = info.original_size
        # The same limits as boxes sent in (the best detections are kept).
        limit = self.limits.masks_that_fit(max_detections, h * w)
        keep = keep[np.argsort(-scores[keep], kind="stable")][:limit]
        resized = out[BOXES].reshape(-1, 4)[keep]
        boxes = boxes_to_original(resized, info)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        r = self.card.mask_resolution
        probs = out[MASK_PROBS].reshape(-1, r, r)[keep].astype(np.float32)
        labels = out[LABELS].astype(np.int64).reshape(-1)[keep]
        quality = (self._detection_quality(entry, resized, labels)
                   if self.has_quality and keep.size else None)
        return self._prediction(probs, boxes, labels, scores[keep], info, key, mask_threshold,
                                quality, entry.pixels)
