"""How much of an instance's box is covered by other objects.

The paper's overlap measure: ``O_i = max_j |b_i ∩ s_j| / |b_i|`` with ``b_i`` the box of instance
``i`` and ``s_j`` the (visible) mask of another instance ``j`` of the same image. A high ``O_i``
means a neighbour fills much of the box: the case where a class-agnostic mask head tends to
segment the wrong object. ``s_j`` is a mask, as in the paper's Eq. 1 ("we use the intersection
between b_i and s_j because the mask annotations of two overlapping objects may not intersect").
Using the boxes of the other instances instead would count a neighbour's empty box corners as
overlap, so the paper's definition is kept. numpy only, so evaluation and
data generation share it without torch.
"""

from __future__ import annotations

import numpy as np


def _pixel_coverage(lo: float, hi: float, size: int) -> tuple[int, np.ndarray]:
    """Per-pixel length of ``[lo, hi]`` inside each pixel ``[k, k+1)`` of a ``size`` axis.

    Returns the first covered pixel index and the coverage of the pixels from it on, so that
    fractional boxes are measured exactly against the pixel grid.
    """
    start = int(np.clip(np.floor(lo), 0, size))
    stop = int(np.clip(np.ceil(hi), 0, size))
    k = np.arange(start, stop, dtype=np.float64)
    cover = np.clip(np.minimum(k + 1.0, hi) - np.maximum(k, lo), 0.0, 1.0)
    return start, cover


def overlap_scores(boxes_xyxy: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """``O_i = max_{j != i} |b_i ∩ s_j| / |b_i|`` for every instance of one image.

    Args:
        boxes_xyxy: ``[N, 4]`` boxes ``x1, y1, x2, y2`` in pixels (pixel ``k`` spans
            ``[k, k+1)``; fractional coordinates count partial pixels).
        masks: ``[N, H, W]`` bool, the visible mask of each instance.

    Returns:
        ``[N]`` float64 in ``[0, 1]``; 0 for an image with one instance and for empty boxes.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64)
    masks = np.asarray(masks)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes_xyxy must have shape [N, 4], got {boxes.shape}")
    if masks.ndim != 3 or masks.shape[0] != boxes.shape[0]:
        raise ValueError(f"masks must have shape [N, H, W] with N = {boxes.shape[0]}, got {masks.shape}")
    if not np.isfinite(boxes).all():
        raise ValueError("boxes_xyxy holds NaN or infinite coordinates")
    n, h, w = masks.shape
    scores = np.zeros(n, dtype=np.float64)
    if n < 2:
        return scores
    masks = masks.astype(bool, copy=False)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        box_area = (x2 - x1) * (y2 - y1)
        if x2 <= x1 or y2 <= y1 or box_area <= 0:
            continue
        x0, wx = _pixel_coverage(x1, x2, w)
        y0, wy = _pixel_coverage(y1, y2, h)
        if wx.size == 0 or wy.size == 0:
            continue
        crop = masks[:, y0:y0 + wy.size, x0:x0 + wx.size].astype(np.float64)
        # Area of each mask inside the box: sum over pixels of mask * row weight * column weight.
        inside = np.einsum("nyx,y,x->n", crop, wy, wx)
        inside[i] = 0.0
        scores[i] = min(inside.max() / box_area, 1.0)
    return scores
