"""The learning-rate schedule of the paper: linear warm-up, then step decay after given epochs.

The scheduler steps once per *iteration* so that warm-up (counted in iterations) and the epoch
milestones (converted to iterations) live in one object whose whole state is a counter: a
checkpoint restores it exactly, and the schedule's shape (milestones, gamma, warm-up) is always
the config's, so a run resumed under a changed schedule (more epochs, a step moved) follows the
new one from the iteration it resumes at.
"""

from __future__ import annotations

from bisect import bisect_right

import torch
from torch.optim.lr_scheduler import LRScheduler

from boxmask.config import TrainConfig


def lr_factor(iteration: int, milestones: list[int], gamma: float, warmup_iters: int,
              warmup_factor: float, restarts: list[int] | None = None) -> float:
    """Multiplier of the base learning rate at ``iteration`` (0-based, the step about to run).

    Warm-up goes linearly from ``warmup_factor`` at iteration 0 to 1 at ``warmup_iters``, as in
    torchvision's detection references; each milestone passed multiplies by ``gamma``. A
    restart passed (``restarts``, iterations; not in the paper) brings the rate back to the
    base: only the milestones after the last restart passed count.
    """
    passed = [r for r in (restarts or []) if r <= iteration]
    since = bisect_right(milestones, max(passed)) if passed else 0
    factor = gamma ** (bisect_right(milestones, iteration) - since)
    if iteration < warmup_iters:
        alpha = iteration / warmup_iters
        factor *= warmup_factor * (1.0 - alpha) + alpha
    return factor


class WarmupMultiStepLR(LRScheduler):
    """Per-iteration linear warm-up followed by multi-step decay.

    Args:
        optimizer: the wrapped optimizer.
        milestones: iterations (not epochs) at which the rate is multiplied by ``gamma``.
        gamma: decay factor per milestone.
        warmup_iters: length of the linear warm-up in iterations (0 disables it).
        warmup_factor: rate multiplier at iteration 0.
        restarts: iterations at which the rate returns to the base (:func:`lr_factor`).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, milestones: list[int], gamma: float = 0.1,
                 warmup_iters: int = 500, warmup_factor: float = 0.001, last_epoch: int = -1,
                 restarts: list[int] | None = None) -> None:
        if list(milestones) != sorted(milestones):
            raise ValueError(f"milestones must be increasing, got {milestones}")
        self.milestones = list(milestones)
        self.restarts = sorted(restarts or [])
        self.gamma = gamma
        self.warmup_iters = warmup_iters
        self.warmup_factor = warmup_factor
        super().__init__(optimizer, last_epoch)

    #: Attributes of the schedule's shape: not saved, not restored (the config's, see the
    #: module's docstring). Before this, torch's state_dict saved them and a resumed run kept
    #: the milestones it started with whatever its config said (a 24-epoch run resumed as 18
    #: epochs never dropped its rate).
    SHAPE = ("milestones", "gamma", "warmup_iters", "warmup_factor", "restarts")

    def state_dict(self) -> dict:
        return {k: v for k, v in super().state_dict().items() if k not in self.SHAPE}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict({k: v for k, v in state_dict.items() if k not in self.SHAPE})
        # The rate of the iteration about to run, by this schedule (the optimizer's restored
        # rate was the old schedule's).
        self._last_lr = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, self._last_lr, strict=True):
            group["lr"] = lr

    def get_lr(self) -> list[float]:
        # Closed form, so the rate depends only on the iteration counter (`last_epoch` in
        # torch's naming) and never drifts through repeated multiplications.
        f = lr_factor(self.last_epoch, self.milestones, self.gamma, self.warmup_iters,
                      self.warmup_factor, self.restarts)
        return [base_lr * f for base_lr in self.base_lrs]

    _get_closed_form_lr = get_lr


def build_lr_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                       iters_per_epoch: int) -> WarmupMultiStepLR:
    """The schedule of ``cfg``: ``lr_steps`` (epochs) become iteration milestones.

    ``lr_steps: [8, 11]`` means the rate drops after the 8th and the 11th finished epoch, i.e. at
    iterations ``8 * iters_per_epoch`` and ``11 * iters_per_epoch``; ``lr_restarts: [18]``
    brings it back to ``lr`` after the 18th.
    """
    if iters_per_epoch < 1:
        raise ValueError("iters_per_epoch must be at least 1 (is the training set empty?)")
    milestones = [step * iters_per_epoch for step in cfg.lr_steps]
    return WarmupMultiStepLR(optimizer, milestones, gamma=cfg.gamma,
                             warmup_iters=cfg.warmup_iters, warmup_factor=cfg.warmup_factor,
                             restarts=[r * iters_per_epoch for r in cfg.lr_restarts])


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer of ``cfg.optimizer`` over the trainable parameters.

    ``sgd``: SGD with momentum and weight decay, the paper's. Weight decay applies to every
    parameter, norm layers included, as in the paper's Detectron schedule (torchvision's
    detection models freeze their batch norms when pretrained).
    ``adamw``: AdamW with ``momentum`` as beta1 and decoupled weight decay on the weights of
    convolutions and linear layers only (biases and norm parameters are not decayed, as usual
    for AdamW).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters")
    if cfg.optimizer == "adamw":
        decay = [p for _, p in named if p.ndim > 1]
        no_decay = [p for _, p in named if p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": cfg.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr,
                                 betas=(cfg.momentum, 0.999))
    return torch.optim.SGD([p for _, p in named], lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)
