"""Warm-up and step decay: the values the paper's schedule prescribes, iteration by iteration."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from boxmask.config import TrainConfig, load_config
from boxmask.training.schedule import build_lr_scheduler, build_optimizer, lr_factor

REPO = Path(__file__).resolve().parents[2]


def _lrs(train_cfg: TrainConfig, iters_per_epoch: int, n: int) -> list[float]:
    """The learning rate each of the first ``n`` iterations runs with."""
    opt = build_optimizer(torch.nn.Linear(2, 2), train_cfg)
    sched = build_lr_scheduler(opt, train_cfg, iters_per_epoch)
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_warmup_rises_linearly_from_warmup_factor_to_the_base_rate() -> None:
    cfg = TrainConfig(lr=0.02, warmup_iters=500, warmup_factor=0.001, lr_steps=[8, 11])
    lrs = _lrs(cfg, iters_per_epoch=1000, n=601)
    assert lrs[0] == pytest.approx(0.02 * 0.001)
    assert lrs[250] == pytest.approx(0.02 * (0.001 * 0.5 + 0.5))
    assert lrs[499] == pytest.approx(0.02 * (0.001 / 500 + 499 / 500))
    assert lrs[500] == pytest.approx(0.02)
    assert lrs[600] == pytest.approx(0.02)
    # Strictly increasing during warm-up: no step function hiding in it.
    assert all(a < b for a, b in itertools.pairwise(lrs[:501]))


def test_rate_drops_by_gamma_after_each_step_epoch() -> None:
    cfg = TrainConfig(lr=0.02, warmup_iters=5, lr_steps=[8, 11], gamma=0.1, epochs=12)
    ipe = 10
    lrs = _lrs(cfg, iters_per_epoch=ipe, n=12 * ipe)
    assert lrs[8 * ipe - 1] == pytest.approx(0.02)  # last iteration of epoch 8
    assert lrs[8 * ipe] == pytest.approx(0.002)  # first of epoch 9
    assert lrs[11 * ipe - 1] == pytest.approx(0.002)
    assert lrs[11 * ipe] == pytest.approx(0.0002)  # epoch 12
    assert lrs[-1] == pytest.approx(0.0002)


def test_warmup_overlapping_a_step_multiplies_both() -> None:
    assert lr_factor(3, milestones=[2], gamma=0.1, warmup_iters=10, warmup_factor=0.5) == \
        pytest.approx(0.1 * (0.5 * 0.7 + 0.3))


def test_scheduler_state_restores_the_same_rates() -> None:
    cfg = TrainConfig(lr=0.1, warmup_iters=4, lr_steps=[1], gamma=0.5)
    opt = build_optimizer(torch.nn.Linear(2, 2), cfg)
    sched = build_lr_scheduler(opt, cfg, iters_per_epoch=3)
    for _ in range(2):
        opt.step()
        sched.step()
    state = sched.state_dict()
    expected = _lrs(cfg, 3, 8)[2:]

    opt2 = build_optimizer(torch.nn.Linear(2, 2), cfg)
    sched2 = build_lr_scheduler(opt2, cfg, iters_per_epoch=3)
    sched2.load_state_dict(state)
    got = []
    for _ in range(6):
        # LambdaLR-style schedulers set the rate on step(); after a load the optimizer's rate is
        # stale until then, so read the scheduler's own value for the step about to run.
        got.append(sched2.get_last_lr()[0])
        opt2.step()
        sched2.step()
    assert got == pytest.approx(expected)


@pytest.mark.parametrize("name, seen", [("coco_voc2nonvoc_r50_1x", "coco-voc"),
                                        ("coco_nonvoc2voc_r50_1x", "coco-nonvoc")])
def test_coco_configs_hold_the_paper_schedule(name: str, seen: str) -> None:
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    t, m = cfg.train, cfg.model
    assert cfg.data.seen == seen
    assert t.batch_size * 8 == 16  # per process, 8 GPUs
    assert (t.lr, t.momentum, t.weight_decay) == (0.02, 0.9, 1e-4)
    assert (t.warmup_iters, t.epochs, t.lr_steps, t.gamma) == (500, 12, [8, 11], 0.1)
    assert m.backbone == "resnet50_fpn" and (m.min_size, m.max_size) == (800, 1333)
    assert (m.rpn_post_nms_top_n_test, m.box_nms_thresh, m.box_detections_per_img) == (512, 0.5, 150)
    assert cfg.data.train_annotations == REPO / "data/coco/annotations/instances_train2017.json"


def test_synthetic_configs_point_at_the_repo_data_folder() -> None:
    cfg = load_config(REPO / "configs" / "synth_r18_cpu.yaml")
    assert cfg.data.train_annotations == REPO / "data/synth/annotations/instances_train.json"
    assert cfg.data.val_images == REPO / "data/synth/images/val"
    assert cfg.model.backbone == "resnet18_fpn" and cfg.model.min_size == cfg.model.max_size == 256


def test_a_resumed_run_follows_its_configs_schedule_not_the_checkpoints() -> None:
    """A run started with one step epoch and resumed with another (a longer or shorter run)
    drops its rate where the new config says, from the very iteration it resumes at; old
    checkpoints, whose state still carries the milestones, load the same way."""
    first = TrainConfig(lr=0.1, warmup_iters=0, lr_steps=[20], gamma=0.1, epochs=24)
    opt = build_optimizer(torch.nn.Linear(2, 2), first)
    sched = build_lr_scheduler(opt, first, iters_per_epoch=2)
    for _ in range(30):  # 15 epochs
        opt.step()
        sched.step()
    state = sched.state_dict()
    assert "milestones" not in state and state["last_epoch"] == 30
    old_state = {**state, "milestones": [40], "gamma": 0.1, "warmup_iters": 0,
                 "warmup_factor": 0.001}
    for saved in (state, old_state):
        shorter = TrainConfig(lr=0.1, warmup_iters=0, lr_steps=[15], gamma=0.1, epochs=18)
        opt2 = build_optimizer(torch.nn.Linear(2, 2), shorter)
        opt2.param_groups[0]["lr"] = 0.1  # what the optimizer's own state would restore
        sched2 = build_lr_scheduler(opt2, shorter, iters_per_epoch=2)
        sched2.load_state_dict(saved)
        assert sched2.milestones == [30]
        # Iteration 30 (the first of epoch 16) runs at the dropped rate already.
        assert opt2.param_groups[0]["lr"] == pytest.approx(0.01)
        assert sched2.get_last_lr() == pytest.approx([0.01])
        opt2.step()
        sched2.step()
        assert opt2.param_groups[0]["lr"] == pytest.approx(0.01)


def test_a_restart_brings_the_rate_back_to_the_base_and_later_steps_count_again() -> None:
    """lr_steps [16, 22] with lr_restarts [18] (the demo model's schedule): the base rate to
    epoch 16, a tenth to 18, the base again to 22, a tenth after; a run resumed at the
    restart (the 4500-iteration demo, resumed under this config) follows it from there."""
    cfg = TrainConfig(lr=0.001, warmup_iters=0, lr_steps=[16, 22], lr_restarts=[18],
                      gamma=0.1, epochs=24)
    ipe = 3
    lrs = _lrs(cfg, iters_per_epoch=ipe, n=24 * ipe)
    assert lrs[16 * ipe - 1] == pytest.approx(0.001)
    assert lrs[16 * ipe] == pytest.approx(0.0001)
    assert lrs[18 * ipe - 1] == pytest.approx(0.0001)
    assert lrs[18 * ipe] == pytest.approx(0.001)  # the restart
    assert lrs[22 * ipe - 1] == pytest.approx(0.001)
    assert lrs[22 * ipe] == pytest.approx(0.0001)
    assert lrs[-1] == pytest.approx(0.0001)
    # Resumed at the restart from a run of the plain schedule (18 epochs, the drop at 16).
    plain = TrainConfig(lr=0.001, warmup_iters=0, lr_steps=[16], gamma=0.1, epochs=18)
    opt = build_optimizer(torch.nn.Linear(2, 2), plain)
    sched = build_lr_scheduler(opt, plain, ipe)
    for _ in range(18 * ipe):
        opt.step()
        sched.step()
    opt2 = build_optimizer(torch.nn.Linear(2, 2), cfg)
    sched2 = build_lr_scheduler(opt2, cfg, ipe)
    sched2.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.001)
    assert lr_factor(5, [2, 8], 0.1, 0, 1.0, restarts=[4]) == pytest.approx(1.0)
    assert lr_factor(9, [2, 8], 0.1, 0, 1.0, restarts=[4]) == pytest.approx(0.1)


def test_restarts_must_be_increasing_epochs_apart_from_the_steps() -> None:
    for bad in ({"lr_restarts": [18, 10]}, {"lr_restarts": [0]},
                {"lr_steps": [16, 18], "lr_restarts": [18]}):
        with pytest.raises(ValueError, match="lr_restarts"):
            TrainConfig(**bad)
