"""Backbones with a feature pyramid, built from torchvision without any download.

Every backbone returns the same four pyramid levels ``'0'..'3'`` (strides 4, 8, 16, 32, called
P2..P5 in the exported encoder) plus ``'pool'`` (stride 64, RPN only), so the RoI heads, the
exporter and the runtime never need to know which backbone they sit on.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchvision.models import mobilenet_v3_large, resnet18, resnet50
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool


def _norm_layer(kind: str) -> Callable[..., nn.Module]:
    if kind == "frozen_bn":
        return FrozenBatchNorm2d
    if kind == "bn":
        return nn.BatchNorm2d
    if kind == "gn":
        return lambda c: nn.GroupNorm(min(32, c), c)
    raise ValueError(f"unknown backbone norm {kind!r} (frozen_bn, bn, gn)")


def _load_body_weights(body: nn.Module, path: Path) -> None:
    """Load a local torchvision-format classification state dict into the backbone body.

    Keys of the classifier (``fc.*``, ``classifier.*``) are ignored; any other mismatch is an
    error, because a silently half-loaded backbone trains to a worse model without a word.
    """
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights {path} do not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier."))}
    missing, unexpected = body.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")
               and not k.startswith(("fc.", "classifier."))]
    if missing or unexpected:
        raise ValueError(
            f"backbone weights {path} do not fit: missing {missing[:5]}..., unexpected {unexpected[:5]}...")


def _freeze(body: nn.Module, trainable_prefixes: list[str]) -> None:
    for name, p in body.named_parameters():
        if not any(name.startswith(prefix) for prefix in trainable_prefixes):
            p.requires_grad_(False)


def resnet_fpn(depth: int, fpn_channels: int, trainable_layers: int, norm: str,
               weights: Path | None,
               fpn_norm: Callable[[int], nn.Module] | None = None) -> BackboneWithFPN:
    """ResNet-18/50 + FPN; levels from layer1..layer4. ``fpn_norm`` follows each FPN conv
    (torchvision's v2: BatchNorm2d)."""
    ctor = {18: resnet18, 50: resnet50}[depth]
    body = ctor(weights=None, norm_layer=_norm_layer(norm))
    if weights is not None:
        _load_body_weights(body, weights)
    layers = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        layers.append("bn1")
    _freeze(body, layers)
    stage2 = body.inplanes // 8
    in_channels = [stage2 * 2 ** i for i in range(4)]
    return_layers = {f"layer{k}": str(k - 1) for k in range(1, 5)}
    return BackboneWithFPN(body, return_layers, in_channels, fpn_channels,
                           extra_blocks=LastLevelMaxPool(), norm_layer=fpn_norm)


class _MobileNetStages(nn.Module):
    """MobileNetV3-Large features cut at strides 4, 8, 16 and 32."""

    def __init__(self, features: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        # Indices of the last block at each output stride; found by walking the strides so a
        # change in torchvision's block list cannot silently shift the levels.
        self.taps: list[int] = []
        stride, taps = 1, {}
        for i, block in enumerate(features):
            s = _block_stride(block)
            stride *= s
            taps[stride] = i
        self.taps = [taps[s] for s in (4, 8, 16, 32)]
        self.out_channels_list = [_block_out_channels(features[i]) for i in self.taps]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for i, block in enumerate(self.features):
            x = block(x)
            if i in self.taps:
                out[str(self.taps.index(i))] = x
            if i == self.taps[-1]:
                break
        return out


def _block_stride(block: nn.Module) -> int:
    for m in block.modules():
        if isinstance(m, nn.Conv2d) and m.stride[0] > 1:
            return m.stride[0]
    return 1


def _block_out_channels(block: nn.Module) -> int:
    if hasattr(block, "out_channels"):
        return int(block.out_channels)
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


class _FPNOnBody(nn.Module):
    """A body that already returns an ordered dict of levels, followed by an FPN."""

    def __init__(self, body: nn.Module, in_channels: list[int], out_channels: int,
                 fpn_norm: Callable[[int], nn.Module] | None = None) -> None:
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork

        self.body = body
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=LastLevelMaxPool(),
                                         norm_layer=fpn_norm)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(self.body(x))


def mobilenet_v3_fpn(fpn_channels: int, trainable_layers: int, norm: str,
                     weights: Path | None,
                     fpn_norm: Callable[[int], nn.Module] | None = None) -> nn.Module:
    """MobileNetV3-Large + FPN over strides 4..32 (torchvision's own MobileNet FPN uses only the
    last two stages; four levels keep the RoI heads identical across backbones)."""
    kwargs = {} if norm in ("bn", "frozen_bn") else {"norm_layer": _norm_layer(norm)}
    net = mobilenet_v3_large(weights=None, **kwargs)
    if weights is not None:
        _load_body_weights(net, weights)
    if norm == "frozen_bn":
        net = _to_frozen_bn(net)
    stages = _MobileNetStages(net.features)
    # trainable_layers counts stages from the top, as for ResNet: 5 = all, 4 = all but the
    # stem, 3..1 = from the stride-8/16/32 stage on, 0 = frozen body.
    first = {5: 0, 4: 1, 3: stages.taps[0] + 1, 2: stages.taps[1] + 1, 1: stages.taps[2] + 1,
             0: len(net.features)}[trainable_layers]
    _freeze(stages, [f"features.{i}." for i in range(first, len(net.features))])
    return _FPNOnBody(stages, stages.out_channels_list, fpn_channels, fpn_norm)


def _to_frozen_bn(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            _to_frozen_bn(child)
    return module


def build_backbone(name: str, fpn_channels: int, trainable_layers: int, norm: str,
                   weights: Path | None,
                   fpn_norm: Callable[[int], nn.Module] | None = None) -> nn.Module:
    """A named backbone with FPN; ``norm='auto'`` means frozen BN with pretrained weights and
    trainable BN from random init (frozen random statistics would make BN an identity).
    ``fpn_norm``: the norm after each FPN conv (None: plain convs)."""
    if norm == "auto":
        norm = "frozen_bn" if weights is not None else "bn"
    if name == "resnet50_fpn":
        return resnet_fpn(50, fpn_channels, trainable_layers, norm, weights, fpn_norm)
    if name == "resnet18_fpn":
        return resnet_fpn(18, fpn_channels, trainable_layers, norm, weights, fpn_norm)
    if name == "mobilenet_v3_fpn":
        return mobilenet_v3_fpn(fpn_channels, trainable_layers, norm, weights, fpn_norm)
    raise ValueError(f"unknown backbone {name!r}; choose resnet50_fpn, resnet18_fpn or mobilenet_v3_fpn")
