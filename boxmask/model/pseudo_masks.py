"""Pseudo-masks for unseen categories: the post-processing sigma and the cleaning rules.

The student's target for an unseen instance is ``sigma(M_t)`` (paper Eq. 4), computed without
gradient from the teacher's output on the same RoI, then cleaned (paper, "Partially supervised
training details"): pixels inside any *seen* ground-truth mask of the image become background,
and pixels outside the instance's ground-truth box become background.

All tensors here live in RoI coordinates: ``[P, M, M]`` grids over the P positive proposals.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch.nn import functional as F
from torchvision.ops import roi_align

Sigma = Literal["threshold", "interact", "crf", "box"]


def project_masks_on_rois(masks: torch.Tensor, rois: torch.Tensor, matched_idxs: torch.Tensor,
                          size: int, aligned: bool = True) -> torch.Tensor:
    """Crop and resize image-sized masks onto RoIs (torchvision's ``project_masks_on_boxes``,
    but pixel-aligned by default: cell ``i`` of ``size`` samples the box at ``x1 + (i + 0.5) *
    w / size``, where ``paste_masks_in_image`` puts it back; ``aligned=False`` is
    torchvision's half-pixel-shifted grid, ``model.mask_target_aligned`` in the config).

    Args:
        masks (Tensor[K, H, W]): masks of the image (any dtype; read as 0/1 floats).
        rois (Tensor[P, 4]): xyxy boxes in the same pixel frame.
        matched_idxs (Tensor[P]): which of the K masks each RoI reads.
        size: M, the output resolution.
    Returns:
        Tensor[P, M, M] float in [0, 1] (bilinear, not thresholded).
    """
    if rois.numel() == 0:
        return rois.new_zeros((0, size, size))
    rois = rois.to(masks.device, torch.float32)
    batch = torch.cat([matched_idxs[:, None].to(rois), rois], dim=1)
    return roi_align(masks[:, None].float(), batch, (size, size), 1.0, sampling_ratio=-1,
                     aligned=aligned)[:, 0]


def seen_union_on_rois(masks: torch.Tensor, seen: torch.Tensor, rois: torch.Tensor,
                       size: int, aligned: bool = True) -> torch.Tensor:
    """The union of an image's seen masks, cropped onto each RoI: what the cleaning clears.

    Args:
        masks (Tensor[K, H, W]): the image's instance masks (rows where ``seen`` is False are
            never read).
        seen (Tensor[K]): bool, which instances have a usable (seen) mask.
        rois (Tensor[P, 4]): xyxy proposals.
        size: M, the output resolution.
        aligned: the grid of ``project_masks_on_rois``.
    Returns:
        Tensor[P, M, M] float in [0, 1].
    """
    union = (masks[seen].sum(0, keepdim=True) > 0) if seen.any() else \
        masks.new_zeros((1, *masks.shape[-2:]))
    first = torch.zeros(len(rois), dtype=torch.int64, device=rois.device)
    return project_masks_on_rois(union, rois, first, size, aligned)


def box_interior_on_rois(rois: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Which cells of each RoI's ``size x size`` grid have their centre inside a box.

    Args:
        rois (Tensor[P, 4]): the proposals the grids cover, xyxy.
        boxes (Tensor[P, 4]): the ground-truth box of each proposal's instance, xyxy.
    Returns:
        Tensor[P, M, M] bool.
    """
    steps = (torch.arange(size, device=rois.device, dtype=torch.float32) + 0.5) / size
    x1, y1, x2, y2 = rois.float().unbind(1)
    xs = x1[:, None] + steps[None] * (x2 - x1)[:, None]  # [P, M]
    ys = y1[:, None] + steps[None] * (y2 - y1)[:, None]
    bx1, by1, bx2, by2 = boxes.float().unbind(1)
    inside_x = (xs >= bx1[:, None]) & (xs <= bx2[:, None])
    inside_y = (ys >= by1[:, None]) & (ys <= by2[:, None])
    return inside_y[:, :, None] & inside_x[:, None, :]


def clean_pseudo_masks(pseudo: torch.Tensor, rois: torch.Tensor, instance_boxes: torch.Tensor,
                       seen_on_rois: torch.Tensor) -> torch.Tensor:
    """Apply the paper's two cleaning rules to binary pseudo-masks.

    Args:
        pseudo (Tensor[P, M, M]): sigma(M_t), values in {0, 1}.
        rois (Tensor[P, 4]): the proposals.
        instance_boxes (Tensor[P, 4]): each proposal's matched ground-truth box.
        seen_on_rois (Tensor[P, M, M]): the union of the image's seen GT masks projected on each
            RoI (``project_masks_on_rois``); a cell counts as inside when it is >= 0.5.
    Returns:
        Tensor[P, M, M] float in {0, 1}.
    """
    keep = box_interior_on_rois(rois, instance_boxes, pseudo.shape[-1]) & (seen_on_rois < 0.5)
    return pseudo * keep.to(pseudo.dtype)


