"""Task images on disk for training rounds, within a byte budget.

A round needs every annotated task's image as a file (`boxmask finetune` reads a folder). They
are fetched once, through the same fence as predictions (`images.fetch_image`), and kept here
for the next rounds: a file per image, named by the hash of where it came from, written
atomically. The folder holds at most `max_bytes`: the least recently used files go first, but
never one the running round needs (`pinned`); when the round's own images alone exceed the
budget, the round fails with `ImageCacheFull` rather than break the budget.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Callable, Collection
from pathlib import Path

from PIL import Image

# PIL's format -> the file's extension (the training loader reads by content; the name helps
# a person looking at the folder).
_EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif",
               "GIF": ".gif"}
# EXIF orientations that swap width and height (the runtime applies the orientation).
_TRANSPOSED = {5, 6, 7, 8}


class ImageCacheFull(RuntimeError):
    """The images one round needs do not fit in the cache's budget."""


class NotAnImage(ValueError):
    """The fetched bytes are not an image PIL can read."""


def cache_key(origin: str, url: str) -> str:
    """The name of an image's file: the hash of the Label Studio it came from and its URL."""
    return hashlib.sha256(f"{origin}\n{url}".encode()).hexdigest()[:32]


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file as the runtime sees it (EXIF orientation applied),
    from its header."""
    with Image.open(path) as im:
        width, height = im.size
        try:
            orientation = im.getexif().get(0x0112)
        except Exception:  # noqa: BLE001 - a broken EXIF block is no orientation
            orientation = None
    return (height, width) if orientation in _TRANSPOSED else (width, height)


class ImageCache:
    """A folder of images with a byte budget; used by one round at a time."""

    def __init__(self, folder: Path, max_bytes: int, max_pixels: int = 40_000_000) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels

    def find(self, key: str) -> Path | None:
        for path in self.folder.glob(f"{key}.*"):
            if path.suffix != ".tmp" and path.is_file():
                return path
        return None

    def get(self, key: str, fetch: Callable[[], bytes], pinned: Collection[str] = ()) -> Path:
        """The file of `key`, fetched with `fetch()` if it is not here yet. `pinned`: keys the
        caller still needs, never evicted to make room. Raises `NotAnImage`, `ImageCacheFull`,
        and whatever `fetch` raises."""
        found = self.find(key)
        if found is not None:
            os.utime(found)  # recently used
            return found
        data = fetch()
        try:
            with Image.open(io.BytesIO(data)) as im:
                fmt, (width, height) = im.format, im.size
        except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for a bad file
            raise NotAnImage(f"not an image ({type(exc).__name__})") from None
        if width * height > self.max_pixels:
            raise NotAnImage(f"{width}x{height} is more than {self.max_pixels} pixels")
        self._make_room(len(data), {*pinned, key})
        path = self.folder / f"{key}{_EXTENSIONS.get(fmt or '', '.img')}"
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    def _files(self) -> list[tuple[float, int, Path]]:
        out = []
        for entry in os.scandir(self.folder):
            if entry.is_file() and not entry.name.endswith(".tmp"):
                info = entry.stat()
                out.append((info.st_mtime, info.st_size, Path(entry.path)))
        return out

    def _make_room(self, incoming: int, pinned: Collection[str]) -> None:
        files = self._files()
        total = sum(size for _, size, _ in files) + incoming
        if total <= self.max_bytes:
            return
        for _mtime, size, path in sorted(files):
            if path.name.split(".", 1)[0] in pinned:
                continue
            path.unlink(missing_ok=True)
            total -= size
            if total <= self.max_bytes:
                return
        raise ImageCacheFull(
            f"this round's images need more than the image cache's budget of "
            f"{self.max_bytes} bytes (BOXMASK_LABELSTUDIO_IMAGE_CACHE_BYTES): raise it")

    def used_bytes(self) -> int:
        return sum(size for _, size, _ in self._files())

    def touch_all(self, keys: Collection[str]) -> None:
        now = time.time()
        for key in keys:
            path = self.find(key)
            if path is not None:
                os.utime(path, (now, now))
