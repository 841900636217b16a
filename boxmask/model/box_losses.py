"""Mask losses from a box alone: BoxInst's projection and pairwise terms, on RoI grids.

Not in Zhao et al. (2022): there an unseen instance's mask is learnt only from the teacher's
pseudo-mask. Tian et al., "BoxInst: High-performance instance segmentation with box
annotations" (CVPR 2021) learn masks from boxes with two terms, used here on the unseen
positives' masks, beside the pseudo-mask loss (``model.unseen_box_loss``):

- projection: the mask's maximum along each column must match the box's (the box covers the
  columns x1..x2), and along each row likewise; a Dice loss on both projections. It says how far
  the object reaches, not its shape.
- pairwise: two nearby cells of similar colour (in CIE Lab) probably have the same label. For
  each cell inside the box and each of its 8 neighbours ``dilation`` cells away whose colour
  similarity ``exp(-||lab_i - lab_j|| / 2)`` is at least ``0.3``, the loss is
  ``-log(m_i m_j + (1 - m_i)(1 - m_j))``. BoxInst's constants (kernel 3, dilation 2, theta 2,
  tau 0.3).

BoxInst computes both on the whole image's mask at a quarter of its resolution; here the masks
are RoI grids ``[P, M, M]`` over the positive proposals (the mask heads' own frame), so the box
is the instance's box drawn on each proposal's grid and the colours are the image's RoI crop at
the same grid (``roi_align`` of the RGB image).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

PAIRWISE_KERNEL = 3
PAIRWISE_DILATION = 2
COLOR_THETA = 2.0
COLOR_TAU = 0.3

# sRGB (D65) -> CIE XYZ, and the D65 white point: the matrix of skimage.color.rgb2xyz.
_RGB_TO_XYZ = torch.tensor([[0.412453, 0.357580, 0.180423],
                            [0.212671, 0.715160, 0.072169],
                            [0.019334, 0.119193, 0.950227]])
_WHITE_D65 = torch.tensor([0.95047, 1.0, 1.08883])


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] ``[N, 3, H, W]`` -> CIE Lab ``[N, 3, H, W]`` (L in [0, 100]; a, b about
    [-128, 127]), as ``skimage.color.rgb2lab`` computes it (D65, 2-degree observer)."""
    rgb = rgb.clamp(0.0, 1.0)
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = torch.einsum("ij,njhw->nihw", _RGB_TO_XYZ.to(rgb), linear)
    xyz = xyz / _WHITE_D65.to(rgb).view(1, 3, 1, 1)
    eps = (6.0 / 29.0) ** 3
    f = torch.where(xyz > eps, xyz.clamp(min=eps) ** (1.0 / 3.0), xyz * (841.0 / 108.0) + 4.0 / 29.0)
    fx, fy, fz = f.unbind(1)
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=1)


def neighbours(x: torch.Tensor, kernel: int = PAIRWISE_KERNEL,
               dilation: int = PAIRWISE_DILATION) -> torch.Tensor:
    """Each cell's ``kernel**2 - 1`` neighbours ``dilation`` cells apart, zero-padded.

    Args:
        x (Tensor[N, C, H, W]).
    Returns:
        Tensor[N, C, K, H, W] with ``K = kernel**2 - 1``: ``out[..., k, i, j]`` is the k-th
        neighbour of cell (i, j) (the centre itself left out).
    """
    n, c, h, w = x.shape
    pad = dilation * (kernel - 1) // 2
    cols = F.unfold(x, kernel_size=kernel, padding=pad, dilation=dilation)
    cols = cols.view(n, c, kernel * kernel, h, w)
    centre = kernel * kernel // 2
    return torch.cat([cols[:, :, :centre], cols[:, :, centre + 1:]], dim=2)


def color_similarity(crops: torch.Tensor, dilation: int = PAIRWISE_DILATION) -> torch.Tensor:
    """BoxInst's edge weights on RoI crops.

    Args:
        crops (Tensor[P, 3, M, M]): RGB in 0..255.
        dilation: how many cells apart the neighbours are (as for :func:`pairwise_loss`).
    Returns:
        Tensor[P, K, M, M]: ``exp(-||lab_i - lab_j|| / theta)`` for each cell and neighbour
        (0 towards the zero padding's black only where the cell itself is near black).
    """
    lab = rgb_to_lab(crops / 255.0)
    diff = lab[:, :, None] - neighbours(lab, dilation=dilation)
    return torch.exp(-diff.norm(dim=1) / COLOR_THETA)


def _dice_loss(probs: torch.Tensor, targets: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``1 - 2 |p t| / (|p|^2 + |t|^2)`` per row of ``[P, L]``: ``[P]``."""
    inter = (probs * targets).sum(1)
    union = (probs * probs).sum(1) + (targets * targets).sum(1)
    return 1.0 - 2.0 * inter / (union + eps)


def box_projection_loss(logits: torch.Tensor, box_masks: torch.Tensor) -> torch.Tensor:
    """BoxInst's projection term.

    Args:
        logits (Tensor[P, M, M]): mask logits on the RoI grids.
        box_masks (Tensor[P, M, M]): 1 on the cells inside each instance's box, else 0.
    Returns:
        scalar: the Dice loss of the column-wise maxima plus that of the row-wise maxima,
        averaged over the P masks (a zero that keeps ``logits``' graph when P = 0).
    """
    if logits.numel() == 0:
        return logits.sum() * 0.0
    probs = logits.sigmoid()
    box = box_masks.to(probs.dtype)
    along_x = _dice_loss(probs.amax(dim=1), box.amax(dim=1))
    along_y = _dice_loss(probs.amax(dim=2), box.amax(dim=2))
    return (along_x + along_y).mean()


def pairwise_loss(logits: torch.Tensor, similarity: torch.Tensor,
                  box_masks: torch.Tensor, dilation: int = PAIRWISE_DILATION) -> torch.Tensor:
    """BoxInst's pairwise term.

    Args:
        logits (Tensor[P, M, M]): mask logits.
        similarity (Tensor[P, K, M, M]): ``color_similarity`` of the RoI crops, at the same
            ``dilation``.
        box_masks (Tensor[P, M, M]): the cells inside each instance's box.
        dilation: how many cells apart the neighbours are: BoxInst's 2 on a quarter of the
            image; on a grid a stride-2 transposed conv made, 2 joins only cells of the same
            parity (``model.box_pairwise_dilation``).
    Returns:
        scalar: ``-log P(same label)`` averaged over the edges that start inside the box and
        join cells of similarity >= tau (a zero with ``logits``' graph when there are none).
    """
    if logits.numel() == 0:
        return logits.sum() * 0.0
    x = logits[:, None]
    log_fg, log_bg = F.logsigmoid(x), F.logsigmoid(-x)
    # log(m_i m_j + (1 - m_i)(1 - m_j)) in log space, stable for large logits.
    same_fg = log_fg[:, :, None] + neighbours(log_fg, dilation=dilation)
    same_bg = log_bg[:, :, None] + neighbours(log_bg, dilation=dilation)
    log_same = torch.logaddexp(same_fg, same_bg)[:, 0]  # [P, K, M, M]
    weights = (similarity >= COLOR_TAU).to(logits.dtype) * box_masks[:, None].to(logits.dtype)
    return -(log_same * weights).sum() / weights.sum().clamp(min=1.0)
