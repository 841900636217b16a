"""Mask heads: the class-agnostic teacher F_t and the class-specific student F_s.

Both are torchvision's Mask R-CNN head shape (``k`` 3x3 convs, a 2x deconvolution, a 1x1 conv)
on the same RoI features; they differ only in the number of output channels (1 vs C) and, for
the teacher options of the paper's Table 3, depth (12 convs) and resolution (56x56, one more
2x deconvolution).

Not in the paper (``model.mask_pixel_channels``, off by default): :class:`PixelStem` computes
a few channels of full-resolution features from the image itself, and a head built with
``pixel_channels`` concatenates their RoI crop (at the head's output resolution) with its
upsampled features and fuses the two with two 3x3 convs before the logits. The FPN's finest
level has stride 4, so an object of 20-40 px spans 5-10 of its cells: a head can place a
boundary only as finely as its shape prior lets it, and a prior learnt from the seen shapes is
what fails on the unseen ones. The pixel crop gives every head the image's own edges at the
mask's resolution.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads

NormLayer = Callable[[int], nn.Module]


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that exports to ONNX for any number of RoIs, zero included.

    torch's ONNX export of group norm reshapes its input to ``[N, G, -1]``; with N = 0 (no box,
    nothing detected) the -1 cannot be inferred and ONNX Runtime fails the Reshape. Under export
    this module spells the shape out, ``[N, G, C / G, H, W]``, and normalises over the last
    three axes; in eager mode it is ``nn.GroupNorm`` (same parameters, same state dict).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.onnx.is_in_onnx_export():
            return super().forward(x)
        n, _, h, w = x.shape
        g = self.num_groups
        y = x.reshape(n, g, self.num_channels // g, h, w)
        mean = y.mean(dim=(2, 3, 4), keepdim=True)
        var = (y - mean).pow(2).mean(dim=(2, 3, 4), keepdim=True)
        y = ((y - mean) / torch.sqrt(var + self.eps)).reshape(n, self.num_channels, h, w)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def head_norm_layer(kind: str) -> NormLayer | None:
    """The norm after each conv of the FPN, box head and mask heads (``model.head_norm``).

    ``none`` is torchvision's v1 (plain convs); ``bn`` its v2; ``gn`` GroupNorm with up to 32
    groups, for batches too small for batch statistics.
    """
    if kind == "none":
        return None
    if kind == "bn":
        return nn.BatchNorm2d
    if kind == "gn":
        # The largest group count <= 32 that divides the width, so narrow test models work too.
        return lambda c: GroupNorm(math.gcd(32, c), c)
    raise ValueError(f"unknown head norm {kind!r} (none, bn, gn)")


class UpsamplingMaskPredictor(nn.Sequential):
    """``num_upsample`` x (2x2 deconv stride 2 + ReLU), then a 1x1 conv to ``out_channels``.

    With ``num_upsample=1`` this is torchvision's ``MaskRCNNPredictor`` layer for layer.

    Args:
        in_channels: channels of the conv tower's output.
        dim_reduced: channels of the deconvolutions.
        out_channels: 1 for the teacher, C for the student.
        num_upsample: 1 gives 2x the RoI size (28 from 14), 2 gives 4x (56).
    """

    def __init__(self, in_channels: int, dim_reduced: int, out_channels: int,
                 num_upsample: int = 1, logits_in_channels: int | None = None) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c = in_channels
        for i in range(num_upsample):
            name = "conv5_mask" if i == 0 else f"conv5_mask_{i}"
            layers[name] = nn.ConvTranspose2d(c, dim_reduced, 2, 2, 0)
            layers[f"relu{i}"] = nn.ReLU(inplace=True)
            c = dim_reduced
        # A head with a pixel fusion between the upsampling and the logits feeds the last
        # layer the fusion's width instead.
        layers["mask_fcn_logits"] = nn.Conv2d(logits_in_channels or c, out_channels, 1, 1, 0)
        super().__init__(layers)
        for name, param in self.named_parameters():
            if "weight" in name:
                nn.init.kaiming_normal_(param, mode="fan_out", nonlinearity="relu")
            elif "bias" in name:
                nn.init.constant_(param, 0)


def _conv_norm_relu(in_channels: int, out_channels: int,
                    norm_layer: NormLayer | None) -> list[nn.Module]:
    """3x3 conv (no bias under a norm), the norm, ReLU."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, padding=1,
                                         bias=norm_layer is None)]
    if norm_layer is not None:
        layers.append(norm_layer(out_channels))
    layers.append(nn.ReLU(inplace=True))
    return layers


