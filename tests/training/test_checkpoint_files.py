"""Checkpoint files on disk: epoch naming, checkpoint_last.pt, pruning with keep_checkpoints."""
from __future__ import annotations

from pathlib import Path

import torch

from boxmask.config import TrainConfig
from boxmask.training.checkpoint import LAST, save_checkpoint


def _state(epoch: int) -> dict:
    return {"epoch": epoch, "iteration": 10 * epoch, "model": {"w": torch.full((2,), float(epoch))},
            "optimizer": {}, "lr_scheduler": {}}


def test_keep_prunes_old_epoch_files_but_not_last(tmp_path: Path) -> None:
    for epoch in range(1, 6):
        save_checkpoint(_state(epoch), tmp_path, keep=2)
    names = sorted(p.name for p in tmp_path.glob("checkpoint_*.pt"))
    assert names == ["checkpoint_epoch004.pt", "checkpoint_epoch005.pt", LAST]
    last = torch.load(tmp_path / LAST, weights_only=False)
    assert last["epoch"] == 5 and float(last["model"]["w"][0]) == 5.0
    assert not list(tmp_path.glob("*.tmp"))


def test_default_keeps_every_epoch(tmp_path: Path) -> None:
    for epoch in range(1, 4):
        save_checkpoint(_state(epoch), tmp_path)
    assert len(list(tmp_path.glob("checkpoint_epoch*.pt"))) == 3


def test_keep_checkpoints_is_a_train_setting() -> None:
    assert TrainConfig.model_validate({"keep_checkpoints": 3}).keep_checkpoints == 3
    assert TrainConfig().keep_checkpoints is None


def test_model_from_checkpoint_refuses_a_foreign_checkpoint() -> None:
    import pytest

    from boxmask.config import ConfigError
    from boxmask.model.checkpoint import model_from_checkpoint

    with pytest.raises(ConfigError, match="not written by `boxmask train`"):
        model_from_checkpoint(_state(1), source="foreign.pt")
