"""The export's logit bar scales with each box's largest logit, not with the one cell's."""

from __future__ import annotations

import numpy as np

from boxmask.export.parity import LOGIT_RTOL, LOGIT_TOL, _within_tol


def test_rounding_of_a_large_mask_is_allowed_where_its_cells_are_near_zero():
    ref = np.zeros((2, 1, 4, 4), np.float32)
    ref[0, 0, 0, 0] = 1000.0  # a mask whose logits reach 1000
    ref[1, 0, 0, 0] = 10.0
    near = LOGIT_TOL + LOGIT_RTOL * 1000.0 * 0.9
    diff = np.zeros_like(ref)
    diff[0, 0, 3, 3] = near  # a cell near 0 of the large mask: float32 rounding of its terms
    assert _within_tol(diff, ref)
    diff[0, 0, 3, 3] = 2 * (LOGIT_TOL + LOGIT_RTOL * 1000.0)
    assert not _within_tol(diff, ref)
    # Each box has its own scale: the small mask's cells are held to its own.
    diff = np.zeros_like(ref)
    diff[1, 0, 2, 2] = near
    assert not _within_tol(diff, ref)