class PixelStem(nn.Sequential):
    """The image -> ``channels`` features at full resolution (two 3x3 convs, stride 1).

    Input: the transform's normalised, padded batch ``[B, 3, H, W]``; output ``[B, channels, H,
    W]``, the map the pixel-fused heads crop their RoIs from (receptive field 5 px).
    """

    def __init__(self, channels: int, norm_layer: NormLayer | None = None) -> None:
        super().__init__(*_conv_norm_relu(3, channels, norm_layer),
                         *_conv_norm_relu(channels, channels, norm_layer))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)


# Width of the two fusion convs of a pixel-fused head: they run at the output resolution
# (4x the cells of the tower's), so they are kept narrow.
PIXEL_FUSE_CHANNELS = 32


class MaskHead(nn.Module):
    """Conv tower + predictor: RoI features ``[N, D, S, S]`` -> logits ``[N, K, R, R]``.

    ``R = S * 2**num_upsample``; ``K`` = ``out_channels``. With ``norm_layer`` each conv of the
    tower is followed by it (torchvision's v2 mask head: BatchNorm2d). With ``pixel_channels``
    the head also takes the RoI crop of :class:`PixelStem`'s map, ``[N, pixel_channels, R, R]``,
    and fuses it with the upsampled features before the logits (see the module docstring).
    """

    def __init__(self, in_channels: int, conv_channels: int, num_convs: int, out_channels: int,
                 num_upsample: int = 1, norm_layer: NormLayer | None = None,
                 pixel_channels: int = 0) -> None:
        super().__init__()
        self.tower = MaskRCNNHeads(in_channels, [conv_channels] * num_convs, dilation=1,
                                   norm_layer=norm_layer)
        self.pixel_channels = pixel_channels
        self.fuse: nn.Sequential | None = None
        if pixel_channels:
            self.fuse = nn.Sequential(
                *_conv_norm_relu(conv_channels + pixel_channels, PIXEL_FUSE_CHANNELS, norm_layer),
                *_conv_norm_relu(PIXEL_FUSE_CHANNELS, PIXEL_FUSE_CHANNELS, norm_layer))
        self.predictor = UpsamplingMaskPredictor(
            conv_channels, conv_channels, out_channels, num_upsample,
            logits_in_channels=PIXEL_FUSE_CHANNELS if pixel_channels else None)
        self.out_channels = out_channels
        self.num_upsample = num_upsample

    def forward(self, roi_features: torch.Tensor,
                pixel_crops: torch.Tensor | None = None) -> torch.Tensor:
        if self.fuse is None:
            return self.predictor(self.tower(roi_features))
        if pixel_crops is None:
            raise ValueError("this mask head fuses pixel features: pass their RoI crops")
        x = self.tower(roi_features)
        layers = list(self.predictor.children())
        for layer in layers[:-1]:  # the upsampling
            x = layer(x)
        x = self.fuse(torch.cat([x, pixel_crops], dim=1))
        return layers[-1](x)


def teacher_head(in_channels: int, conv_channels: int, num_convs: int = 4,
                 resolution: int = 28, roi_size: int = 14,
                 norm_layer: NormLayer | None = None, pixel_channels: int = 0) -> MaskHead:
    """The class-agnostic teacher F_t: one output channel at ``resolution`` (28 or 56)."""
    if resolution % roi_size or (resolution // roi_size) not in (2, 4):
        raise ValueError(f"teacher resolution {resolution} must be 2x or 4x the RoI size {roi_size}")
    return MaskHead(in_channels, conv_channels, num_convs, 1,
                    num_upsample=(resolution // roi_size) // 2, norm_layer=norm_layer,
                    pixel_channels=pixel_channels)


def student_head(in_channels: int, conv_channels: int, num_classes: int,
                 norm_layer: NormLayer | None = None, pixel_channels: int = 0) -> MaskHead:
    """The class-specific student F_s: ``num_classes`` channels (no background) at 28x28."""
    return MaskHead(in_channels, conv_channels, 4, num_classes, num_upsample=1,
                    norm_layer=norm_layer, pixel_channels=pixel_channels)
