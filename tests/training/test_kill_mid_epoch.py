"""A real `boxmask train` process killed (SIGKILL) mid-epoch resumes at the very iteration of
its last checkpoint and ends where an uninterrupted run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from boxmask.training.metrics import read_metrics
from boxmask.training.trainer import train

REPO = Path(__file__).resolve().parents[2]


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def test_a_run_killed_mid_epoch_resumes_at_its_checkpointed_iteration(tiny_cfg, tmp_path: Path) -> None:
    # One epoch of 8 batches of one image; flips and RoI sampling draw random numbers, so only
    # the restored random state and the skipped batches make the two runs agree.
    common = ["train.epochs=1", "train.batch_size=1", "train.max_iters_per_epoch=8",
              "train.lr_steps=[1]", "data.horizontal_flip=0.5", "train.checkpoint_every_iters=2",
              "train.log_every=1"]
    straight_cfg = tiny_cfg(*common, f"train.output_dir={tmp_path / 'straight'}")
    straight = _load(train(straight_cfg))
    assert (straight["epoch"], straight["iteration"], straight["epoch_iteration"]) == (1, 8, 0)

    out = tmp_path / "killed"
    killed_cfg = tiny_cfg(*common, f"train.output_dir={out}")
    config = tmp_path / "killed.yaml"
    config.write_text(yaml.safe_dump(killed_cfg.model_dump(mode="json")))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = (tmp_path / "train.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "boxmask.cli", "train", str(config)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    last = out / "checkpoint_last.pt"
    deadline = time.monotonic() + 120
    try:
        while not last.exists():
            assert proc.poll() is None, (tmp_path / "train.log").read_text()
            assert time.monotonic() < deadline, "no mid-epoch checkpoint within 120 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL
    ckpt = _load(last)
    # Killed inside the first epoch: no epoch file, a checkpoint some iterations in.
    assert not list(out.glob("checkpoint_epoch*.pt"))
    assert ckpt["epoch"] == 0 and 0 < ckpt["epoch_iteration"] < 8
    assert ckpt["epoch_iteration"] % 2 == 0 and ckpt["iteration"] == ckpt["epoch_iteration"]
    done = ckpt["iteration"]

    resumed = _load(train(killed_cfg, resume=Path("auto")))
    assert (resumed["epoch"], resumed["iteration"], resumed["epoch_iteration"]) == (1, 8, 0)
    # The resumed process ran exactly the iterations after the checkpoint.
    records = read_metrics(out / "metrics.jsonl")
    after_kill = [r["iteration"] for r in records][-(8 - done):]
    assert after_kill == list(range(done + 1, 9))
    for name, tensor in straight["model"].items():
        torch.testing.assert_close(resumed["model"][name], tensor, rtol=1e-6, atol=1e-6, msg=name)
    assert resumed["lr_scheduler"]["last_epoch"] == straight["lr_scheduler"]["last_epoch"] == 8

