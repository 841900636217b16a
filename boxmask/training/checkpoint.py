"""Checkpoints (docs/contracts.md §3): written atomically, restoring every piece of state.

A checkpoint holds the model, optimizer, scheduler and AMP scaler states plus the Python, NumPy
and torch random states, so that resuming after epoch E runs the very same next step as a run
that never stopped. Training writes and resumes them here; reading one back into a model
(`load_checkpoint`, `model_from_checkpoint`) is `boxmask.model.checkpoint`, so that evaluation
and export need not import training (docs/architecture.md).
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from boxmask.config import ConfigError
from boxmask.files import atomic_output, fsync_dir

LAST = "checkpoint_last.pt"


def epoch_checkpoint_name(epoch: int) -> str:
    """``checkpoint_epoch003.pt`` for the checkpoint written after 3 finished epochs."""
    return f"checkpoint_epoch{epoch:03d}.pt"


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA, when present) random states.

    Only tensors and plain Python values, so that a checkpoint loads with
    ``torch.load(weights_only=True)``: NumPy's key array travels as an int64 tensor.
    """
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"] = {"key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                            "pos": int(numpy_state["state"]["pos"])}
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": numpy_state,
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    random.setstate(_python_state(state["python"]))
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        key = numpy_state["state"]["key"]
        key = key.numpy() if isinstance(key, torch.Tensor) else np.asarray(key)
        numpy_state = {**numpy_state, "state": {"key": key.astype(np.uint32),
                                                "pos": int(numpy_state["state"]["pos"])}}
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # A checkpoint from a machine with a different GPU count restores what matches.
        cuda_states = state["cuda"][: torch.cuda.device_count()]
        for i, s in enumerate(cuda_states):
            torch.cuda.set_rng_state(s, i)


def _python_state(state: Any) -> tuple:
    """`random.setstate` needs tuples; a checkpoint may give lists back."""
    version, internal, gauss = state
    return int(version), tuple(int(v) for v in internal), gauss


def _atomic_torch_save(obj: Any, path: Path) -> None:
    # A crash mid-write never leaves a truncated checkpoint under the real name.
    with atomic_output(path, "wb") as f:
        torch.save(obj, f)


def _atomic_link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` the same bytes as ``src``, atomically: a hard link where the file system has
    them (no second copy on disk: a run's checkpoints take half the space), else a copy.

    Both files are only ever replaced (written to a temporary name, then renamed) and never
    written in place, so sharing one inode cannot let a later write to one change the other.
    """
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # no hard links here (some network and FAT file systems): copy instead
        with atomic_output(dst, "wb") as f, open(src, "rb") as s:
            shutil.copyfileobj(s, f, 1 << 20)
        return
    try:
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(dst.parent)


def save_checkpoint(state: dict[str, Any], output_dir: Path, keep: int | None = None) -> Path:
    """Write ``checkpoint_epoch{E:03d}.pt`` and make ``checkpoint_last.pt`` the same file (a hard
    link where the file system allows one, else a copy).

    ``state["epoch"]`` is the number of finished epochs. With ``keep``, only the ``keep``
    newest epoch files stay; older ones are deleted after the new one and ``checkpoint_last.pt``
    are safely on disk. Returns the epoch file's path.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / epoch_checkpoint_name(int(state["epoch"]))
    _atomic_torch_save(state, path)
    _atomic_link_or_copy(path, output_dir / LAST)
    if keep is not None:
        epoch_files = sorted(output_dir.glob("checkpoint_epoch[0-9][0-9][0-9].pt"))
        for old in epoch_files[:-keep]:
            old.unlink(missing_ok=True)
    return path


def save_last_checkpoint(state: dict[str, Any], output_dir: Path) -> Path:
    """Refresh only ``checkpoint_last.pt``: the mid-epoch checkpoint of
    ``train.checkpoint_every_iters`` (``state["epoch_iteration"]`` iterations into the epoch
    after ``state["epoch"]`` finished ones). Epoch files are written at epoch ends alone."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / LAST
    _atomic_torch_save(state, path)
    return path


def resolve_resume(resume: Path | None, output_dir: Path) -> Path | None:
    """``None`` -> no resume; ``Path('auto')`` -> ``OUTPUT_DIR/checkpoint_last.pt`` if present.

    An explicit path that does not exist is an error, not a silent fresh start.
    """
    if resume is None:
        return None
    if str(resume) == "auto":
        last = Path(output_dir) / LAST
        return last if last.is_file() else None
    if not Path(resume).is_file():
        raise ConfigError(f"--resume {str(resume)!r} does not exist")
    return Path(resume)
