"""The DDP code path (process group, DistributedDataParallel, DistributedSampler) on gloo."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from boxmask.training.distributed import init_distributed, shutdown_distributed
from boxmask.training.metrics import read_metrics
from boxmask.training.seeding import seed_everything
from boxmask.training.trainer import Trainer, build_training_data, build_training_model, train
from tests.processes import free_port

REPO = Path(__file__).resolve().parents[2]



@pytest.fixture
def torchrun_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `torchrun --nproc_per_node 1` puts in the environment."""
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(key, value)
    yield
    if dist.is_initialized():  # a failed test must not leak its group into the next one
        dist.destroy_process_group()


def test_torchrun_environment_starts_a_gloo_group_and_wraps_the_model(tiny_cfg, torchrun_env) -> None:
    cfg = tiny_cfg("train.epochs=1", "train.max_iters_per_epoch=1")
    ctx = init_distributed(prefer_cuda=False)
    try:
        assert ctx.distributed and dist.get_backend() == "gloo"
        assert (ctx.rank, ctx.world_size, ctx.is_main) == (0, 1, True)
        seed_everything(cfg.train.seed)
        data = build_training_data(cfg)
        trainer = Trainer(cfg, build_training_model(cfg, data), data, ctx)
        assert isinstance(trainer.ddp, DistributedDataParallel)
        trainer.fit()
    finally:
        shutdown_distributed(ctx)
    assert not dist.is_initialized()
    assert (Path(cfg.train.output_dir) / "checkpoint_last.pt").is_file()


def test_ddp_with_one_process_trains_like_a_single_process(tiny_cfg, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    common = ["train.epochs=1", "train.max_iters_per_epoch=2"]
    plain = tiny_cfg(*common, f"train.output_dir={tmp_path / 'plain'}")
    train(plain)

    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(key, value)
    ddp = tiny_cfg(*common, f"train.output_dir={tmp_path / 'ddp'}")
    train(ddp)
    assert not dist.is_initialized()  # train() tears down the group it created

    a = read_metrics(tmp_path / "plain" / "metrics.jsonl")
    b = read_metrics(tmp_path / "ddp" / "metrics.jsonl")
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b, strict=True):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5)


@pytest.mark.slow
def test_torchrun_with_two_processes_trains_and_only_rank_zero_writes(tiny_synth: Path,
                                                                          tmp_path: Path) -> None:
    """The real launcher: `torchrun --nproc_per_node 2 -m boxmask.cli train ...` on gloo."""
    import os
    import subprocess
    import sys

    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "-m", "boxmask.cli", "train", str(REPO / "configs" / "synth_tiny_test.yaml"),
           f"data.train_annotations={tiny_synth / 'annotations' / 'instances_train.json'}",
           f"data.train_images={tiny_synth / 'images' / 'train'}",
           f"train.output_dir={out}", "train.epochs=1", "train.batch_size=1",
           "train.max_iters_per_epoch=2"]
    proc = subprocess.run(cmd, check=False, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    records = read_metrics(out / "metrics.jsonl")
    assert [r["iteration"] for r in records] == [1, 2]  # one writer, not one line per rank
    ckpt = torch.load(out / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    assert ckpt["world_size"] == 2 and len(ckpt["rng_per_rank"]) == 2
    # Each rank drew its own random numbers (seed + rank), so their states differ.
    assert not torch.equal(ckpt["rng_per_rank"][0]["torch"], ckpt["rng_per_rank"][1]["torch"])
