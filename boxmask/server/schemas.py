"""Request and response bodies: the OpenAPI schema is generated from these, so they are the API.

Boxes are pixel coordinates of the original image, ``[x1, y1, x2, y2]`` (``box_format="xyxy"``,
the default) or ``[x, y, width, height]`` (``"xywh"``). The schema says what a body holds (four
finite numbers a box, a label per box); what a box must be beyond that (not empty or inverted,
within the limits, clipped to the image or refused with ``clip_boxes: false``) is the box
policy's, `boxmask.runtime.boxes`, the same on every path.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from boxmask.runtime.masks import MaskFormat

# Strict: JSON true/false are not numbers (lax pydantic would read true as 1); ints still pass.
FiniteFloat = Annotated[float, Field(allow_inf_nan=False, strict=True)]
Box = Annotated[list[FiniteFloat], Field(min_length=4, max_length=4,
                                         examples=[[10.0, 20.0, 120.0, 160.0]])]
# A category name, a category id, or null (use the model's predicted class).
Label = Annotated[str, Field(min_length=1, max_length=200)] | StrictInt | None


class _Body(BaseModel):
    # A misspelt field is an error, not a silently ignored option.
    model_config = ConfigDict(extra="forbid")


class SegmentParams(_Body):
    """What to segment; the image travels beside these (base64, upload, or ``image_id``)."""

    boxes: list[Box] = Field(min_length=1, description="Pixel boxes in the original image.")
    box_format: Literal["xyxy", "xywh"] = "xyxy"
    labels: list[Label] | None = Field(
        default=None,
        description="Per box: a category name, a category id, or null for the predicted class. "
                    "Omit to use the predicted class for every box.")
    mask_format: MaskFormat = "rle"
    clip_boxes: bool = Field(default=True, description="Clip boxes that stick out of the image "
                                                       "(else refuse them).")
    model: str | None = Field(default=None, description="Model name; default: the server's.")
    class_scores: bool = Field(
        default=False,
        description="Compute each box's class score even when its label is given. By default "
                    "a box sent with its label gets its mask from the labelled decoder (no box "
                    "head: the fast path) and `score` null; boxes without a label always get "
                    "their predicted class and its score.")
    tight_box: bool = Field(
        default=False,
        description="Also return each mask's tight box (`tight_box`: the xyxy box around its "
                    "pixels), beside the box that was sent, which `box` keeps.")

    @model_validator(mode="after")
    def _labels_match_boxes(self) -> SegmentParams:
        if self.labels is not None and len(self.labels) != len(self.boxes):
            raise ValueError(f"labels has {len(self.labels)} entries for {len(self.boxes)} boxes; "
                             "give one label (or null) per box")
        return self


class ImageRef(_Body):
    """Exactly one of ``image`` (base64 of the encoded file, a data: URL is fine) or
    ``image_id`` (from ``POST /v1/images``)."""

    image: str | None = Field(default=None, description="Base64 of a PNG/JPEG/... file.")
    image_id: str | None = Field(default=None, min_length=1, max_length=128,
                                 description="An id returned by POST /v1/images.")

    @model_validator(mode="after")
    def _one_image(self) -> ImageRef:
        if (self.image is None) == (self.image_id is None):
            raise ValueError("give exactly one of 'image' (base64) or 'image_id'")
        return self


class SegmentRequest(SegmentParams, ImageRef):
    """JSON body of ``POST /v1/segment``."""


class DetectParams(_Body):
    score_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    max_detections: int = Field(default=100, ge=1)
    mask_format: MaskFormat = "rle"
    model: str | None = None


class DetectRequest(DetectParams, ImageRef):
    """JSON body of ``POST /v1/detect``."""


# --- responses ------------------------------------------------------------------------------

class RleMask(BaseModel):
    """COCO RLE (compressed ``counts`` string), column-major, as pycocotools encodes it."""

    format: Literal["rle"] = "rle"
    size: list[int] = Field(description="[height, width]")
    counts: str


class PolygonMask(BaseModel):
    """Outer contours as flat ``[x1, y1, x2, y2, ...]`` lists, COCO's polygon layout."""

    format: Literal["polygons"] = "polygons"
    size: list[int] = Field(description="[height, width]")
    polygons: list[list[float]]


class PngMask(BaseModel):
    """A full-image single-channel PNG (0 background, 255 mask), base64-encoded."""

    format: Literal["png"] = "png"
    size: list[int] = Field(description="[height, width]")
    data: str


Mask = Annotated[RleMask | PolygonMask | PngMask, Field(discriminator="format")]


class Instance(BaseModel):
    box: list[float] = Field(description="The box used, xyxy pixels (after clipping).")
    category_id: int
    label: str = Field(description="Category name.")
    score: float | None = Field(
        description="Class score of the label for this box; null when the label was given and "
                    "not asked to be scored (`class_scores`), and the model skipped its box head.")
    quality: float | None = Field(
        default=None, ge=0.0, le=1.0,
        description="The mask's review score in [0, 1]: low values are the masks to check "
                    "first. The mean of the mask's confidence, how well it separates its "
                    "box's colours and, for a model with the mask-quality head (its card's "
                    "`mask_quality`), the head's predicted IoU (boxmask.runtime.review). A "
                    "ranking score, not a calibrated IoU.")
    tight_box: list[float] | None = Field(
        default=None,
        description="With `tight_box: true`: the box of the mask's pixels, xyxy in image "
                    "pixels (a pixel (x, y) spans [x, x+1) x [y, y+1)), inside `box`; null "
                    "for an empty mask, and when not asked for.")
    box_fallback: bool = Field(
        default=False,
        description="True where the mask is its whole box: for a model served with the guard "
                    "against masks worse than the box (`model.served_box_guard`, in its card's "
                    "provenance), the box itself was the better bet than the mask the model "
                    "drew; without the guard, a mask that fills its box.")
    mask: Mask


class SegmentResponse(BaseModel):
    model: str
    image_id: str
    width: int
    height: int
    instances: list[Instance]


class ImageResponse(BaseModel):
    model: str
    image_id: str = Field(description="Content hash of the image; use it in /v1/segment.")
    width: int
    height: int


class Category(BaseModel):
    id: int
    name: str
    seen: bool | None = None


class ModelInfo(BaseModel):
    name: str
    default: bool
    status: Literal["ready", "failed"]
    error: str | None = None
    backend: str
    categories: list[Category]
    samples: list[str] = Field(default_factory=list,
                               description="URLs of sample images of the model's own domain "
                                           "(the demo page offers them as one-click examples).")
    card: dict[str, Any] = Field(description="The model card (model.json).")
    mask_refine: Literal["none", "crf", "crf_wide"] | None = Field(
        default=None, description="How this server finishes the model's masks: \"crf\" refines "
        "each by a dense CRF on the image (\"crf_wide\": its appearance kernel as wide as the "
        "box), \"none\" serves the decoder's (the card's "
        "`mask_refine` unless BOXMASK_MASK_REFINE says otherwise); null for a model that "
        "failed to load.")


class ModelsResponse(BaseModel):
    default: str | None
    models: list[ModelInfo]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    message: str
    models: dict[str, str] = Field(default_factory=dict, description="name -> ready/failed")


class RollbackRequest(_Body):
    """`POST /labelstudio/rollback`: serve a Label Studio project an earlier model version."""

    project: int | str = Field(description="The Label Studio project id.")
    to: str | None = Field(default=None, description=(
        "A version's name, or \"base\" for the base model; default: the version promoted "
        "before the one served (the base model when there is none)."))
