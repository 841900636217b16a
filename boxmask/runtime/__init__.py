"""Torch-free inference for exported boxmask models (docs/contracts.md §5).

    from boxmask.runtime import Predictor
    p = Predictor.from_dir("model_dir", PredictorOptions(precision="int8"))
    key = p.set_image(image_bytes)
    pred = p.predict([[10, 20, 200, 180]], labels=["disc"], key=key)

What a box must be is `boxes.py`'s box policy (`check_boxes`), applied once where boxes come in.

Nothing in this package imports torch; the server, the batch labeler and the integrations
build on it (docs/architecture.md gives the rules; `contract.py` the names export shares).
"""

from boxmask.runtime.boxes import BoxLimits, CheckedBoxes, check_boxes
from boxmask.runtime.cache import ByteLRUCache, CacheStats
from boxmask.runtime.card import Category, ModelCard
from boxmask.runtime.errors import (
    BackendUnavailable,
    BadBoxes,
    BadImage,
    ModelDirError,
    NoDetector,
    TooManyBoxes,
    TooManyMaskPixels,
    UnknownImage,
    UnknownLabel,
)
from boxmask.runtime.options import PredictorOptions
from boxmask.runtime.predictor import Prediction, Predictor

__all__ = [
    "BackendUnavailable",
    "BadBoxes",
    "BadImage",
    "BoxLimits",
    "ByteLRUCache",
    "CacheStats",
    "Category",
    "CheckedBoxes",
    "ModelCard",
    "ModelDirError",
    "NoDetector",
    "Prediction",
    "Predictor",
    "PredictorOptions",
    "TooManyBoxes",
    "TooManyMaskPixels",
    "UnknownImage",
    "UnknownLabel",
    "check_boxes",
]
