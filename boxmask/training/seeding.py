"""Seeds for Python, NumPy and torch, in the main process and in data-loader workers."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed every generator training draws from (CUDA included, through ``torch.manual_seed``)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: torch already seeds each worker from the loader's generator; derive
    the Python and NumPy seeds from it so augmentations drawn with either are reproducible."""
    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed of the data loader's generator in ``epoch``: a function of (seed, epoch, rank) only,
    so a resumed run hands its workers the seeds an uninterrupted run would have."""
    return (seed * 1_000_003 + epoch * 1_009 + rank) % 2**63
