"""Thin wrappers that give the exported graphs their inputs and outputs (docs/contracts.md §4).

As in Segment Anything's ``utils/onnx.py``: each wrapper only renames and reshapes around the
model's own methods (``backbone``, ``roi_heads.decode_boxes``, ``detect_features``), so the
exported graph and the eager model share one code path.

A model whose mask heads fuse a pixel map (``model.mask_pixel_channels``) has it as the
encoder's last output, ``pixels [1, C, H, W]``, and as the last input of the decoders and the
detector (``contract.PIXEL_MAP``); the other graphs' signatures are unchanged.

Inputs are RGB float32 0..255. The graphs normalise, then zero-pad to a multiple of 32 with
torchvision's own traceable ``_onnx_batch_images``, so an unpadded image and one the runtime
padded with the mean colour give the same features (normalised padding is zero either way).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from boxmask.model.mask_branch import PIXELS
from boxmask.model.rcnn import FPN_LEVELS, BoxMaskRCNN
from boxmask.runtime import contract

# The model's own name for the pixel map is the graphs' tensor name (contract.PIXEL_MAP).
assert PIXELS == contract.PIXEL_MAP


def has_pixel_map(model: BoxMaskRCNN) -> bool:
    """Whether ``model``'s graphs carry the pixel map."""
    return model.roi_heads.mask_branch.pixel_stem is not None


def has_quality(model: BoxMaskRCNN) -> bool:
    """Whether ``model``'s decoders output each mask's predicted IoU (``quality``)."""
    return model.roi_heads.mask_branch.quality is not None


def graph_names(model: BoxMaskRCNN) -> dict[str, tuple[list[str], list[str]]]:
    """Graph -> (input names, output names) of ``model``'s graphs: the contract's, with the
    pixel map where the model has one and the decoders' ``quality`` where it has the
    mask-quality head."""
    p, q = has_pixel_map(model), has_quality(model)
    return {
        contract.ENCODER: ([contract.ENCODER_INPUT], list(contract.feature_names(p))),
        contract.DECODER: (list(contract.with_pixel_map(contract.DECODER_INPUTS, p)),
                           list(contract.decoder_outputs(q))),
        contract.LABELLED_DECODER: (
            list(contract.with_pixel_map(contract.LABELLED_DECODER_INPUTS, p)),
            list(contract.decoder_outputs(q, labelled=True))),
        contract.DETECTOR: (list(contract.with_pixel_map(contract.DETECTOR_INPUTS, p)),
                            list(contract.DETECTOR_OUTPUTS)),
    }


def _features(levels: tuple[torch.Tensor, ...], pixels: torch.Tensor | None
              ) -> OrderedDict[str, torch.Tensor]:
    features = OrderedDict(zip(FPN_LEVELS, levels, strict=True))
    if pixels is not None:
        features[PIXELS] = pixels
    return features


