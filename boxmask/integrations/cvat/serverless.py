"""CVAT's serverless (nuclio) function requests -> `boxmask.runtime` -> CVAT's replies.

The contract, as read from CVAT's lambda manager (`cvat/apps/lambda_manager/views.py`) and
its UI (`lambda-manager.ts`, `tools-control.tsx`):

- detector request: `{"image": <base64 frame>, "threshold"?: str|float}` (threshold only when
  the user typed one); reply: a list of `{"label", "type": "mask", "points": polygon,
  "mask": crop + [xtl, ytl, xbr, ybr], "confidence"}`. CVAT drops labels missing from the
  function's `spec`, and applies the user's label mapping and mask->polygon option itself.
- interactor request: `{"image", "pos_points": [], "neg_points": [], "obj_bbox": [[xtl, ytl],
  [xbr, ybr]]}` (no label); reply since CVAT 2.60: `{"shapes": [{"type": "mask", "points":
  <CVAT mask RLE + box>}]}`, up to 2.59: `{"mask": HxW}` (`BOXMASK_CVAT_INTERACTOR_REPLY=mask`).
  CVAT sends no label, so the mask is that of the class the model predicts for the box.

Mask quality: each mask's review score (boxmask.runtime.review: its confidence, colour
separation and the mask-quality head's IoU where the model has the head) goes where CVAT reads
a confidence: the detector reply's `confidence`, and
in an interactor's `shapes` reply the attribute of spec id 0, which cvat-sdk's interaction
functions use for the confidence (`cvat_sdk.auto_annotation.InteractionResultAttributes.
CONFIDENCE`, a number in [0, 1]; cvat-cli's agent replies `{"shapes": [...]}` in the same form).
The pre-2.60 `{"mask"}` reply has no place for it.

`deploy/cvat/*/main.py` are thin nuclio handlers around `detect_reply` and `interact_reply`,
told what to serve by `settings.CvatSettings` (the environment, read once). The drawn box goes
through the box policy (`boxmask.runtime.boxes.check_boxes`) like every other path's.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from cvat_sdk.auto_annotation import InteractionResultAttributes
from cvat_sdk.masks import encode_mask

from boxmask.integrations.cvat.masks import detector_mask
from boxmask.integrations.cvat.settings import NUCLIO_MODEL_DIR, CvatSettings
from boxmask.runtime import ModelCard, Predictor
from boxmask.runtime.boxes import check_boxes
from boxmask.runtime.masks import to_polygons

#: The attribute spec id of an interaction shape's confidence.
CONFIDENCE_SPEC_ID = int(InteractionResultAttributes.CONFIDENCE)


class BadRequest(ValueError):
    """A request the function cannot answer; the handler replies 400 with the message."""


def function_predictor(settings: CvatSettings) -> Predictor:
    """The predictor a nuclio function serves: `settings.model_dir`, else the function's own
    `/opt/nuclio/model`."""
    return settings.load_predictor(default_model_dir=NUCLIO_MODEL_DIR)


def function_spec(card: ModelCard) -> list[dict[str, Any]]:
    """The `spec` annotation of a function.yaml: the model's categories as mask labels."""
    return [{"id": c.id, "name": c.name, "type": "mask"} for c in card.categories]


def decode_frame(body: Mapping[str, Any]) -> bytes:
    if not isinstance(body, Mapping):
        raise BadRequest("the request body must be a JSON object")
    image = body.get("image")
    if not isinstance(image, str) or not image:
        raise BadRequest('the request needs "image": the frame as base64')
    try:
        return base64.b64decode(image, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f'"image" is not valid base64: {exc}') from exc


def _threshold(body: Mapping[str, Any], default: float) -> float:
    raw = body.get("threshold")
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise BadRequest(f'"threshold" must be a number, got {raw!r}') from None
    if not 0.0 <= value <= 1.0:
        raise BadRequest(f'"threshold" must be between 0 and 1, got {value}')
    return value


def detect_reply(predictor: Predictor, body: Mapping[str, Any], default_threshold: float = 0.5,
                 max_detections: int = 100) -> list[dict[str, Any]]:
    """A detector function's reply: every detection as a CVAT mask with its polygon."""
    image = decode_frame(body)
    pred = predictor.detect(image=image, score_threshold=_threshold(body, default_threshold),
                            max_detections=max_detections)
    assert pred.quality is not None
    # The mask's review score: the masks to check first (class scores for an answer without).
    confidence = pred.quality if pred.has_quality else pred.scores
    reply = []
    for mask, name, score in zip(pred.iter_masks(), pred.names, confidence.tolist(), strict=True):
        crop = detector_mask(mask)
        if crop is None:  # nothing above the mask threshold: CVAT cannot draw an empty mask
            continue
        polygons = to_polygons(mask)
        points = max(polygons, key=len) if polygons else []
        reply.append({"confidence": f"{score:.4f}", "label": name, "type": "mask",
                      "points": points, "mask": crop})
    return reply


def _box(body: Mapping[str, Any]) -> list[float]:
    try:
        (xtl, ytl), (xbr, ybr) = body["obj_bbox"]
        return [float(xtl), float(ytl), float(xbr), float(ybr)]
    except (KeyError, TypeError, ValueError):
        raise BadRequest('the request needs "obj_bbox": [[xtl, ytl], [xbr, ybr]] (boxmask '
                         "segments boxes; draw a box first)") from None


def interact_reply(predictor: Predictor, body: Mapping[str, Any],
                   reply: Literal["shapes", "mask"] = "shapes") -> dict[str, Any]:
    """An interactor function's reply: the mask of `obj_bbox`, of the predicted class.

    `pos_points` / `neg_points` are not used: the model is prompted by boxes only.
    """
    image = decode_frame(body)
    box = _box(body)
    key = predictor.set_image(image)
    checked = check_boxes([box], card=predictor.card, image_size=predictor.image_size(key),
                          limits=predictor.limits)
    pred = predictor.predict(checked, key=key)
    mask = pred.mask(0)
    if reply == "mask":
        return {"mask": mask.astype(np.uint8).tolist()}
    if not mask.any():
        return {"shapes": []}
    shape: dict[str, Any] = {"type": "mask", "points": encode_mask(mask)}
    if pred.has_quality:
        assert pred.quality is not None
        shape["attributes"] = [{"spec_id": CONFIDENCE_SPEC_ID,
                                "value": f"{float(pred.quality[0]):.4f}"}]
    return {"shapes": [shape]}
