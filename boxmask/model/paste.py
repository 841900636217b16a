"""Pasting R x R mask probabilities into the image, pixel-aligned.

Cell ``i`` of a box's ``R x R`` grid covers ``[x1 + i * w / R, x1 + (i + 1) * w / R)``: its
centre is where ``roi_align(..., aligned=True)`` samples it (``pseudo_masks.project_masks_on_rois``,
the training targets). Pasting inverts that crop: pixel ``x`` (centre ``x + 0.5``) reads the grid
bilinearly at cell coordinate ``u = (x + 0.5 - x1) / w * R - 0.5``, with zeros beyond the grid,
which is ``F.grid_sample(..., align_corners=False, padding_mode="zeros")``: Detectron2's
``paste_masks_in_image``.

Why not torchvision's ``paste_masks_in_image``: it pads the grid by a cell, grows the box by
``(R + 2) / R``, truncates it to integers and resizes onto ``x2 - x1 + 1`` pixels, which moves and
stretches a mask by up to a pixel. On 20-40 px objects that is most of the error budget: the true
masks of the synthetic validation set, cropped aligned onto their boxes at R = 28 and pasted
back, keep 0.933 mean IoU through torchvision's paste and 0.991 through this one (0.902 through
torchvision's paste of torchvision's half-pixel targets; docs/results.md).

A model trained on torchvision's grid (``model.mask_target_aligned: false``: torchvision's own
weights, and every boxmask model trained before the aligned grid) learnt cells centred half a
pixel (of the resized input) down and right of the aligned ones: ``grid_offset`` gives the shift
in original pixels, and pasting at the box moved by it puts those masks back in place (0.909 ->
0.977 for the true masks of the synthetic set at R = 28, benchmarks/paste_ceiling.py).

The interpolation is separable, so a mask is ``W_y @ P @ W_x^T`` with two sparse ``[pixels, R]``
weight matrices; ``boxmask.runtime.masks`` computes the same weights in numpy for the torch-free
runtime (their agreement is tested).
"""

from __future__ import annotations

import torch

from boxmask.runtime.masks import grid_offset

__all__ = ["grid_offset", "paste_masks", "paste_weights"]


def paste_weights(lo: torch.Tensor, hi: torch.Tensor, size: int, pixels: int) -> torch.Tensor:
    """Bilinear weights of pixel centres on each box's grid along one axis.

    Args:
        lo, hi (Tensor[N]): the boxes' start and end on this axis (pixels, continuous).
        size: R, the grid's cells.
        pixels: the image's length on this axis.
    Returns:
        Tensor[N, pixels, R]: row ``p`` holds the weights of pixel ``p``'s two nearest cells
        (zero where a tap falls off the grid, and for degenerate boxes).
    """
    lo, hi = lo.float(), hi.float()
    extent = (hi - lo).clamp(min=1e-6)
    centres = torch.arange(pixels, dtype=torch.float32, device=lo.device) + 0.5
    u = (centres[None, :] - lo[:, None]) / extent[:, None] * size - 0.5  # [N, pixels]
    i0 = torch.floor(u)
    frac = u - i0
    cells = torch.arange(size, dtype=torch.float32, device=lo.device)
    w = ((cells[None, None, :] == i0[..., None]) * (1 - frac)[..., None]
         + (cells[None, None, :] == (i0 + 1)[..., None]) * frac[..., None])
    return w * (hi > lo)[:, None, None]


def paste_masks(probs: torch.Tensor, boxes: torch.Tensor, image_shape: tuple[int, int],
                offset: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """Mask probabilities on their boxes' grids pasted into the image.

    Args:
        probs (Tensor[N, 1, R, R]): probabilities in [0, 1].
        boxes (Tensor[N, 4]): xyxy in the pixels of the image.
        image_shape: (H, W).
        offset: ``(dx, dy)`` added to every box first (``grid_offset``).
    Returns:
        Tensor[N, 1, H, W] float: each mask's probabilities, 0 where its grid does not reach.
    """
    h, w = image_shape
    n, r = probs.shape[0], probs.shape[-1]
    if n == 0:
        return probs.new_zeros((0, 1, h, w))
    dx, dy = offset
    if dx or dy:
        boxes = boxes.float() + boxes.new_tensor([dx, dy, dx, dy], dtype=torch.float32)
    wy = paste_weights(boxes[:, 1], boxes[:, 3], r, h).to(probs.dtype)  # [N, H, R]
    wx = paste_weights(boxes[:, 0], boxes[:, 2], r, w).to(probs.dtype)  # [N, W, R]
    return torch.einsum("nhr,nrs,nws->nhw", wy, probs[:, 0], wx)[:, None]
