"""Checkpoint files on disk: epoch naming, checkpoint_last.pt, pruning with keep_checkpoints."""
from __future__ import annotations

from pathlib import Path

import torch

from boxmask.config import TrainConfig
from boxmask.training import checkpoint as checkpoint_module
from boxmask.training.checkpoint import LAST, save_checkpoint, save_last_checkpoint


def _state(epoch: int) -> dict:
    return {"epoch": epoch, "iteration": 10 * epoch, "model": {"w": torch.full((2,), float(epoch))},
            "optimizer": {}, "lr_scheduler": {}}


def test_keep_prunes_old_epoch_files_but_not_last(tmp_path: Path) -> None:
    for epoch in range(1, 6):
        save_checkpoint(_state(epoch), tmp_path, keep=2)
    names = sorted(p.name for p in tmp_path.glob("checkpoint_*.pt"))
    assert names == ["checkpoint_epoch004.pt", "checkpoint_epoch005.pt", LAST]
    last = torch.load(tmp_path / LAST, weights_only=True)
    assert last["epoch"] == 5 and float(last["model"]["w"][0]) == 5.0
    assert not list(tmp_path.glob("*.tmp"))


def test_default_keeps_every_epoch(tmp_path: Path) -> None:
    for epoch in range(1, 4):
        save_checkpoint(_state(epoch), tmp_path)
    assert len(list(tmp_path.glob("checkpoint_epoch*.pt"))) == 3


def test_last_shares_the_epoch_files_bytes_and_later_writes_never_change_it(
        tmp_path: Path) -> None:
    """checkpoint_last.pt is a hard link (one copy on disk), yet every later write (the next
    epoch, a mid-epoch refresh of last, pruning) leaves the other file's content as it was."""
    save_checkpoint(_state(1), tmp_path, keep=1)
    epoch1, last = tmp_path / "checkpoint_epoch001.pt", tmp_path / LAST
    assert epoch1.stat().st_ino == last.stat().st_ino
    save_last_checkpoint(_state(7), tmp_path)  # mid-epoch: only last changes
    assert torch.load(epoch1, weights_only=True)["epoch"] == 1
    assert torch.load(last, weights_only=True)["epoch"] == 7
    save_checkpoint(_state(2), tmp_path, keep=1)  # prunes epoch 1
    assert not epoch1.exists()
    assert torch.load(last, weights_only=True)["epoch"] == 2
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_last_is_a_copy_where_hard_links_fail(tmp_path: Path, monkeypatch) -> None:
    def no_links(src, dst):
        raise OSError("hard links not supported")
    monkeypatch.setattr(checkpoint_module.os, "link", no_links)
    save_checkpoint(_state(3), tmp_path)
    last = tmp_path / LAST
    assert last.stat().st_ino != (tmp_path / "checkpoint_epoch003.pt").stat().st_ino
    assert torch.load(last, weights_only=True)["epoch"] == 3
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_keep_checkpoints_is_a_train_setting() -> None:
    assert TrainConfig.model_validate({"keep_checkpoints": 3}).keep_checkpoints == 3
    assert TrainConfig().keep_checkpoints is None


def test_model_from_checkpoint_refuses_a_foreign_checkpoint() -> None:
    import pytest

    from boxmask.config import ConfigError
    from boxmask.model.checkpoint import model_from_checkpoint

    with pytest.raises(ConfigError, match="not written by `boxmask train`"):
        model_from_checkpoint(_state(1), source="foreign.pt")


class _RunsCode:
    """Unpickling this would call `touch` on a marker file: what a hostile checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (self.marker,))


def test_loading_a_checkpoint_never_runs_code_from_it(tmp_path: Path) -> None:
    import pytest

    from boxmask.config import ConfigError
    from boxmask.model.checkpoint import load_checkpoint

    marker = tmp_path / "pwned"
    hostile = {**_state(1), "payload": _RunsCode(marker)}
    torch.save(hostile, tmp_path / "hostile.pt")
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "hostile.pt")
    assert not marker.exists()


def test_checkpoints_load_restricted_old_numpy_rng_states_included(tmp_path: Path) -> None:
    import random

    import numpy as np

    from boxmask.model.checkpoint import load_checkpoint
    from boxmask.training.checkpoint import capture_rng_state, restore_rng_state

    # Written by this version: tensors and plain values only.
    save_checkpoint({**_state(1), "rng": capture_rng_state()}, tmp_path)
    torch.load(tmp_path / LAST, weights_only=True)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    restore_rng_state(load_checkpoint(tmp_path / LAST)["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
    # Written before: NumPy's legacy state tuple with its array.
    old = {**_state(2), "rng": {"python": random.getstate(), "numpy": np.random.get_state(),
                                "torch": torch.get_rng_state()}}
    torch.save(old, tmp_path / "old.pt")
    restore_rng_state(load_checkpoint(tmp_path / "old.pt")["rng"])


def test_checkpoints_from_before_the_aligned_grid_keep_torchvisions(tmp_path: Path) -> None:
    """A checkpoint whose config predates model.mask_target_aligned trained on torchvision's
    half-pixel target grid: loading says so (the config's own default is the aligned grid), so
    its masks are pasted with the offset that grid needs."""
    from boxmask.model.checkpoint import load_checkpoint

    old = {**_state(1), "config": {"model": {"mode": "oracle"}}}
    torch.save(old, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt")["config"]["model"]["mask_target_aligned"] is False
    new = {**_state(1), "config": {"model": {"mode": "oracle", "mask_target_aligned": True}}}
    torch.save(new, tmp_path / "new.pt")
    assert load_checkpoint(tmp_path / "new.pt")["config"]["model"]["mask_target_aligned"] is True
