"""The review score: which masks to check first (``quality`` in every answer).

Annotators reviewing pseudo-labels want the likely wrong masks first. Mask Scoring R-CNN's
MaskIoU head (``model.mask_quality``, boxmask/model/mask_quality.py) predicts a mask's IoU from
the RoI features and the mask; trained on the categories that have masks, it ranks the masks of
those well but transfers poorly to the box-only ones (the categories that need review most):
Spearman 0.50 with the true IoU on the demo model's unseen categories, against 0.76 for the
mask's own mean confidence (docs/results.md, "Which masks to check first"). Three class-agnostic
statistics of the mask itself transfer by construction, and each catches bad masks the others
miss:

- **confidence**: the mask's mean probability over its foreground cells, rescaled from
  ``[threshold, 1]`` to ``[0, 1]``: a mask the model is unsure of is more often wrong;
- **colour separation**: how well the mask splits the colours around it, the Fisher ratio
  ``|mean_fg - mean_bg|^2 / (var_fg + var_bg)`` of the image's RGB over the box's R x R cells
  (the decoder's mask grid) and a ring of :data:`CONTEXT` cells of the same size around the
  box, mapped to ``F / (F + 1)`` in [0, 1): a mask whose inside and outside look alike has
  missed the object's edge. The ring is background by the box's definition; without it an
  object that fills its box leaves a few corner cells as the "outside", and the term said
  nothing about such masks (Spearman -0.05 with the true IoU on the transfer benchmark's slab,
  0.63 with the ring: docs/results.md, "Which masks to check first"). Cells outside the image
  are left out. A mask with no background cell at all is neutral (0.5); an empty mask
  scores 0;
- **edge contrast** (:func:`edge_contrast`): whether the mask's outline runs along the image's
  colour edges, the mean colour step across the outline over the mean step between any two
  neighbouring cells of the box and its ring. It orders the good masks, which the other two
  barely do: with the wide CRF most masks are good, and how exactly each outline follows its
  object's edge is what their IoUs differ by (alone, Spearman 0.65 with the true IoU on the
  tuning set's unseen masks refined by the wide kernel, against 0.58-0.62 for the confidence).

The score is a weighted mean of the terms the model has (:data:`WEIGHTS_BY_FINISH`; without a
head, the others renormalised). The weights are a least-squares fit of the true IoU on the
four terms over a held-out tuning set (the clear scenes of generator seed 1, not the validation
split the figures are measured on; benchmarks/review_weights.py refits and prints them), one
set per finish of the served masks (as decoded, refined by the local or by the wide CRF
kernel): the edge term weighs more where the CRF has pulled the outline onto the image's edges
(0.34, 0.52, 0.42 of the weight).

Where the CRF refines what is served (``mask_refine``), the **confidence** reads the decoder's
mask and the **colour separation** the served (refined) one: the refined mask's own confidence
is high for every mask the CRF has pulled onto an edge, right or wrong, and ranks worse; the
decoder's colour separation describes a mask that is not the one served. On the tuning set,
unseen categories, masks refined by the wide kernel, Spearman with the true IoU, the terms
weighted equally: the decoder's terms 0.67 / 0.68, the refined mask's 0.65 / 0.64, the decoder's
confidence with the refined mask's separation 0.69 / 0.69 (two checkpoints; with the fitted
weights of the three terms 0.69 / 0.70, with the edge term 0.71 / 0.72; docs/results.md,
"Which masks to check first"). The edge contrast reads the served mask too.

It is a ranking score in [0, 1] (higher: more likely right), not a calibrated IoU. No torch:
serving and batch labeling run it on the decoder's ``[N, R, R]`` probabilities and the encoded
image's pixels; the benchmark (benchmarks/mask_quality.py) calls the same functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: A mask with no background cell to compare with: neither good nor bad.
NO_BACKGROUND = 0.5
#: The ring of context around each box the colour term reads, in cells of the box's R x R
#: grid on each side (2 of 28: 7 % of the box's side). Chosen among 2, 4 and 7 on the dumps of
#: the demo model, the fine-tune benchmark's three seeds and the transfer benchmark's
#: teacher-student (benchmarks/mask_quality.py --review-context): 2 and 4 did alike, 7 reads
#: other objects.
CONTEXT = 2


@dataclass(frozen=True)
class ReviewWeights:
    """The weight of each term in the review score (module doc); renormalised over the terms
    a mask has. The served sets are :data:`WEIGHTS_BY_FINISH`'s; ``edge`` 0 leaves the edge
    term out (the score of the three terms, before 2026-12-07 night)."""

    confidence: float
    separation: float
    head: float
    edge: float = 0.0


#: The served weights, one set per finish (the model card's ``mask_refine``): each a
#: least-squares fit on the tuning set (module doc; benchmarks/review_weights.py, 2026-12-07:
#: two checkpoints, the unseen categories). The edge term weighs more where the CRF has pulled
#: the served mask onto the image's edges; fitted on the three finishes at once, the weights
#: (0.46 / 0.21 / 0.08 / 0.25) lost 0.01 Spearman with the wide kernel on the tuning set.
WEIGHTS_BY_FINISH: dict[str, ReviewWeights] = {
    "none": ReviewWeights(confidence=0.40, separation=0.18, head=0.08, edge=0.34),
    "crf": ReviewWeights(confidence=0.31, separation=0.12, head=0.04, edge=0.52),
    "crf_wide": ReviewWeights(confidence=0.37, separation=0.15, head=0.06, edge=0.42),
}
#: The weights for masks served as decoded.
WEIGHTS = WEIGHTS_BY_FINISH["none"]


def weights_for(mask_refine: str) -> ReviewWeights:
    """The served weights for masks finished as the card's ``mask_refine`` says (``none``,
    ``crf``, ``crf_wide``)."""
    try:
        return WEIGHTS_BY_FINISH[mask_refine]
    except KeyError:
        raise ValueError(f"no review weights for mask_refine {mask_refine!r}; known: "
                         f"{', '.join(WEIGHTS_BY_FINISH)}") from None


def sample_box_colours(pixels: np.ndarray, boxes: np.ndarray, resolution: int,
                       context: int = CONTEXT) -> np.ndarray:
    """The image's colour at the centre of each cell of each box's ``R x R`` grid and of a
    ring of ``context`` cells around it (nearest pixel): ``[N, G, G, 3]`` float32 with
    ``G = R + 2 * context``, the box's own cells at ``[context:context + R]``; NaN in the cells
    whose centre lies outside the image.

    Args:
        pixels: ``[H, W, 3]`` uint8 RGB (the image the boxes are in).
        boxes: ``[N, 4]`` xyxy in ``pixels``' coordinates.
        resolution: R, the decoder's mask size.
        context: the ring's width in cells (0: the box alone).
    """
    n, size = boxes.shape[0], resolution + 2 * context
    if n == 0:
        return np.zeros((0, size, size, 3), dtype=np.float32)
    h, w = pixels.shape[:2]
    b = boxes.astype(np.float64)
    steps = (np.arange(size, dtype=np.float64) - context + 0.5) / resolution  # [G]
    xs = b[:, 0:1] + steps[None] * (b[:, 2:3] - b[:, 0:1])  # [N, G]
    ys = b[:, 1:2] + steps[None] * (b[:, 3:4] - b[:, 1:2])
    xi = np.clip(np.floor(xs), 0, w - 1).astype(np.int64)
    yi = np.clip(np.floor(ys), 0, h - 1).astype(np.int64)
    out = pixels[yi[:, :, None], xi[:, None, :]].astype(np.float32)
    if context == 0:
        return out
    # A box's own cells always read the image (a box past its edge reads the last row or
    # column, as before); only ring cells can fall outside it.
    own = ((steps >= 0) & (steps < 1))[None]  # [1, G]
    inside_x = ((xs >= 0) & (xs < w)) | own
    inside_y = ((ys >= 0) & (ys < h)) | own
    out[~(inside_y[:, :, None] & inside_x[:, None, :])] = np.nan
    return out


def mask_confidence(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """``[N, R, R]`` probabilities -> ``[N]``: the mean probability over each mask's foreground
    (``prob > threshold``) rescaled from ``[threshold, 1]`` to ``[0, 1]``; 0 for an empty mask."""
    fg = probs > threshold
    count = fg.reshape(len(probs), -1).sum(1)
    total = np.where(fg, probs, 0.0).reshape(len(probs), -1).sum(1)
    mean = np.divide(total, count, out=np.zeros_like(total, dtype=np.float64), where=count > 0)
    span = max(1.0 - threshold, 1e-6)
    return np.where(count > 0, np.clip((mean - threshold) / span, 0.0, 1.0), 0.0)


def _framed(probs: np.ndarray, colours: np.ndarray, threshold: float) -> np.ndarray:
    """``[N, G, G]`` bool: each mask (``probs > threshold``, ``[N, R, R]``) on the grid of its
    colours (``[N, G, G, 3]``: the box's cells and a ring of ``(G - R) / 2`` around them), the
    ring background. Refuses colours that do not frame the masks."""
    n, r = probs.shape[0], probs.shape[-1]
    context = (colours.shape[1] - r) // 2
    if colours.shape[1:3] != (r + 2 * context,) * 2:
        raise ValueError(f"colours of shape {colours.shape} do not frame masks of {r} x {r}")
    inner = np.zeros((n, r + 2 * context, r + 2 * context), dtype=bool)
    inner[:, context:context + r, context:context + r] = probs > threshold
    return inner


def colour_separation(probs: np.ndarray, colours: np.ndarray,
                      threshold: float = 0.5) -> np.ndarray:
    """``[N]``: ``F / (F + 1)`` of each mask's Fisher ratio on its box's colours and their
    ring (module doc).

    Args:
        probs: ``[N, R, R]`` mask probabilities on the boxes' grids.
        colours: ``[N, G, G, 3]`` the image's colours on the same grids and a ring of
            ``(G - R) / 2`` cells around them, NaN outside the image
            (:func:`sample_box_colours`).
    """
    n = probs.shape[0]
    inner = _framed(probs, colours, threshold)
    valid = np.isfinite(colours[..., 0]).reshape(n, -1)
    fg = (inner.reshape(n, -1) & valid).astype(np.float64)  # [N, G*G]
    x = np.where(valid[..., None], colours.reshape(n, -1, 3), 0.0).astype(np.float64)
    n_fg = fg.sum(1)
    n_bg = valid.sum(1) - n_fg
    # Sums over each side, from the sums over the foreground and over every (valid) cell.
    sum_all, sq_all = x.sum(1), np.einsum("npc,npc->n", x, x)
    sum_fg = np.einsum("npc,np->nc", x, fg)
    sq_fg = np.einsum("npc,npc,np->n", x, x, fg)
    sum_bg, sq_bg = sum_all - sum_fg, sq_all - sq_fg
    mean_fg = sum_fg / np.maximum(n_fg, 1)[:, None]
    mean_bg = sum_bg / np.maximum(n_bg, 1)[:, None]
    # Variance summed over the channels: E[|x|^2] - |E[x]|^2 (clipped: rounding).
    var_fg = np.maximum(sq_fg / np.maximum(n_fg, 1) - (mean_fg ** 2).sum(1), 0.0)
    var_bg = np.maximum(sq_bg / np.maximum(n_bg, 1) - (mean_bg ** 2).sum(1), 0.0)
    ratio = ((mean_fg - mean_bg) ** 2).sum(1) / (var_fg + var_bg + 1e-6)
    out = ratio / (ratio + 1.0)
    out = np.where(n_bg == 0, NO_BACKGROUND, out)
    return np.where(n_fg == 0, 0.0, out)


def edge_contrast(probs: np.ndarray, colours: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """``[N]``: how much each mask's outline runs along the image's colour edges, in [0, 1).

    On each box's grid and its ring (``colours`` as :func:`colour_separation` takes them; the
    ring is background), over the pairs of neighbouring cells (left-right and up-down) whose
    colours are both known: ``r`` = the mean colour distance across the mask's outline (pairs
    with one cell in the mask and one out) over the mean colour distance of every pair, mapped
    to ``r / (r + 1)``. An outline on the object's edge crosses the largest colour steps of
    the box (r well above 1); one through the object's inside or the flat background crosses
    ordinary ones (r near or under 1). Scale-free (a dim photo and a bright one alike). An
    empty mask scores 0; a box without any colour step, 0.5 (nothing to tell).
    """
    n = probs.shape[0]
    inner = _framed(probs, colours, threshold)
    # Every neighbouring pair, left-right then up-down, flattened: [N, P]. A pair with a cell
    # outside the image has a NaN step.
    c = colours.astype(np.float32, copy=False)
    across_x, across_y = c[:, :, 1:] - c[:, :, :-1], c[:, 1:] - c[:, :-1]
    step = np.concatenate([np.sqrt(np.einsum("nijc,nijc->nij", across_x, across_x)).reshape(n, -1),
                           np.sqrt(np.einsum("nijc,nijc->nij", across_y, across_y)).reshape(n, -1)],
                          axis=1)
    outline = np.concatenate([(inner[:, :, 1:] != inner[:, :, :-1]).reshape(n, -1),
                              (inner[:, 1:] != inner[:, :-1]).reshape(n, -1)], axis=1)
    known = np.isfinite(step)
    step = np.where(known, step, 0.0)
    outline &= known
    across, across_count = (step * outline).sum(1), outline.sum(1)
    every, every_count = step.sum(1), known.sum(1)
    mean_across = across / np.maximum(across_count, 1)
    mean_every = every / np.maximum(every_count, 1)
    ratio = mean_across / np.maximum(mean_every, 1e-6)
    out = np.where(mean_every > 1e-6, ratio / (ratio + 1.0), NO_BACKGROUND)
    out = np.where(across_count == 0, NO_BACKGROUND, out)  # a mask with no outline pair
    return np.where(inner.reshape(n, -1).any(1), out, 0.0)


#: Masks scored at a time by :func:`review_boxes`: the colours and the statistics' float64
#: temporaries of a few thousand boxes at once would outgrow the labeler's memory budget
#: (tests/labeling/test_image_labeler.py).
CHUNK = 256


def review_boxes(pixels: np.ndarray, boxes: np.ndarray, probs: np.ndarray,
                 head: np.ndarray | None = None, threshold: float = 0.5,
                 served: np.ndarray | None = None,
                 weights: ReviewWeights = WEIGHTS) -> np.ndarray:
    """:func:`review_score` of ``N`` masks on ``pixels`` (``[H, W, 3]`` uint8; ``boxes`` ``[N, 4]``
    xyxy in its coordinates, ``probs`` ``[N, R, R]`` the decoder's, ``served`` the same masks
    as served where they differ: refined by the CRF; ``weights`` those of that finish,
    :func:`weights_for`), their colours and rings sampled
    (:func:`sample_box_colours`) and scored :data:`CHUNK` masks at a time."""
    out = np.empty((probs.shape[0],), dtype=np.float32)
    for start in range(0, probs.shape[0], CHUNK):
        part = slice(start, start + CHUNK)
        colours = sample_box_colours(pixels, boxes[part], probs.shape[-1])
        out[part] = review_score(probs[part], colours, None if head is None else head[part],
                                 threshold, None if served is None else served[part], weights)
    return out


def review_score(probs: np.ndarray, colours: np.ndarray, head: np.ndarray | None = None,
                 threshold: float = 0.5, served: np.ndarray | None = None,
                 weights: ReviewWeights = WEIGHTS) -> np.ndarray:
    """``[N]`` float32 in [0, 1]: the weighted mean (``weights``) of the confidence of the
    decoder's masks ``probs`` (``[N, R, R]``), the colour separation and the edge contrast of
    the masks as served (``served``, ``[N, R, R]``: the CRF's refinement of ``probs``; None:
    ``probs`` themselves) and, where finite, the head's predicted IoU (``head``, ``[N]``; NaN
    or None: the model has no head), renormalised over the terms each mask has. All ``N`` at
    once: :func:`review_boxes` bounds the memory of many."""
    shown = probs if served is None else served
    if shown.shape != probs.shape:
        raise ValueError(f"served masks of shape {shown.shape} for decoded masks of shape "
                         f"{probs.shape}")
    edge = edge_contrast(shown, colours, threshold) if weights.edge else None
    return combine_terms(mask_confidence(probs, threshold),
                         colour_separation(shown, colours, threshold), head,
                         weights, edge).astype(np.float32)


def combine_terms(confidence: np.ndarray, separation: np.ndarray,
                  head: np.ndarray | None = None, weights: ReviewWeights = WEIGHTS,
                  edge: np.ndarray | None = None) -> np.ndarray:
    """``[N]`` float64: the weighted mean of the terms already computed (``[N]`` each; ``head``
    NaN where a mask has none, None where the model has none; ``edge`` None: left out, as a
    weight of 0 does), renormalised over the terms each mask has. :func:`review_score`'s last
    step; the benchmarks weigh stored terms with it."""
    total = weights.confidence * confidence + weights.separation * separation
    count: np.ndarray = np.full(len(confidence), weights.confidence + weights.separation)
    if edge is not None and weights.edge:
        total = total + weights.edge * edge
        count = count + weights.edge
    if head is not None:
        has = np.isfinite(head)
        total = total + weights.head * np.where(has, np.nan_to_num(head.astype(np.float64)), 0.0)
        count = count + weights.head * has
    return total / count
