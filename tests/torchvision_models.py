"""torchvision's own Mask R-CNNs with seeded random weights, for import and parity tests.

Built with ``weights=None, weights_backbone=None``: nothing is downloaded. Random weights give
every class nearly the same score, so the box classifier is perturbed with a seeded generator
until detections are distinct and above the threshold, and BatchNorm statistics are randomised
so that a mix-up of running mean and variance would show. The ``N/A`` outputs (COCO ids never
used) get a zero weight row and a bias of -30, as they are in effect in the published weights
(never a positive in COCO training): boxmask drops them on import.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

# Small images and few RoIs: the R50 stays the published architecture, the cost stays CPU-sized.
SETTINGS = {"min_size": 128, "max_size": 192, "box_detections_per_img": 20,
            "rpn_post_nms_top_n_test": 100}


def build_torchvision_model(arch: str, seed: int = 0) -> nn.Module:
    """torchvision's ``arch`` in eval mode, random but seeded, with distinct class scores."""
    from torchvision.models import detection

    torch.manual_seed(seed)
    model = getattr(detection, arch)(weights=None, weights_backbone=None, **SETTINGS).eval()
    g = torch.Generator().manual_seed(seed + 1)
    names = detection.MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
    not_used = [i for i, n in enumerate(names) if n == "N/A"]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        cls = model.roi_heads.box_predictor.cls_score
        cls.weight.copy_(torch.randn(cls.weight.shape, generator=g) * 0.01)
        cls.bias.copy_(torch.randn(cls.bias.shape, generator=g) * 0.5)
        cls.weight[not_used] = 0.0
        cls.bias[not_used] = -30.0
    return model


def write_torchvision_weights(arch: str, path: Path, seed: int = 0) -> nn.Module:
    """Save ``build_torchvision_model(arch, seed)``'s state dict to ``path``; return the model."""
    model = build_torchvision_model(arch, seed)
    torch.save(model.state_dict(), path)
    return model


def import_overrides() -> dict[str, object]:
    """The ``model`` settings that make an imported checkpoint infer as :data:`SETTINGS`."""
    return dict(SETTINGS)
