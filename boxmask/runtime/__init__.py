"""Torch-free inference for exported boxmask models (docs/contracts.md §5).

    from boxmask.runtime import Predictor
    p = Predictor.from_dir("model_dir")
    key = p.set_image(image_bytes)
    pred = p.predict([[10, 20, 200, 180]], labels=["disc"], key=key)

Nothing in this package imports torch; the server, the batch labeler and the integrations
build on it (docs/architecture.md gives the rules; `contract.py` the names export shares).
"""

from boxmask.runtime.cache import ByteLRUCache, CacheStats
from boxmask.runtime.card import Category, ModelCard
from boxmask.runtime.errors import (
    BackendUnavailable,
    BadBoxes,
    BadImage,
    ModelDirError,
    NoDetector,
    UnknownImage,
    UnknownLabel,
)
from boxmask.runtime.predictor import Prediction, Predictor

__all__ = [
    "BackendUnavailable",
    "BadBoxes",
    "BadImage",
    "ByteLRUCache",
    "CacheStats",
    "Category",
    "ModelCard",
    "ModelDirError",
    "NoDetector",
    "Prediction",
    "Predictor",
    "UnknownImage",
    "UnknownLabel",
]