# Thresholds tried by fit_to_box, highest first: the paper's 0.5 down to 0.05.
FIT_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 - 0.05 * i, 2) for i in range(10))


def fit_to_box(probs: torch.Tensor, inside: torch.Tensor, cover: float = 0.95) -> torch.Tensor:
    """Binary pseudo-masks that touch their box: per instance, the highest threshold of
    :data:`FIT_THRESHOLDS` whose mask (inside the box) reaches at least ``cover`` of the box's
    rows and of its columns (the lowest threshold when none does). Not in the paper.

    A tight box touches its object on all four sides, so every object's mask covers nearly all of
    its box's rows and columns. A class-agnostic teacher trained where the new categories were
    background (as objects outside COCO's categories are to a COCO model) scores them low but
    still ranks their pixels above the background's: at 0.5 their masks come out thin or empty
    (measured on the fine-tune benchmark, docs/results.md); the box says how far to go down.

    Args:
        probs (Tensor[P, M, M]): the teacher's probabilities.
        inside (Tensor[P, M, M] bool): the cells inside each instance's box
            (:func:`box_interior_on_rois`).
        cover: the share of the box's rows and columns the mask must reach.
    Returns:
        Tensor[P, M, M] float in {0, 1}.
    """
    if probs.shape[0] == 0:
        return probs.new_zeros(probs.shape)
    t = fit_thresholds(probs, inside, cover)
    return ((probs.detach() >= t[:, None, None]) & inside).float()


def fit_thresholds(probs: torch.Tensor, inside: torch.Tensor, cover: float = 0.95) -> torch.Tensor:
    """``Tensor[P]``: the threshold :func:`fit_to_box` picks for each instance (same args).
    Written for export as well (no in-place writes, no boolean reductions): the served fit
    (:func:`box_fit_logit_shift`) runs it inside the decoder graphs."""
    t = torch.tensor(FIT_THRESHOLDS, dtype=probs.dtype, device=probs.device)
    inner = inside.to(probs.dtype)
    masks = (probs.detach()[None] >= t[:, None, None, None]).to(probs.dtype) * inner[None]
    rows_box, cols_box = inner.amax(dim=2), inner.amax(dim=1)  # [P, M]
    rows = ((masks.amax(dim=3) * rows_box[None]).sum(dim=2)
            / rows_box.sum(dim=1).clamp(min=1)[None])  # [T, P]: share of the box's rows reached
    cols = ((masks.amax(dim=2) * cols_box[None]).sum(dim=2)
            / cols_box.sum(dim=1).clamp(min=1)[None])
    ok = ((rows >= cover) & (cols >= cover)).to(probs.dtype)
    # The lowest threshold when none reaches the cover.
    ok = torch.cat([ok[:-1], torch.ones_like(ok[-1:])], dim=0)
    return t[ok.argmax(dim=0)]  # the highest threshold that does (the first maximum)


def box_fit_logit_shift(probs: torch.Tensor, cover: float = 0.9) -> torch.Tensor:
    """``[N]``: the logit of the threshold :func:`fit_thresholds` picks for masks whose box is
    their whole grid (a box-prompted or detected mask's RoI is its box), ``probs`` ``[N, R, R]``.
    Subtracted from a mask's logits, it puts that threshold at 0.5: ``mask = logits' >= 0``."""
    chosen = fit_thresholds(probs, torch.ones_like(probs, dtype=torch.bool), cover)
    return torch.log(chosen / (1.0 - chosen))


def fit_then_crf(probs: torch.Tensor, inside: torch.Tensor, image_crops: torch.Tensor,
                 cover: float = 0.95) -> torch.Tensor:
    """``pseudo_mask_fit: box`` with ``sigma: crf``: each instance's probabilities are moved so
    that its :func:`fit_to_box` threshold falls at 0.5 (its logits shifted by that threshold's
    logit; zero outside the box), then refined by the dense CRF (:func:`dense_crf`) and
    thresholded at 0.5. Not in the paper: the fit says how far a teacher that scores the new
    shapes low must go down, the CRF then follows the image's edges, e.g. a ring's hole, which
    a class-agnostic teacher trained on solid shapes fills.

    Args:
        probs (Tensor[P, M, M]): the teacher's (or round head's) probabilities.
        inside (Tensor[P, M, M] bool): the cells inside each instance's box (less seen masks).
        image_crops (Tensor[P, 3, M, M]): RoI crops of the image, 0..255 RGB.
    Returns:
        Tensor[P, M, M] float in {0, 1}.
    """
    if probs.shape[0] == 0:
        return probs.new_zeros(probs.shape)
    probs = probs.detach().float()
    t = fit_thresholds(probs, inside, cover).float()
    eps = 1e-4
    logits = torch.logit(probs.clamp(eps, 1 - eps)) - torch.logit(t.clamp(eps, 1 - eps))[:, None, None]
    shifted = torch.where(inside, logits.sigmoid(), torch.full_like(probs, eps))
    return apply_sigma("crf", shifted, image_crops=image_crops) * inside.to(probs.dtype)


