"""Writing files so that a crash never leaves half of one under its real name; file digests.

One helper for every file boxmask produces (labeling output and report, evaluation report,
checkpoints): write beside the target, flush and fsync, give it the mode a plain ``open`` would
(``mkstemp`` makes 0600 files, which other users and containers, e.g. a Label Studio process,
could not read), rename over the target (atomic within a file system), fsync the folder.
No third-party imports: serving and labeling use it without torch.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in `path` durable (a no-op where directories cannot be
    opened, e.g. on Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask is process-wide, threads race on it)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set, then restore
    os.umask(mask)
    return mask


@contextmanager
def atomic_output(path: str | Path, mode: str = "w", encoding: str | None = "utf-8",
                  hidden: bool = False) -> Iterator[IO[Any]]:
    """``with atomic_output(p) as f: f.write(...)``: `p` holds the old file or the whole new one.

    The temporary file ``[.]NAME.XXXX.tmp`` lies in the target's folder (``hidden`` prefixes a
    dot) and is removed if the block raises. ``mode`` is ``"w"`` or ``"wb"``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=("." if hidden else "") + path.name + ".",
                               suffix=".tmp")
    try:
        with suppress(AttributeError, OSError):  # no fchmod on Windows
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in ``chunk``-byte blocks (model files, checkpoints, weights)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
