"""A dense CRF over each mask's grid, in numpy: the masks' edges moved onto the image's.

Krähenbühl & Koltun's fully connected CRF ("Efficient inference in fully connected CRFs with
Gaussian edge potentials", NIPS 2011) with two labels (background, object) over the decoder's
``R x R`` grid of one box: unary ``-log p`` from the mask's probabilities, a smoothness kernel
on the cells' positions and an appearance kernel on positions and the image's colour at each
cell, Potts compatibility, symmetric kernel normalisation and mean-field inference, as
pydensecrf computes them (boxmask.model.pseudo_masks.dense_crf, the paper's third sigma, with
the same parameters). pydensecrf filters with a permutohedral lattice (an approximation, needed
for images of millions of pixels); on 784 cells the kernels are computed exactly within a
window of 4 cells (:data:`LOCAL`). On 300 masks of the transfer benchmark's teacher-student (the
dump of benchmarks/per_mask.py) the two agree on 99.6 % of the cells (mean absolute difference
of the probabilities 0.004; tests/runtime/test_crf.py), at about pydensecrf's cost. No
compiled dependency: the runtime serves it wherever it runs (pydensecrf ships as source only).

Served where the model card says so (``mask_refine: crf`` with those parameters, or
``crf_wide`` with an appearance kernel as wide as the box, :data:`WIDE`; from
``model.served_crf`` and ``model.served_crf_kernel``): :func:`refine_boxes` after the decoder,
in the runtime and in the eager model alike, so that the standard evaluation measures what is
served.

Torch-free: serving and batch labeling import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from boxmask.runtime.review import sample_box_colours


@dataclass(frozen=True)
class CrfKernel:
    """The CRF's parameters, in cells of a 28-cell grid (scaled with the grid).

    ``smooth_sxy`` / ``smooth_weight``: the smoothness kernel's width and weight;
    ``appear_sxy`` / ``appear_srgb`` / ``appear_weight``: the appearance kernel's spatial width,
    colour width (0-255 RGB) and weight; ``near``: every cell within this many (Chebyshev) is a
    neighbour; ``far``: farther offsets along each axis, a sparser lattice whose cells stand
    for the cells between them (each pair's kernel value is weighted by the span of offsets it
    stands for, half the gap to the next offset on either side, per axis: a quadrature of the
    kernel's sum, so a wide kernel costs the lattice's cells, not the window's).
    """

    smooth_sxy: float = 1.0
    smooth_weight: float = 3.0
    appear_sxy: float = 2.0
    appear_srgb: float = 13.0
    appear_weight: float = 10.0
    near: int = 4
    far: tuple[int, ...] = ()
    iterations: int = 5

    def offsets(self, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """``(offsets [M], weights [M])`` along one axis for a grid ``scale`` times 28 cells
        (grids of at most 28 cells use the 28-cell lattice)."""
        near = self.near if scale <= 1 else int(np.ceil(self.near * scale))
        far = [f if scale <= 1 else round(f * scale) for f in self.far]
        half = sorted({*range(near + 1), *(f for f in far if f > near)})
        offs = np.array([-o for o in half[:0:-1]] + half, dtype=np.int64)
        # Each offset stands for half the gap to its neighbours on either side (1 on a
        # contiguous lattice: the exact kernel sum).
        ext = np.concatenate([[2 * offs[0] - offs[1]], offs, [2 * offs[-1] - offs[-2]]])
        return offs, (ext[2:] - ext[:-2]) / 2.0


#: pseudo_masks.dense_crf's parameters (the paper's sigma = crf in training), chosen for the RoI
#: grid there (DeepLab's are for whole images): every neighbour within 4 cells, where the
#: appearance kernel's spatial factor 5 cells away along an axis is exp(-25 / 8) = 4 %. 6 cells
#: (0.1 % past it) agrees with pydensecrf no better (99.6 % of the cells either way, 99.4 % at
#: 3) at twice the cost. Served as ``mask_refine: crf``.
LOCAL = CrfKernel()
#: The appearance kernel 10 cells wide instead of 2 (nearly the whole box at the 28-cell grid:
#: the colours of the box's every part pull on each cell), on a lattice of 11 offsets per axis
#: (every cell within 1, then 3, 6, 10 and 16 away), 121 neighbours a cell against the local
#: kernel's 81. Chosen on a tuning set held out from every figure it is quoted with (the
#: `clear` scenes of generator seed 1; the demo model's box-prompted masks; benchmarks/
#: crf_kernels.py): a wider kernel gained up to 10 cells, then held (14, 20 and a flat 100 the
#: same within 0.2), and the lattice matched the dense 10-cell window within 0.1 at a fifth of
#: its cost. Served as ``mask_refine: crf_wide``.
WIDE = CrfKernel(appear_sxy=10.0, near=1, far=(3, 6, 10, 16))
#: The kernels by the model card's ``mask_refine`` name.
KERNELS: dict[str, CrfKernel] = {"crf": LOCAL, "crf_wide": WIDE}


def mask_refine_name(served_crf: bool, kernel: str) -> str:
    """The model card's ``mask_refine`` for ``model.served_crf`` and ``model.served_crf_kernel``
    ("local" or "wide")."""
    if not served_crf:
        return "none"
    if kernel not in ("local", "wide"):
        raise ValueError(f"the CRF's kernel must be local or wide, got {kernel!r}")
    return "crf" if kernel == "local" else "crf_wide"


#: A mask whose every cell is at least this sure is its box (the guard's fallback,
#: boxmask.runtime.predictor.BOX_FALLBACK_PROB): served as it is, never refined.
BOX_PROB = 0.999
#: Probabilities are clipped away from 0 and 1 before the logarithm, as pydensecrf's callers do.
EPS = 1e-5


@lru_cache(maxsize=8)
def _grid(r: int, kernel: CrfKernel = LOCAL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The constants of an ``r x r`` grid: ``(index [C, K], appear_xy [C, K], smooth [C, K])``,
    ``C = r * r`` cells and ``K`` neighbours on the kernel's lattice (the cell itself included,
    as the kernels count it): each neighbour's cell index (0 where it falls off the grid), the
    appearance kernel's spatial factor times the neighbour's quadrature weight (0 off the
    grid) and the smoothness kernel likewise, already normalised (it depends on positions
    only)."""
    scale = r / 28.0
    offsets, weights = kernel.offsets(scale)
    dy, dx = (a.ravel() for a in np.meshgrid(offsets, offsets, indexing="ij"))
    wy, wx = (a.ravel() for a in np.meshgrid(weights, weights, indexing="ij"))
    ys, xs = np.divmod(np.arange(r * r), r)
    ny, nx = ys[:, None] + dy[None], xs[:, None] + dx[None]
    valid = (ny >= 0) & (ny < r) & (nx >= 0) & (nx < r)
    index = np.where(valid, ny * r + nx, 0)
    d2 = (dy * dy + dx * dx).astype(np.float64)[None]
    span = (wy * wx)[None] * valid
    sxy_smooth = max(1.0, kernel.smooth_sxy * scale)
    sxy_appear = max(2.0, kernel.appear_sxy * scale)
    smooth = np.exp(-d2 / (2 * sxy_smooth ** 2)) * span
    norm = 1.0 / np.sqrt(smooth.sum(1))
    smooth = smooth * norm[:, None] * norm[index]
    appear_xy = np.exp(-d2 / (2 * sxy_appear ** 2)) * span
    return index, appear_xy.astype(np.float32), smooth.astype(np.float32)


#: Masks refined at a time: the kernels of a chunk hold ``C * K`` floats per mask (0.5 MB at
#: the 28-cell grid).
CHUNK = 32


def crf_refine(probs: np.ndarray, colours: np.ndarray, kernel: CrfKernel = LOCAL) -> np.ndarray:
    """Each mask refined by the dense CRF on its box's colours.

    Args:
        probs: ``[N, R, R]`` the masks' probabilities on their grids.
        colours: ``[N, R, R, 3]`` the image's RGB (0-255) at the grids' cells
            (boxmask.runtime.review.sample_box_colours with no ring).
        kernel: the parameters (:data:`LOCAL`, the training sigma's; :data:`WIDE`).
    Returns:
        ``[N, R, R]`` float32: the object's marginal probability at each cell.
    """
    n, r = probs.shape[0], probs.shape[-1]
    if colours.shape != (n, r, r, 3):
        raise ValueError(f"colours of shape {colours.shape} do not fit masks of shape {probs.shape}")
    out = np.empty((n, r, r), dtype=np.float32)
    for start in range(0, n, CHUNK):
        part = slice(start, start + CHUNK)
        out[part] = _refine(probs[part], colours[part], kernel)
    return out


def _refine(probs: np.ndarray, colours: np.ndarray, kernel: CrfKernel) -> np.ndarray:
    n, r = probs.shape[0], probs.shape[-1]
    index, appear_xy, smooth = _grid(r, kernel)
    c = r * r
    # Appearance kernel: the spatial factor times the colour factor exp(-|I_i - I_j|^2 / 2
    # srgb^2), each channel's neighbours gathered with one flat `take` (a gather over [..., 3]
    # was several times slower); then symmetrically normalised, k_ij / sqrt(n_i n_j), n_i =
    # sum_j k_ij.
    k = index.shape[1]
    flat = (np.arange(n)[:, None, None] * c + index[None]).reshape(-1)  # [N * C * K]
    rgb = colours.reshape(n, c, 3).astype(np.float32)
    dist = np.zeros((n, c * k), dtype=np.float32)
    for channel in range(3):
        own = np.ascontiguousarray(rgb[:, :, channel])  # [N, C]
        other = own.reshape(-1).take(flat).reshape(n, c * k)
        other -= np.repeat(own, k, axis=1)
        other *= other
        dist += other
    appear = appear_xy[None] * np.exp(dist.reshape(n, c, k) * np.float32(-0.5 / kernel.appear_srgb ** 2))
    norm = 1.0 / np.sqrt(appear.sum(2))  # [N, C]
    appear *= norm[:, :, None] * norm[:, index]
    # Both kernels' messages in one: weights w_s k_s + w_a k_a per pair.
    weights = kernel.appear_weight * appear + kernel.smooth_weight * smooth[None]
    # Mean field over two labels, as log-odds of the object: the unary's plus the messages,
    # sum_j k_ij (q_j - (1 - q_j)) under Potts compatibility.
    p = np.clip(probs.reshape(n, c).astype(np.float32), EPS, 1.0 - EPS)
    unary = np.log(p) - np.log1p(-p)
    q = p
    for _ in range(kernel.iterations):
        s = 2.0 * q - 1.0
        message = np.einsum("nck,nck->nc", weights, s.reshape(-1).take(flat).reshape(n, c, k))
        q = 1.0 / (1.0 + np.exp(-(unary + message)))
    return q.reshape(n, r, r)


def refine_boxes(pixels: np.ndarray, boxes: np.ndarray, probs: np.ndarray,
                 kernel: CrfKernel = LOCAL) -> np.ndarray:
    """:func:`crf_refine` of ``N`` masks on ``pixels`` (``[H, W, 3]`` uint8, the image the
    model read: resized as the model resizes it), ``boxes`` ``[N, 4]`` xyxy in its coordinates,
    ``probs`` ``[N, R, R]``: each grid's colours read at its cells' centres
    (boxmask.runtime.review.sample_box_colours, no ring). Masks that are their box (every cell
    at :data:`BOX_PROB` or more: the guard's fallback) are returned as they are."""
    out = np.array(probs, dtype=np.float32, copy=True)
    if not len(out):
        return out
    refine = np.flatnonzero(out.reshape(len(out), -1).min(1, initial=1.0) < BOX_PROB)
    if refine.size:
        colours = sample_box_colours(pixels, boxes[refine], out.shape[-1], context=0)
        out[refine] = crf_refine(out[refine], colours, kernel)
    return out