def dense_crf(probs: np.ndarray, image: np.ndarray, iterations: int = 5) -> np.ndarray:
    """Fully connected CRF (Kraehenbuehl & Koltun 2011) over one RoI.

    Args:
        probs (ndarray[M, M] float): foreground probability.
        image (ndarray[M, M, 3] uint8): the RoI crop of the image, RGB.
    Returns:
        ndarray[M, M] float: refined foreground probability.
    """
    try:
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_softmax
    except ImportError:
        # Without the optional package (source only on PyPI: it needs a compiler), the
        # runtime's numpy CRF: the same model and parameters, exact on the grid where
        # pydensecrf approximates (99.6 % of the cells alike on trained masks).
        from boxmask.runtime.crf import crf_refine

        return crf_refine(probs[None].astype(np.float32), image[None].astype(np.uint8))[0]
    m = probs.shape[0]
    p = np.clip(probs.astype(np.float32), 1e-5, 1 - 1e-5)
    softmax = np.stack([1 - p, p])
    crf = dcrf.DenseCRF2D(m, m, 2)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(softmax)))
    # Kernel widths scaled to the RoI grid: the defaults of DeepLab's CRF are for full images.
    crf.addPairwiseGaussian(sxy=max(1.0, m / 28.0), compat=3)
    crf.addPairwiseBilateral(sxy=max(2.0, 2.0 * m / 28.0), srgb=13,
                             rgbim=np.ascontiguousarray(image.astype(np.uint8)), compat=10)
    q = np.array(crf.inference(iterations), dtype=np.float32).reshape(2, m, m)
    return q[1]


def apply_sigma(kind: Sigma, teacher_probs: torch.Tensor,
                student_probs: torch.Tensor | None = None,
                image_crops: torch.Tensor | None = None) -> torch.Tensor:
    """sigma(M_t) of the paper's Table 5, as a {0, 1} float tensor without gradient.

    Args:
        kind: ``threshold`` (M_t >= 0.5), ``interact`` ((M_t + M_s) / 2 >= 0.5, M_s detached),
            ``crf`` (CRF(M_t) >= 0.5); ``box``, not in the paper, an ablation: every cell is
            foreground whatever the teacher says, so after the cleaning the pseudo-mask is the
            box minus the seen masks in it (what the cleaning alone teaches the student).
        teacher_probs (Tensor[P, M, M]): sigmoid of the teacher's logits at the student's size.
        student_probs (Tensor[P, M, M]): sigmoid of the student's logits on each instance's
            label channel (``interact`` only).
        image_crops (Tensor[P, 3, M, M]): RoI crops of the image, 0..255 RGB (``crf`` only).
    """
    teacher_probs = teacher_probs.detach()
    if kind == "threshold":
        return (teacher_probs >= 0.5).float()
    if kind == "interact":
        if student_probs is None:
            raise ValueError("sigma=interact needs the student's probabilities")
        return ((teacher_probs + student_probs.detach()) / 2 >= 0.5).float()
    if kind == "crf":
        if image_crops is None:
            raise ValueError("sigma=crf needs the RoI image crops")
        out = torch.empty_like(teacher_probs)
        crops = image_crops.detach().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()
        probs = teacher_probs.float().cpu().numpy()
        for i in range(probs.shape[0]):
            out[i] = torch.from_numpy(dense_crf(probs[i], crops[i]) >= 0.5)
        return out.float()
    if kind == "box":
        return torch.ones_like(teacher_probs)
    raise ValueError(f"unknown sigma {kind!r}; choose threshold, interact, crf or box")


def resize_probs(probs: torch.Tensor, size: int) -> torch.Tensor:
    """``[P, R, R]`` -> ``[P, size, size]``: area-average down (a 56x56 teacher feeding a 28x28
    student), bilinear up."""
    if probs.shape[-1] == size:
        return probs
    if probs.shape[0] == 0:
        return probs.new_zeros((0, size, size))
    if probs.shape[-1] > size:
        return F.adaptive_avg_pool2d(probs[:, None], size)[:, 0]
    return F.interpolate(probs[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
