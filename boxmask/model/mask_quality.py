"""The mask-quality head: how good is this mask? (Not in the paper: ``model.mask_quality``.)

Mask Scoring R-CNN (Huang et al., CVPR 2019) adds a MaskIoU head to Mask R-CNN: the RoI
features concatenated with the predicted mask (max-pooled to the features' size), four 3x3
convs (the last with stride 2), three fully connected layers, regressing the IoU of the
binarised mask with the ground truth (L2 loss, positive RoIs only). Annotators reviewing
pseudo-labels need exactly that number: which masks to check first.

Two changes for the partially supervised setting, where the categories that need review most
(the box-only ones) are exactly those without a ground truth to learn the IoU from:

- **Class-agnostic output** (one IoU, not one per category): a per-category output would never
  be trained for a box-only category. What is learned is how a mask that fits its object looks
  beside the object's features, which transfers across categories as the teacher does.
- **A wide spread of training masks**: on seen instances the student's own mask is nearly
  always good late in training, so the head would learn a constant. Each supervised positive
  is scored three times: the student's mask of its category, the teacher's class-agnostic mask,
  and the student's mask of another category (a plausible mask of the wrong shape). All are
  detached: the head learns to judge masks, it does not change them.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from boxmask.model.heads import NormLayer, _conv_norm_relu

QUALITY_MASK_SIZE = 28


class MaskQualityHead(nn.Module):
    """RoI features ``[P, D, S, S]`` and mask probabilities ``[P, 1, 28, 28]`` -> predicted
    IoU ``[P]`` in [0, 1] (sigmoid of a logit).

    The mask is max-pooled to ``S x S`` and concatenated with the features (Mask Scoring R-CNN);
    four 3x3 convs of ``conv_channels`` (the last with stride 2), then ``fc_channels`` twice.
    """

    def __init__(self, in_channels: int, conv_channels: int, roi_size: int,
                 fc_channels: int = 256, norm_layer: NormLayer | None = None) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels + 1
        for _ in range(3):
            layers += _conv_norm_relu(channels, conv_channels, norm_layer)
            channels = conv_channels
        layers += [nn.Conv2d(channels, conv_channels, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)
        reduced = (roi_size + 1) // 2
        self.fcs = nn.Sequential(
            nn.Flatten(), nn.Linear(conv_channels * reduced * reduced, fc_channels),
            nn.ReLU(inplace=True), nn.Linear(fc_channels, fc_channels), nn.ReLU(inplace=True),
            nn.Linear(fc_channels, 1))
        if QUALITY_MASK_SIZE % roi_size:
            raise ValueError(f"the RoI size ({roi_size}) must divide the mask's "
                             f"({QUALITY_MASK_SIZE})")
        # A fixed kernel (not adaptive pooling): it exports to ONNX for any number of RoIs.
        self.pool = QUALITY_MASK_SIZE // roi_size
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.constant_(m.bias, 0)

    def forward(self, roi_features: torch.Tensor, mask_probs: torch.Tensor) -> torch.Tensor:
        mask = F.max_pool2d(mask_probs, self.pool, self.pool)
        x = self.convs(torch.cat([roi_features, mask], dim=1))
        return self.fcs(x)[:, 0].sigmoid()


def mask_iou(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of ``probs >= 0.5`` with ``targets >= 0.5`` per row, ``[P, R, R]`` -> ``[P]``; two
    empty masks agree (IoU 1)."""
    a, b = probs >= 0.5, targets >= 0.5
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1.0), torch.ones_like(union))


def quality_loss(head: MaskQualityHead, roi_features: torch.Tensor,
                 candidates: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """L2 between the head's IoU and the true IoU of each candidate mask.

    Args:
        roi_features (Tensor[P, D, S, S]): the supervised positives' pooled features.
        candidates: masks ``[P, 28, 28]`` (probabilities, detached) to score, each against
            ``targets`` (``[P, 28, 28]`` ground truth on the RoIs).
    """
    if roi_features.shape[0] == 0 or not candidates:
        return sum((p.sum() * 0.0 for p in head.parameters()), roi_features.new_zeros(()))
    masks = torch.cat([c.detach() for c in candidates])[:, None]
    feats = roi_features.repeat(len(candidates), 1, 1, 1)
    truth = torch.cat([mask_iou(c.detach(), targets) for c in candidates])
    return F.mse_loss(head(feats, masks), truth)
