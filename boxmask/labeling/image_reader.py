"""Reading and decoding images from disk, in a thread pool ahead of the model.

Pillow's decoders and file reads release the GIL, so a few threads keep the model fed while it
works on the previous image. A missing, unreadable or truncated file is an outcome
(`ImageSkip`), not an exception: one bad file must not stop a dataset.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from boxmask.runtime.errors import BadImage
from boxmask.runtime.images import decode_image

T = TypeVar("T")
_END = object()


@dataclass(frozen=True)
class ImageSkip:
    """Why an image could not be used: ``missing``, ``unreadable``, ``truncated``,
    ``size_mismatch`` or ``outside_images``, and the detail (the decoder's message)."""

    reason: str
    detail: str


def read_image(path: str, height: int | None = None, width: int | None = None) -> np.ndarray | ImageSkip:
    """The image at `path` as ``[H, W, 3]`` uint8 RGB, or why it cannot be used.

    height, width: the size the annotations were made on; a decoded image of another size (a
        different file, or EXIF rotation the annotation tool ignored) is refused, since masks
        pasted into it would not line up with the boxes.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return ImageSkip("missing", f"no such file: {path}")
    except OSError as exc:
        return ImageSkip("unreadable", f"{path}: {exc}")
    try:
        image = decode_image(data)
    except BadImage as exc:
        # decode_image names truncation ("image file is truncated") apart from corruption.
        reason = "truncated" if str(exc).startswith("image file is truncated") else "unreadable"
        return ImageSkip(reason, f"{path}: {exc}")
    h, w = image.shape[:2]
    if (height is not None and height != h) or (width is not None and width != w):
        return ImageSkip("size_mismatch",
                         f"{path}: the file is {w}x{h} but the annotations say {width}x{height}")
    return image


def prefetch(items: Iterable[T], load: Callable[[T], object], workers: int = 2,
             depth: int | None = None) -> Iterator[tuple[T, object]]:
    """Yield ``(item, load(item))`` in the order of `items`, loading up to `depth` items ahead
    in `workers` threads.

    Order is kept (the output is written in input order); memory is bounded by `depth` decoded
    images. Exceptions raised by `load` propagate when their item's turn comes.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    depth = depth or 2 * workers
    it = iter(items)
    window: deque[tuple[T, Future]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="boxmask-read") as pool:
        try:
            for item in it:
                window.append((item, pool.submit(load, item)))
                if len(window) >= depth:
                    break
            while window:
                item, future = window.popleft()
                nxt = next(it, _END)
                if nxt is not _END:
                    window.append((nxt, pool.submit(load, nxt)))
                yield item, future.result()
        finally:
            # Stopping early (an error, Ctrl-C): do not decode what nobody will use.
            for _, future in window:
                future.cancel()
