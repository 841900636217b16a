"""The DDP code path (process group, DistributedDataParallel, DistributedSampler) on gloo."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from boxmask.training.distributed import init_distributed, shutdown_distributed
from boxmask.training.metrics import read_metrics
from boxmask.training.seeding import seed_everything
from boxmask.training.trainer import Trainer, build_training_data, build_training_model, train


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def torchrun_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `torchrun --nproc_per_node 1` puts in the environment."""
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}.items():
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
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(key, value)
    ddp = tiny_cfg(*common, f"train.output_dir={tmp_path / 'ddp'}")
    train(ddp)
    assert not dist.is_initialized()  # train() tears down the group it created

    a = read_metrics(tmp_path / "plain" / "metrics.jsonl")
    b = read_metrics(tmp_path / "ddp" / "metrics.jsonl")
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5)
