"""The box policy of the API: formats, and what happens to boxes that are wrong or stick out.

* ``xywh`` boxes become ``xyxy`` (``x2 = x + w``).
* Non-finite coordinates never get here (the request schema refuses them).
* A box with ``x2 <= x1`` or ``y2 <= y1`` is refused (empty or inverted): guessing which
  corner the client meant would produce a mask nobody asked for. The runtime checks this
  (``BadBoxes``); it also clips boxes to the image and refuses a box with nothing inside.
* With ``clip_boxes=false``, a box partly outside the image is refused here instead.

Every refusal names the box by its index, so a client with 50 boxes knows which one is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from boxmask.server.errors import ApiError


def to_xyxy(boxes: Sequence[Sequence[float]], box_format: Literal["xyxy", "xywh"]) -> np.ndarray:
    """``[N, 4]`` float64 xyxy; xywh widths and heights must be positive."""
    a = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if box_format == "xywh":
        for i, (_, _, w, h) in enumerate(a):
            if w <= 0 or h <= 0:
                raise ApiError(422, "bad_boxes", f"box {i} has width {w} and height {h}; both must "
                               "be positive", {"box_index": i})
        a = np.concatenate([a[:, :2], a[:, :2] + a[:, 2:]], axis=1)
    return a


def refuse_outside(boxes: np.ndarray, width: int, height: int) -> None:
    """With ``clip_boxes=false``: a box that sticks out of the image is an error, not clipped."""
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            raise ApiError(422, "bad_boxes",
                           f"box {i} {np.round(boxes[i], 2).tolist()} sticks out of the "
                           f"{width}x{height} image (send clip_boxes=true to clip it)",
                           {"box_index": i})
