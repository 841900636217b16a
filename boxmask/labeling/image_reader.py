"""Reading and decoding images from disk, in a thread pool ahead of the model.

Pillow's decoders and file reads release the GIL, so a few threads keep the model fed while it
works on the previous image. A missing, unreadable or truncated file, or a name that is not a
regular file (a folder, a FIFO), is an outcome (`ImageSkip`), not an exception or a hang: one
bad file must not stop a dataset.
"""

from __future__ import annotations

import os
import stat
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import TypeVar

import numpy as np

from boxmask.runtime.errors import BadImage
from boxmask.runtime.images import decode_image

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ImageSkip:
    """Why an image could not be used: ``missing``, ``unreadable``, ``not_a_file``, ``timeout``,
    ``truncated``, ``size_mismatch`` or ``outside_images``, and the detail (the decoder's
    message)."""

    reason: str
    detail: str


# Reading one image may take this long; a file on a stalled network mount that still trickles
# in becomes a skipped image instead of a stalled job.
IMAGE_READ_DEADLINE_S = 60.0
_READ_CHUNK = 1 << 20
_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))


def read_file_bytes(path: str, deadline_s: float = IMAGE_READ_DEADLINE_S) -> bytes | ImageSkip:
    """The bytes of the regular file at `path`, or why not.

    The file is opened non-blocking and checked with ``fstat`` before any read: opening a FIFO
    for reading would otherwise wait for a writer forever, and a character device
    (``/dev/zero``) never ends. Checking the open descriptor, not the name, leaves no window
    for the name to be swapped in between.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return ImageSkip("missing", f"no such file: {path}")
    except (OSError, ValueError) as exc:  # ValueError: a NUL or a lone surrogate in the name
        return ImageSkip("unreadable", f"{path!r}: {exc}")
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            return ImageSkip("not_a_file", f"{path} is {kind}, not an image file: only regular "
                                           "files are read")
        deadline = time.monotonic() + deadline_s
        chunks = []
        while chunk := os.read(fd, _READ_CHUNK):
            chunks.append(chunk)
            if time.monotonic() > deadline:
                return ImageSkip("timeout", f"{path}: reading took longer than {deadline_s:g} s")
        return b"".join(chunks)
    except OSError as exc:
        return ImageSkip("unreadable", f"{path}: {exc}")
    finally:
        os.close(fd)


def read_image(path: str, height: int | None = None, width: int | None = None,
               deadline_s: float = IMAGE_READ_DEADLINE_S) -> np.ndarray | ImageSkip:
    """The image at `path` as ``[H, W, 3]`` uint8 RGB, or why it cannot be used.

    height, width: the size the annotations were made on; a decoded image of another size (a
        different file, or EXIF rotation the annotation tool ignored) is refused, since masks
        pasted into it would not line up with the boxes.
    deadline_s: how long reading the file may take (`read_file_bytes`).
    """
    data = read_file_bytes(path, deadline_s)
    if isinstance(data, ImageSkip):
        return data
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


def prefetch(items: Iterable[T], load: Callable[[T], R], workers: int = 2,
             depth: int | None = None) -> Iterator[tuple[T, R]]:
    """Yield ``(item, load(item))`` in the order of `items`, loading up to `depth` items ahead
    in `workers` threads.

    Order is kept (the output is written in input order); memory is bounded by `depth` decoded
    images. Exceptions raised by `load` propagate when their item's turn comes.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    depth = depth or 2 * workers
    it = iter(items)
    window: deque[tuple[T, Future[R]]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="boxmask-read") as pool:
        try:
            for item in it:
                window.append((item, pool.submit(load, item)))
                if len(window) >= depth:
                    break
            while window:
                item, future = window.popleft()
                for nxt in islice(it, 1):  # the next item, if any
                    window.append((nxt, pool.submit(load, nxt)))
                yield item, future.result()
        finally:
            # Stopping early (an error, Ctrl-C): do not decode what nobody will use.
            for _, future in window:
                future.cancel()
