"""Checkpoint -> resume runs the very step an uninterrupted run would have run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from boxmask.config import ConfigError
from boxmask.training.metrics import read_metrics
from boxmask.training.trainer import train


def _losses(out: Path, epoch: int) -> list[dict[str, float]]:
    return [{k: v for k, v in r.items() if k.startswith("loss") or k == "lr"}
            for r in read_metrics(out / "metrics.jsonl") if r["epoch"] == epoch]


def test_resume_after_an_epoch_repeats_the_uninterrupted_run(tiny_cfg, tmp_path: Path) -> None:
    # Flips on and the teacher-student RoI sampling on: both draw random numbers, so only a
    # restored RNG (and data order from (seed, epoch)) makes the two runs agree.
    common = ["train.max_iters_per_epoch=2", "data.horizontal_flip=0.5", "train.lr_steps=[1]"]
    straight = tiny_cfg("train.epochs=2", f"train.output_dir={tmp_path / 'straight'}", *common)
    train(straight)

    first = tiny_cfg("train.epochs=1", f"train.output_dir={tmp_path / 'split'}", *common)
    train(first)
    second = tiny_cfg("train.epochs=2", f"train.output_dir={tmp_path / 'split'}", *common)
    train(second, resume=Path("auto"))

    a, b = tmp_path / "straight", tmp_path / "split"
    got, want = _losses(b, epoch=2), _losses(a, epoch=2)
    assert len(got) == len(want) == 2
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for k in w:
            assert g[k] == pytest.approx(w[k], rel=1e-6, abs=1e-6), k
    assert _losses(b, epoch=1) == _losses(a, epoch=1)

    wa = torch.load(a / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    wb = torch.load(b / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    assert (wa["epoch"], wa["iteration"]) == (wb["epoch"], wb["iteration"]) == (2, 4)
    for name, tensor in wa["model"].items():
        torch.testing.assert_close(wb["model"][name], tensor, rtol=1e-6, atol=1e-6, msg=name)
    assert wa["lr_scheduler"]["last_epoch"] == wb["lr_scheduler"]["last_epoch"] == 4


def test_resume_of_a_finished_run_changes_nothing(tiny_cfg) -> None:
    cfg = tiny_cfg("train.epochs=1", "train.max_iters_per_epoch=1")
    last = train(cfg)
    before = last.stat().st_mtime_ns
    train(cfg, resume=last)
    assert last.stat().st_mtime_ns == before
    assert len(read_metrics(Path(cfg.train.output_dir) / "metrics.jsonl")) == 1


def test_resume_auto_without_a_checkpoint_starts_fresh(tiny_cfg) -> None:
    cfg = tiny_cfg("train.epochs=1", "train.max_iters_per_epoch=1")
    train(cfg, resume=Path("auto"))
    assert (Path(cfg.train.output_dir) / "checkpoint_epoch001.pt").is_file()


def test_resume_from_a_missing_file_is_a_config_error(tiny_cfg, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.pt"):
        train(tiny_cfg(), resume=tmp_path / "nope.pt")


def test_resume_with_another_architecture_says_so(tiny_cfg, tmp_path: Path) -> None:
    last = train(tiny_cfg("train.epochs=1", "train.max_iters_per_epoch=1"))
    wider = tiny_cfg("model.fpn_channels=32", f"train.output_dir={tmp_path / 'wider'}")
    with pytest.raises(ConfigError, match="does not fit the model"):
        train(wider, resume=last)


def test_a_setting_added_since_the_checkpoint_is_its_default_not_a_change() -> None:
    """A checkpoint saved before a model setting existed names no value for it: resuming at
    the setting's default is no change (no warning); another value is one."""
    from boxmask.config import ModelConfig
    from boxmask.training.trainer import changed_model_settings

    current = ModelConfig().model_dump(mode="json")
    saved = {k: v for k, v in current.items() if k != "mask_dice_weight"}
    assert changed_model_settings(saved, current) == []
    assert changed_model_settings(saved, {**current, "mask_dice_weight": 1.0}) == [
        "mask_dice_weight"]
    assert changed_model_settings({**current, "sigma": "crf"}, current) == ["sigma"]
