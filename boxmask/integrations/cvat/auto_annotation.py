"""boxmask as a cvat-sdk auto-annotation detection function.

    cvat-cli --server-host URL --auth USER task auto-annotate TASK_ID \\
        --function-module boxmask.integrations.cvat.auto_annotation \\
        -p model_dir=str:/path/to/exported_model [-p score_threshold=float:0.5]

cvat-cli calls `create(**parameters)` and uses the object's `spec` (the model's categories as
mask labels, matched to the task's labels by name) and `detect(context, image)`. Without `-p
model_dir=...` the model comes from `BOXMASK_MODEL_DIR` (and `BOXMASK_TRITON_URL`,
`BOXMASK_PRECISION`, `BOXMASK_CACHE_BYTES`: `settings.CvatSettings`), which also serves the
module-level `spec` / `detect` for tools that use a module as the function.
"""

from __future__ import annotations

from functools import cache

import cvat_sdk.auto_annotation as cvataa
import numpy as np
import PIL.Image
from cvat_sdk import models
from cvat_sdk.masks import encode_mask

from boxmask.integrations.cvat.settings import CvatSettings
from boxmask.runtime import Predictor
from boxmask.runtime.masks import to_polygons


class BoxmaskDetectionFunction:
    """Detects objects with boxmask's detector and returns them as CVAT masks (or polygons
    when cvat-cli runs with `--conv-mask-to-poly`)."""

    def __init__(self, predictor: Predictor, score_threshold: float = 0.5,
                 max_detections: int = 100) -> None:
        self.predictor = predictor
        self.score_threshold = score_threshold
        self.max_detections = max_detections
        self.spec = cvataa.DetectionFunctionSpec(
            labels=[cvataa.label_spec(c.name, c.id, type="mask") for c in predictor.card.categories])

    def detect(self, context: cvataa.DetectionFunctionContext,
               image: PIL.Image.Image) -> list[models.LabeledShapeRequest]:
        threshold = context.conf_threshold if context.conf_threshold is not None else self.score_threshold
        rgb = np.asarray(image.convert("RGB"))
        pred = self.predictor.detect(image=rgb, score_threshold=threshold,
                                     max_detections=self.max_detections)
        shapes: list[models.LabeledShapeRequest] = []
        for mask, category_id in zip(pred.iter_masks(), pred.labels.tolist(), strict=True):
            if not mask.any():
                continue
            if context.conv_mask_to_poly:
                shapes += [cvataa.polygon(int(category_id), polygon) for polygon in to_polygons(mask)]
            else:
                shapes.append(cvataa.mask(int(category_id), encode_mask(mask)))
        return shapes


def create(model_dir: str | None = None, score_threshold: float = 0.5, max_detections: int = 100,
           triton_url: str | None = None) -> BoxmaskDetectionFunction:
    """The function cvat-cli builds from `-p name=type:value` parameters (over the
    environment's `CvatSettings`)."""
    settings = CvatSettings.from_env(model_dir=model_dir, triton_url=triton_url)
    return BoxmaskDetectionFunction(settings.load_predictor(), score_threshold, max_detections)


@cache
def _default() -> BoxmaskDetectionFunction:
    return create()


def detect(context: cvataa.DetectionFunctionContext, image: PIL.Image.Image) -> list[models.LabeledShapeRequest]:
    """Module-level `detect` of the function served from `BOXMASK_MODEL_DIR`."""
    return _default().detect(context, image)


def __getattr__(name: str) -> object:
    # `spec` is built from the model's card, so it exists only once a model is known.
    if name == "spec":
        return _default().spec
    raise AttributeError(name)
