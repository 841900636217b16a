"""Training loop: SGD with warm-up and step decay, AMP (fp16) on CUDA, DDP under `torchrun`.

``train(cfg, resume)`` is what `boxmask train` runs. It builds the COCO dataset of ``cfg.data``
(seen/unseen split included), the model of ``cfg.model`` and a :class:`Trainer`, which owns the
loop, the checkpoints (docs/contracts.md §3) and ``metrics.jsonl``.

Single process: ``boxmask train configs/synth_r18_cpu.yaml``. Several GPUs:
``torchrun --nproc_per_node 8 -m boxmask.cli train configs/coco_voc2nonvoc_r50_1x.yaml``;
``train.batch_size`` is per process, so the total batch is ``batch_size x world size``.

Evaluation is left to `boxmask eval CHECKPOINT`: it runs on one process, and keeping it out of
the loop keeps a training run's cost and failure modes its own.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from rich.console import Console
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from boxmask.config import BoxMaskConfig, ConfigError, ModelConfig, check_data_paths
from boxmask.model.checkpoint import checkpoint_categories, load_checkpoint
from boxmask.training.checkpoint import (
    LAST,
    capture_rng_state,
    resolve_resume,
    restore_rng_state,
    save_checkpoint,
    save_last_checkpoint,
)
from boxmask.training.distributed import (
    DistContext,
    barrier,
    init_distributed,
    reduce_mean,
    shutdown_distributed,
)
from boxmask.training.metrics import MetricsWriter, RunningMean
from boxmask.training.progress import training_progress
from boxmask.training.schedule import build_lr_scheduler, build_optimizer
from boxmask.training.seeding import epoch_seed, seed_everything, seed_worker

# soft_wrap: a log line piped to a file stays one line.
_console = Console(stderr=True, soft_wrap=True)


@dataclass
class TrainingData:
    """The training set and what a checkpoint must say about its categories.

    ``categories``: ``[{"id", "name", "seen", "label"}]`` sorted by label, where ``seen`` follows
    the config's split (so evaluation knows which categories are unseen, even for the oracle);
    ``mask_labels``: contiguous labels whose ground-truth masks supervise the model (the seen
    ones, or all of them in ``oracle`` mode).
    """

    dataset: Dataset
    categories: list[dict[str, Any]]
    mask_labels: set[int]
    collate_fn: Any

    @property
    def num_classes(self) -> int:
        return len(self.categories)


def build_training_data(cfg: BoxMaskConfig) -> TrainingData:
    """The COCO training set of ``cfg.data`` with flips, masks only for mask-supervised classes."""
    from boxmask.data.build import build_dataset, read_categories, train_seen_ids
    from boxmask.data.coco import collate

    check_data_paths(cfg)
    d = cfg.data
    coco_categories = read_categories(d.train_annotations)
    split_seen = train_seen_ids(d)
    # The oracle is trained with every category's masks; the split still decides which
    # categories the evaluation calls unseen.
    dataset = build_dataset(d, "train", every_mask=cfg.model.mode == "oracle")
    if len(dataset) == 0:
        raise ConfigError(f"data.train_annotations: {str(d.train_annotations)!r} has no image "
                          "with a usable annotation")
    mask_labels = set(dataset.seen_labels)
    categories = [
        {"id": int(cat_id), "name": _name(coco_categories, cat_id), "seen": cat_id in split_seen,
         "label": label,
         # What taught the student this category: its own masks, or pseudo-masks (the teacher's,
         # or a checkpoint's student's: build_training_model passes a checkpoint's on).
         "taught_by": "masks" if label in mask_labels else "pseudo_masks"}
        for label, cat_id in enumerate(dataset.label_to_cat_id) if label > 0
    ]
    return TrainingData(dataset=dataset, categories=categories,
                        mask_labels=mask_labels, collate_fn=collate)


def _taught_by(category: dict[str, Any]) -> str:
    """``masks`` or ``pseudo_masks``: what taught a checkpoint's student ``category`` (older
    checkpoints record only ``seen``)."""
    if "taught_by" in category:
        return str(category["taught_by"])
    return "masks" if category.get("seen", True) else "pseudo_masks"


def _name(categories: list[dict[str, Any]], cat_id: int) -> str:
    return next(str(c["name"]) for c in categories if c["id"] == cat_id)


def build_training_model(cfg: BoxMaskConfig, data: TrainingData) -> nn.Module:
    from boxmask.model import build_model

    weights = cfg.model.backbone_weights
    if weights is not None and not Path(weights).is_file():
        raise ConfigError(f"model.backbone_weights: {str(weights)!r} does not exist (nothing is "
                          "downloaded: place a torchvision state dict there, or set it to null "
                          "to start from random weights)")
    model = build_model(cfg.model, data.num_classes, data.mask_labels)
    if cfg.model.init_from is not None:
        from boxmask.model.init_from import init_from_checkpoint

        path = Path(cfg.model.init_from)
        if not path.is_file():
            raise ConfigError(f"model.init_from: {str(path)!r} does not exist")
        ckpt = load_checkpoint(path)
        report = init_from_checkpoint(model, data.categories, ckpt, str(path))
        _console.print(f"initialised from {path}: {report.summary()}")
        branch = model.roi_heads.mask_branch
        if branch.anchor is not None:
            known = {int(c["label"]) for c in data.categories if c["name"] in report.matched}
            # Box-only categories the checkpoint knows inherit what taught it them.
            there = {str(c["name"]): _taught_by(c) for c in checkpoint_categories(ckpt, str(path))}
            for c in data.categories:
                if int(c["label"]) in known and int(c["label"]) not in data.mask_labels:
                    c["taught_by"] = there[str(c["name"])]
            relearn = {int(c["label"]) for c in data.categories if int(c["label"]) in known
                       and c["taught_by"] == "pseudo_masks"}
            branch.anchor_known(known, relearn)
            _console.print(f"box-only instances of the {len(known)} categories the checkpoint "
                           "knows take its own student masks as targets (model.known_targets)")
            if cfg.model.known_pseudo_targets == "refit" and relearn:
                _console.print(f"{len(relearn)} of them it learned from pseudo-masks: its masks "
                               "of them, made into pseudo-masks, teach them again "
                               "(model.known_pseudo_targets: refit)")
    frozen = list(cfg.model.frozen)
    if (not data.mask_labels and cfg.model.mode != "oracle" and "teacher" not in frozen
            and cfg.model.teacher_box_loss == "none"):
        # Box-only data: the teacher (from init_from) has nothing to learn from; keep it whole.
        frozen.append("teacher")
    if frozen:
        from boxmask.model.freeze import freeze

        count = freeze(model, frozen)
        _console.print(f"frozen: {', '.join(frozen)} ({count:,} parameters)")
    return model


def _to_device(images: list[torch.Tensor], targets: list[dict[str, Any]],
               device: torch.device) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    nb = device.type == "cuda"
    images = [img.to(device, non_blocking=nb) for img in images]
    targets = [{k: (v.to(device, non_blocking=nb) if isinstance(v, torch.Tensor) else v)
                for k, v in t.items()} for t in targets]
    return images, targets


def weighted_loss(losses: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """The training loss: the sum of ``losses`` (``loss_<name>`` -> scalar), each times
    ``weights[<name>]`` (``train.loss_weights``; 1 where unnamed).

    Raises:
        ConfigError: a weight names no loss of this model, e.g. ``mask_teacher`` in oracle mode.
    """
    names = {k.removeprefix("loss_") for k in losses}
    unknown = sorted(set(weights) - names)
    if unknown:
        raise ConfigError(f"train.loss_weights names {unknown}, which this model does not "
                          f"compute; its losses are {sorted(names)}")
    return sum(v * weights.get(k.removeprefix("loss_"), 1.0) for k, v in losses.items())


class Trainer:
    """Runs epochs of SGD over ``data`` with ``model``; checkpoints and logs on rank 0.

    Args:
        cfg: the full config (``train`` drives the loop; the whole config goes into checkpoints).
        model: a detection model whose train-mode forward returns a dict of losses.
        data: the training set and its categories.
        ctx: this process's place in the job (see :func:`init_distributed`).
    """

    def __init__(self, cfg: BoxMaskConfig, model: nn.Module, data: TrainingData,
                 ctx: DistContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.data = data
        self.output_dir = Path(cfg.train.output_dir)
        t = cfg.train

        self.model = model.to(ctx.device)
        if ctx.distributed:
            # Some batches leave a head without a positive RoI (no unseen instance, say); with
            # find_unused_parameters DDP tolerates a parameter that got no gradient this step.
            self.ddp: nn.Module = DistributedDataParallel(
                self.model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                find_unused_parameters=True)
        else:
            self.ddp = self.model

        # The same sampler with or without DDP: it shuffles with (seed, epoch) alone, so the
        # order of an epoch never depends on how the run got there (fresh or resumed).
        self.sampler = _ResumableSampler(data.dataset, num_replicas=ctx.world_size,
                                         rank=ctx.rank, shuffle=True, seed=t.seed)
        self.loader = DataLoader(data.dataset, batch_size=t.batch_size, sampler=self.sampler,
                                 num_workers=cfg.data.num_workers, collate_fn=data.collate_fn,
                                 worker_init_fn=seed_worker, generator=torch.Generator(),
                                 pin_memory=ctx.device.type == "cuda", drop_last=False)
        self.iters_per_epoch = len(self.loader)
        if t.max_iters_per_epoch is not None:
            self.iters_per_epoch = min(self.iters_per_epoch, t.max_iters_per_epoch)

        self.optimizer = build_optimizer(self.model, t)
        self.scheduler = build_lr_scheduler(self.optimizer, t, self.iters_per_epoch)
        self.amp_dtype = amp_dtype(t.amp, ctx.device)
        # fp16 needs its loss scaled (small gradients underflow); bfloat16 has fp32's range.
        self.scaler = torch.amp.GradScaler(ctx.device.type,
                                           enabled=self.amp_dtype == torch.float16)
        self.epoch = 0  # finished epochs
        self.iteration = 0  # finished iterations over the whole run
        self.epoch_iteration = 0  # finished iterations of the unfinished epoch (mid-epoch resume)

    # ---------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint of docs/contracts.md §3 (RNG states of every rank when distributed)."""
        rng = capture_rng_state()
        state: dict[str, Any] = {
            "model": self.model.state_dict(),
            "config": self.cfg.model_dump(mode="json"),
            "categories": self.data.categories,
            "epoch": self.epoch,
            "iteration": self.iteration,
            "epoch_iteration": self.epoch_iteration,
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            "world_size": self.ctx.world_size,
        }
        if self.ctx.distributed and self.ctx.world_size > 1:
            gathered: list[Any] = [None] * self.ctx.world_size
            dist.all_gather_object(gathered, rng)
            state["rng_per_rank"] = gathered
        return state

    def load_state_dict(self, ckpt: dict[str, Any], source: str = "checkpoint") -> None:
        """Restore model, optimizer, scheduler, scaler, counters and RNG from a checkpoint."""
        try:
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise ConfigError(f"{source} does not fit the model of this config "
                              f"(was it trained with another model section?): {exc}") from exc
        saved_model_cfg = (ckpt.get("config") or {}).get("model")
        current = self.cfg.model_dump(mode="json")["model"]
        if saved_model_cfg is not None and self.ctx.is_main:
            changed = changed_model_settings(saved_model_cfg, current)
            if changed:
                self._print(f"[yellow]warning:[/] resuming with model settings changed since "
                            f"the checkpoint: {', '.join(changed)}")
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["lr_scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch = int(ckpt["epoch"])
        self.iteration = int(ckpt["iteration"])
        self.epoch_iteration = int(ckpt.get("epoch_iteration", 0))
        per_rank = ckpt.get("rng_per_rank")
        if per_rank is not None and len(per_rank) == self.ctx.world_size:
            restore_rng_state(per_rank[self.ctx.rank])
        elif "rng" in ckpt:
            restore_rng_state(ckpt["rng"])

    def resume(self, path: Path) -> None:
        ckpt = load_checkpoint(path)
        if ckpt.get("optimizer") is None:
            raise ConfigError(f"checkpoint {str(path)!r} holds weights but no training run to "
                              "resume (it was imported): start from it with "
                              f"model.init_from={path}")
        self.load_state_dict(ckpt, source=f"checkpoint {str(path)!r}")
        if self.ctx.is_main:
            within = (f", {self.epoch_iteration} iterations into epoch {self.epoch + 1}"
                      if self.epoch_iteration else "")
            self._print(f"resumed from {path} after epoch {self.epoch}{within} "
                        f"(iteration {self.iteration})")

    # ---------------------------------------------------------------- loop

    def _print(self, message: str) -> None:
        if self.ctx.is_main:
            _console.print(message)

    def write_config(self) -> None:
        """Save the resolved config (absolute data paths, every default filled in)."""
        if self.ctx.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            text = yaml.safe_dump(self.cfg.model_dump(mode="json"), sort_keys=False)
            (self.output_dir / "config.yaml").write_text(text)

    def train_one_epoch(self, metrics: MetricsWriter, progress: Any, task: Any) -> dict[str, float]:
        """One epoch (at most ``train.max_iters_per_epoch`` iterations), or what is left of it
        after a mid-epoch resume. Returns the mean losses of the iterations it ran."""
        t = self.cfg.train
        self.ddp.train()
        self.sampler.set_epoch(self.epoch)
        # After a mid-epoch checkpoint, the batches already trained on are left out of the
        # sampler (not loaded and dropped, which would draw their augmentations' random numbers).
        start = self.epoch_iteration
        self.sampler.skip = start * t.batch_size
        # Worker seeds come from this generator: make them a function of the epoch.
        self.loader.generator.manual_seed(epoch_seed(t.seed, self.epoch, self.ctx.rank))
        window, epoch_mean = RunningMean(), RunningMean()
        times = RunningMean()
        end = time.perf_counter()
        for i, (images, targets) in enumerate(self.loader, start=start):
            if i >= self.iters_per_epoch:
                break
            data_time = time.perf_counter() - end
            images, targets = _to_device(images, targets, self.ctx.device)
            lr = self.optimizer.param_groups[0]["lr"]
            with torch.autocast(device_type=self.ctx.device.type, dtype=self.amp_dtype,
                                enabled=self.amp_dtype is not None):
                loss_dict = self.ddp(images, targets)
            loss = weighted_loss(loss_dict, t.loss_weights)
            reduced = reduce_mean({**loss_dict, "loss": loss}, self.ctx)
            if not math.isfinite(reduced["loss"]):
                raise FloatingPointError(
                    f"loss is {reduced['loss']} at epoch {self.epoch + 1}, iteration "
                    f"{self.iteration + 1}: {reduced}; lower train.lr or lengthen the warm-up")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.iteration += 1
            self.epoch_iteration = i + 1

            if self.ctx.device.type == "cuda":
                torch.cuda.synchronize(self.ctx.device)
            now = time.perf_counter()
            window.update(reduced)
            epoch_mean.update(reduced)
            times.update({"time_per_iter": now - end, "data_time": data_time})
            last = i + 1 == self.iters_per_epoch
            if (i + 1) % t.log_every == 0 or last:
                record = {"kind": "iter", "iteration": self.iteration, "epoch": self.epoch + 1,
                          "lr": lr, **window.mean(), **times.mean()}
                metrics.write(record)
                if not progress.live.is_started and self.ctx.is_main:
                    self._print(_log_line(record, self.cfg.train.epochs))
                window.reset()
                times.reset()
            progress.update(task, advance=1, status=f"loss {reduced['loss']:.3f} lr {lr:.2e}")
            every = t.checkpoint_every_iters
            if every and not last and self.epoch_iteration % every == 0:
                state = self.state_dict()  # every rank: it gathers the RNG states
                if self.ctx.is_main:
                    save_last_checkpoint(state, self.output_dir)
                barrier(self.ctx)
            end = time.perf_counter()
        self.sampler.skip = 0
        return epoch_mean.mean()

    def fit(self) -> Path:
        """Train from ``self.epoch`` to ``train.epochs``; returns ``checkpoint_last.pt``'s path."""
        t = self.cfg.train
        last = self.output_dir / LAST
        remaining = max(max(t.epochs - self.epoch, 0) * self.iters_per_epoch
                        - self.epoch_iteration, 0)
        self.write_config()
        if remaining == 0:
            self._print(f"nothing to do: {self.epoch} of {t.epochs} epochs already done")
            return last
        with MetricsWriter(self.output_dir / "metrics.jsonl", enabled=self.ctx.is_main) as metrics, \
                training_progress(enabled=None if self.ctx.is_main else False) as progress:
            task = progress.add_task("train", total=remaining, status="")
            while self.epoch < t.epochs:
                progress.update(task, description=f"epoch {self.epoch + 1}/{t.epochs}")
                start = time.perf_counter()
                means = self.train_one_epoch(metrics, progress, task)
                self.epoch += 1
                self.epoch_iteration = 0
                state = self.state_dict()  # every rank: it gathers the RNG states
                path = None
                if self.ctx.is_main:
                    path = save_checkpoint(state, self.output_dir,
                                           keep=self.cfg.train.keep_checkpoints)
                    metrics.write({"kind": "epoch", "epoch": self.epoch,
                                   "iteration": self.iteration, **means,
                                   "epoch_time": time.perf_counter() - start,
                                   "checkpoint": str(path)})
                    # Through the bar's console, so the line lands above a live bar.
                    progress.console.print(
                        f"epoch {self.epoch}/{t.epochs} done: loss {means.get('loss', float('nan')):.4f}, "
                        f"{time.perf_counter() - start:.0f}s, saved {path.name}", soft_wrap=True)
                barrier(self.ctx)
        self._print(f"[green]done:[/] {t.epochs} epochs, {self.iteration} iterations; "
                    f"evaluate with `boxmask eval {last}`")
        return last


def amp_dtype(amp: bool, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` on ``device``, None for fp32 throughout.

    CUDA: float16, with a loss scaler. CPU: none. CPU autocast would mean bfloat16, and the
    configs that set ``amp: true`` and are trained on CPU (configs/demo_synth128_mnv3.yaml, the
    bundled demo model's) would silently train in another precision than the models they have
    produced; so ``train.amp`` acts on CUDA only. The training step itself does not depend on
    the device: tests/training/test_amp.py runs it under CPU autocast in both dtypes.
    """
    if amp and device.type == "cuda":
        return torch.float16
    return None


class _ResumableSampler(DistributedSampler):
    """``DistributedSampler`` that can leave out the first ``skip`` indices of its epoch's
    order: the samples a mid-epoch checkpoint had already trained on."""

    skip = 0

    def __iter__(self):  # the base class's iterator type
        return iter(list(super().__iter__())[self.skip:])

    def __len__(self) -> int:
        return max(super().__len__() - self.skip, 0)


def _log_line(record: dict[str, Any], epochs: int) -> str:
    losses = " ".join(f"{k.removeprefix('loss_')} {v:.4f}" for k, v in record.items()
                      if k.startswith("loss_"))
    return (f"epoch {record['epoch']}/{epochs} it {record['iteration']} lr {record['lr']:.2e} "
            f"loss {record['loss']:.4f} ({losses}) {record['time_per_iter']:.2f}s/it")


def changed_model_settings(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The model settings of ``current`` that differ from a checkpoint's ``saved`` ones; a
    setting the checkpoint does not name (added to boxmask since) counts as its default."""
    defaults = ModelConfig().model_dump(mode="json")
    return sorted(k for k in current if saved.get(k, defaults.get(k)) != current[k])


def train(cfg: BoxMaskConfig, resume: Path | None = None) -> Path:
    """Train the model of ``cfg`` on its data; what `boxmask train` runs.

    Args:
        cfg: a validated config (see :func:`boxmask.config.load_config`).
        resume: a checkpoint to continue from, ``Path("auto")`` for
            ``OUTPUT_DIR/checkpoint_last.pt`` when it exists, or None for a fresh run.

    Returns the path of ``checkpoint_last.pt`` in ``cfg.train.output_dir``.
    """
    ctx = init_distributed()
    try:
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        resume_path = resolve_resume(resume, cfg.train.output_dir)
        seed_everything(cfg.train.seed + ctx.rank)
        data = build_training_data(cfg)
        model = build_training_model(cfg, data)
        trainer = Trainer(cfg, model, data, ctx)
        if resume_path is not None:
            trainer.resume(resume_path)
        elif resume is not None and ctx.is_main:
            trainer._print(f"no {LAST} in {cfg.train.output_dir}: starting a fresh run")
        return trainer.fit()
    finally:
        shutdown_distributed(ctx)