class _Normalize(nn.Module):
    def __init__(self, model: BoxMaskRCNN) -> None:
        super().__init__()
        t = model.transform
        self.register_buffer("mean", torch.tensor(t.image_mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(t.image_std).view(1, 3, 1, 1) * 255.0)
        self.size_divisible = t.size_divisible
        self.transform = t

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``[1, 3, H, W]`` 0..255 -> normalised, zero-padded to multiples of 32."""
        x = (image - self.mean) / self.std
        return self.transform.batch_images([x[0]], self.size_divisible)


class EncoderGraph(nn.Module):
    """``image [1, 3, H, W]`` -> ``p2 [1, F, H/4, W/4]`` ... ``p5 [1, F, H/32, W/32]``, then
    ``pixels [1, C, H, W]`` (padded) for a model with a pixel map."""

    def __init__(self, model: BoxMaskRCNN) -> None:
        super().__init__()
        self.normalize = _Normalize(model)
        self.backbone = model.backbone
        self.pixel_stem = model.roi_heads.mask_branch.pixel_stem

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.normalize(image)
        features = self.backbone(x)
        levels = tuple(features[k] for k in FPN_LEVELS)
        if self.pixel_stem is None:
            return levels
        return (*levels, self.pixel_stem(x))


class DecoderGraph(nn.Module):
    """Features + boxes of one image -> masks and classes of those boxes.

    Inputs: ``p2..p5``, ``boxes [N, 4]`` (resized-image pixels), ``labels [N]`` int64 (0 = use
    the predicted class), ``image_size [2]`` int64 (resized h, w: boxes are clipped to it).
    Outputs: ``mask_logits [N, 1, R, R]``, ``class_scores [N, C + 1]``, ``labels_out [N]``,
    and ``quality [N]`` (each mask's predicted IoU) when the model has the mask-quality head.
    """

    def __init__(self, model: BoxMaskRCNN, traced_image_size: tuple[int, int]) -> None:
        super().__init__()
        self.roi_heads = model.roi_heads
        # The RoI pools' scales are fixed when the model is built (model.build.pyramid_roi_align)
        # and are never inferred from the image size, so the size the trace saw only fills the
        # argument; boxes are clipped to the real size (the image_size input).
        self.traced_image_size = traced_image_size

    def forward(self, p2: torch.Tensor, p3: torch.Tensor, p4: torch.Tensor, p5: torch.Tensor,
                boxes: torch.Tensor, labels: torch.Tensor, image_size: torch.Tensor,
                pixels: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        features = _features((p2, p3, p4, p5), pixels)
        logits, scores, labels_out, quality = self.roi_heads.decode_boxes_with_quality(
            features, _clip(boxes, image_size), labels, self.traced_image_size)
        # A model with the mask-quality head has one more output, `quality` (contract §4).
        return (logits, scores, labels_out) + (() if quality is None else (quality,))


def _clip(boxes: torch.Tensor, image_size: torch.Tensor) -> torch.Tensor:
    """``boxes [N, 4]`` clipped to ``image_size`` (h, w), as the decoder clips them."""
    h = image_size[0].to(boxes.dtype)
    w = image_size[1].to(boxes.dtype)
    x1, y1, x2, y2 = boxes.unbind(1)
    return torch.stack([x1.clamp(min=0).minimum(w), y1.clamp(min=0).minimum(h),
                        x2.clamp(min=0).minimum(w), y2.clamp(min=0).minimum(h)], dim=1)


class LabelledDecoderGraph(nn.Module):
    """The decoder for boxes that come with their class: the mask branch alone.

    When the annotator gives the label, the box head's only product is the class score; at the
    paper's widths its 12544x1024 layer is most of a lone box's cost. This graph runs the same
    ``mask_branch.mask_logits`` as :class:`DecoderGraph` on the same clipped boxes, so its masks
    equal the full decoder's for the same labels.

    Inputs: as :class:`DecoderGraph`, with every ``labels [N]`` in 1..C.
    Outputs: ``mask_logits [N, 1, R, R]`` (and ``quality [N]``, as :class:`DecoderGraph`).
    """

    def __init__(self, model: BoxMaskRCNN, traced_image_size: tuple[int, int]) -> None:
        super().__init__()
        self.mask_branch = model.roi_heads.mask_branch
        self.traced_image_size = traced_image_size

    def forward(self, p2: torch.Tensor, p3: torch.Tensor, p4: torch.Tensor, p5: torch.Tensor,
                boxes: torch.Tensor, labels: torch.Tensor, image_size: torch.Tensor,
                pixels: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, ...]:
        features = _features((p2, p3, p4, p5), pixels)
        logits, quality = self.mask_branch.mask_logits_and_quality(
            features, [_clip(boxes, image_size)], [self.traced_image_size], [labels])
        return logits if quality is None else (logits, quality)


class DetectorGraph(nn.Module):
    """Automatic pre-annotation over the encoder's features (the image is encoded once, for
    both drawn boxes and detection): RPN, box head and mask branch of one image.

    Inputs: ``p2..p5`` (the encoder's outputs), ``image_size [2]`` int64 (resized h, w, before
    padding: proposals and boxes are clipped to it). Outputs in that image's pixels:
    ``boxes [K, 4]``, ``labels [K]`` (contiguous), ``scores [K]``, ``mask_probs [K, 1, R, R]``
    (not pasted).
    """

    def __init__(self, model: BoxMaskRCNN) -> None:
        super().__init__()
        self.model = model

    def forward(self, p2: torch.Tensor, p3: torch.Tensor, p4: torch.Tensor, p5: torch.Tensor,
                image_size: torch.Tensor, pixels: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, ...]:
        features = _features((p2, p3, p4, p5), pixels)
        d = self.model.detect_features(features, (image_size[0], image_size[1]))
        return d["boxes"], d["labels"], d["scores"], d["masks"]
