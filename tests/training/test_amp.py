"""The AMP training step, run on CPU.

`train.amp` autocasts on CUDA only (see `boxmask.training.trainer.amp_dtype` for why), and no
GPU is here; so these tests make the trainer pick a CPU autocast dtype and run real iterations:
float16 with the loss scaler (what a CUDA run does), and bfloat16 without one. They catch what
breaks under autocast in our own code: the teacher-student losses and pseudo-masks meeting
half-precision logits, a scaler step left out, fp32 master weights cast down.
"""

from __future__ import annotations

import math

import pytest
import torch

import boxmask.training.trainer as trainer_mod
from boxmask.training.metrics import read_metrics
from boxmask.training.trainer import amp_dtype, train


def test_amp_is_fp16_on_cuda_and_off_on_cpu() -> None:
    assert amp_dtype(True, torch.device("cuda", 0)) is torch.float16
    assert amp_dtype(True, torch.device("cpu")) is None
    assert amp_dtype(False, torch.device("cuda", 0)) is None


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_training_steps_under_cpu_autocast(tiny_cfg, monkeypatch, dtype) -> None:
    monkeypatch.setattr(trainer_mod, "amp_dtype", lambda amp, device: dtype if amp else None)
    seen_dtypes: set[torch.dtype] = set()
    scales: list[float] = []
    real_init = trainer_mod.Trainer.__init__

    def spying_init(self, cfg, model, data, ctx):
        real_init(self, cfg, model, data, ctx)
        # What the heads compute in: the autocast dtype, if the step really runs under it.
        head = self.model.roi_heads.mask_branch.student
        head.register_forward_hook(lambda m, i, o: seen_dtypes.add(o.dtype))
        real_update = self.scaler.update

        def update(*a, **k):
            scales.append(self.scaler.get_scale() if self.scaler.is_enabled() else 1.0)
            return real_update(*a, **k)

        self.scaler.update = update

    monkeypatch.setattr(trainer_mod.Trainer, "__init__", spying_init)
    cfg = tiny_cfg("train.epochs=1", "train.max_iters_per_epoch=2", "train.amp=true")
    ckpt = torch.load(train(cfg), map_location="cpu", weights_only=False)

    assert seen_dtypes == {dtype}
    assert len(scales) == 2
    if dtype is torch.float16:  # the scaler is on, as on CUDA
        assert scales[0] == 65536.0 and ckpt["scaler"]["scale"] > 0
    else:  # bfloat16 has fp32's range: no scaling
        assert scales == [1.0, 1.0]
    assert ckpt["iteration"] == 2
    assert all(t.dtype == torch.float32 for t in ckpt["model"].values() if t.is_floating_point())
    for record in read_metrics(cfg.train.output_dir / "metrics.jsonl"):
        assert math.isfinite(record["loss"]) and record["loss"] > 0
