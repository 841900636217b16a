"""Experiment configuration: one YAML file, validated by pydantic, overridable from the CLI.

A config has four sections (``data``, ``model``, ``train``, ``eval``). Overrides use dotted keys,
``train.epochs=2 model.sigma=interact``, and values are parsed as YAML scalars, so numbers,
booleans and lists (``train.lr_steps=[8,11]``) keep their types.

This module imports no torch: the CLI validates a config before anything heavy is loaded.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A config that cannot be used; the message says what to change."""


class _Section(BaseModel):
    # Unknown keys are typos more often than not: refuse them instead of ignoring them.
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Section):
    """Where the COCO data lies and which categories have masks during training."""

    train_annotations: Path
    train_images: Path
    val_annotations: Path | None = None
    val_images: Path | None = None
    # Which categories are *seen* (their masks train the teacher). A built-in split name
    # (``coco-voc``, ``coco-nonvoc``, ``all``), or a list of category names or ids.
    seen: str | list[str | int] = "all"
    # Images smaller than this many annotated instances are still used; images with no
    # instance at all are dropped from training (as in torchvision's references).
    drop_images_without_annotations: bool = True
    num_workers: int = Field(default=0, ge=0)
    horizontal_flip: float = Field(default=0.5, ge=0.0, le=1.0)
    # Not in the paper (off by default): the probability that a supervised mask gets a random
    # hole or bite with the background copied into it (boxmask.data.transforms.BackgroundHoles),
    # so the class-agnostic teacher sees seen shapes with background inside their outline.
    background_holes: float = Field(default=0.0, ge=0.0, le=1.0)
    # Not in the paper (off by default): the probability that a training image gets procedural
    # random shapes (polygons and blobs with their own textures) pasted over it, as Ghiasi et
    # al.'s Simple Copy-Paste (CVPR 2021) pastes objects (boxmask.data.random_shapes): extra
    # class-agnostic instances (label -1, ``teacher_only``) that only the class-agnostic teacher
    # learns from, so that it learns to follow boundaries rather than the seen shapes.
    random_shapes: float = Field(default=0.0, ge=0.0, le=1.0)
    # How many shapes such an image gets: drawn uniformly from [low, high].
    random_shapes_count: tuple[int, int] = (1, 3)

    @field_validator("random_shapes_count")
    @classmethod
    def _count_range(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 1 <= v[0] <= v[1]:
            raise ValueError(f"random_shapes_count must be [low, high] with 1 <= low <= high, got {list(v)}")
        return v


class ModelConfig(_Section):
    """The Mask R-CNN and its mask heads (see ``boxmask.model.build``)."""

    backbone: Literal["resnet50_fpn", "resnet18_fpn", "mobilenet_v3_fpn"] = "resnet50_fpn"
    # A local torchvision-format state dict for the backbone body; nothing is downloaded.
    backbone_weights: Path | None = None
    trainable_backbone_layers: int = Field(default=5, ge=0, le=5)
    # ``auto``: frozen BN with pretrained weights (torchvision's choice), trainable BN from random
    # init (frozen random statistics make BN an identity); ``gn`` for tiny batches.
    backbone_norm: Literal["auto", "frozen_bn", "bn", "gn"] = "auto"
    # ``agnostic``: one class-agnostic head trained on seen masks (the baseline);
    # ``teacher_student``: the paper's method; ``oracle``: class-specific head on all masks.
    mode: Literal["agnostic", "teacher_student", "oracle"] = "teacher_student"
    # ``box`` is not in the paper: the teacher ignored, the pseudo-mask is the cleaned box (the
    # box minus the seen masks in it); an ablation of what the teacher adds to the cleaning.
    sigma: Literal["threshold", "interact", "crf", "box"] = "threshold"
    # sigma=interact uses threshold for this many training steps first. From random init the
    # student's unseen channels can reach 0 before the teacher is confident, and then
    # (M_t + M_s) / 2 >= 0.5 never holds again: every pseudo-mask stays empty (measured on the
    # synthetic data, docs/results.md). 0 = the paper's formula from the first step.
    interact_warmup_iters: int = Field(default=0, ge=0)
    # Not in the paper (off by default): the class-agnostic teacher's target for a seen
    # instance calls every other pixel of its RoI background, unseen objects included, so it
    # learns to reject exactly the categories it must segment later (measured on the synthetic
    # data: docs/results.md). With this on, L_T ignores the RoI cells inside the box of any
    # unseen instance of the image, except the instance's own mask.
    teacher_ignore_unseen_boxes: bool = False
    # Not in the paper (off by default): BoxInst's box-only mask losses (Tian et al. 2021;
    # boxmask/model/box_losses.py) on the unseen positives of the head that serves masks (the
    # student; the teacher in agnostic mode), beside the pseudo-mask loss: ``projection`` (the
    # mask's row and column maxima match the box's) or ``boxinst`` (projection + pairwise:
    # neighbouring cells of similar colour share a label). Logged as mask_projection and
    # mask_pairwise (``train.loss_weights`` names them).
    unseen_box_loss: Literal["none", "projection", "boxinst"] = "none"
    # The pairwise term's weight ramps from 0 to 1 over this many steps (BoxInst: 10k of 90k).
    box_pairwise_warmup_iters: int = Field(default=0, ge=0)
    # How many cells apart the pairwise term's neighbours are (BoxInst's 2, on a quarter of the
    # image). On the heads' RoI grid, made by a stride-2 transposed conv, neighbours 2 apart
    # join only cells of the same parity: the grid falls into four sublattices the term never
    # ties together, and a student on the transfer benchmark learned a checkerboard of holes
    # (docs/notebook/2026-12-07-the-slab.md). 1 joins adjacent cells.
    box_pairwise_dilation: int = Field(default=2, ge=1)
    # Not in the paper (0, off, by default): the width of a pixel stem (two 3x3 convs on the
    # image at full resolution) whose RoI crops both mask heads fuse before their logits
    # (boxmask/model/heads.py PixelStem): the image's own edges at the mask's resolution, where
    # the FPN's finest level (stride 4) leaves a head to its shape prior. Exported as the
    # encoder's extra output `pixels` (docs/contracts.md §4).
    mask_pixel_channels: int = Field(default=0, ge=0)
    teacher_convs: int = Field(default=4, ge=1)
    teacher_resolution: Literal[28, 56] = 28
    mask_head_channels: int = Field(default=256, ge=1)
    fpn_channels: int = Field(default=256, ge=1)
    representation_size: int = Field(default=1024, ge=1)
    min_size: int = Field(default=800, ge=32)
    max_size: int = Field(default=1333, ge=32)
    # RPN / RoI settings; defaults are torchvision's except the test-time numbers of the paper.
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 512
    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 512
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    box_detections_per_img: int = 150
    anchor_sizes: list[int] | None = None
    # The heads of torchvision's maskrcnn_resnet50_fpn_v2 (Li et al. 2021, "Benchmarking
    # detection transfer learning with vision transformers"): a 2-conv RPN head, a box head of
    # 4 convs + 1 fc (``conv``) instead of 2 fcs (``mlp``), and a norm layer after every conv of
    # the FPN, box head and mask heads (``bn`` in torchvision's v2; ``gn`` for tiny batches).
    # The defaults are v1's (and every checkpoint's from before these keys existed).
    rpn_conv_depth: int = Field(default=1, ge=1)
    box_head: Literal["mlp", "conv"] = "mlp"
    head_norm: Literal["none", "bn", "gn"] = "none"
    # How ground-truth masks are cropped onto RoIs for the mask losses. torchvision's
    # project_masks_on_boxes samples with roi_align(aligned=False), half a pixel off the box;
    # True crops with aligned=True, as detectron2's BitMasks.crop_and_resize does, where the
    # pixel-aligned paste (boxmask/model/paste.py) puts the cells back. On the 128-px synthetic
    # scenes the true masks, cropped and pasted back at R = 28, keep 0.991 mean IoU this way and
    # 0.902 with torchvision's crop and paste (benchmarks/paste_ceiling.py). False is
    # torchvision's grid (its weights, and every model trained before 2026-11-27); such models
    # are pasted half a resized pixel on (the card's mask_grid).
    mask_target_aligned: bool = True
    # The mask heads' training RoIs per image: at most this many of the box sampler's positives
    # (drawn at random), None for all of them (torchvision's). The mask heads are most of a
    # CPU training step (benchmarks/train_step_profile.py: 4 + 4 convs at 14 x 14 per RoI for
    # teacher-student), and with up to box_batch_size_per_image / 4 positives for a handful of
    # objects an image, most of those RoIs are near-copies of one another.
    mask_rois_per_image: int | None = Field(default=None, ge=1)
    # Start from this boxmask checkpoint (`boxmask train` or `boxmask import torchvision`):
    # categories are matched by name, the weights of matched ones are copied, new categories get
    # freshly initialised channels (boxmask/model/init_from.py). Not a resume: the optimizer,
    # schedule and epoch start afresh.
    init_from: Path | None = None
    # Parts that keep the weights they start with (a fine-tune from init_from): ``backbone``
    # (body and FPN), ``pixel_stem``, ``rpn``, ``box_head`` (head and predictor), ``teacher``,
    # ``student``. The teacher is also frozen by itself when no training instance has a mask
    # (nothing could teach it; a box-only fine-tune keeps the checkpoint's teacher as it is).
    # ``quality`` (the mask-quality head) too; freezing every other part trains that head alone
    # on top of a trained model (its inputs are detached, so the masks stay bit-identical).
    frozen: list[Literal["backbone", "pixel_stem", "rpn", "box_head", "teacher", "student",
                         "quality"]] = Field(default_factory=list)
    # Not in the paper. Where a box-only instance's student target comes from when its category
    # is one the init_from checkpoint already segments: ``teacher`` (the paper: the teacher's
    # cleaned pseudo-mask, like any unseen instance), or ``checkpoint``: the checkpoint's own
    # student mask for that category (a frozen copy of its student head; its probabilities
    # inside the instance's box, soft targets as in Learning without Forgetting), so a
    # fine-tune without their masks does not forget them.
    known_targets: Literal["teacher", "checkpoint"] = "teacher"
    # Not in the paper (off by default): a class-agnostic mask-quality head (Mask Scoring
    # R-CNN's MaskIoU head, boxmask/model/mask_quality.py) that predicts the IoU of each served
    # mask, trained on the instances with true masks; exported as the decoders' `quality`.
    mask_quality: bool = False
    # Its widths: the convs' (0: mask_head_channels, as in Mask Scoring R-CNN, whose head
    # matches its mask head's 256) and the fully connected layers' (theirs: 1024). Narrow by
    # default: at the mask head's width the head's three 14x14 convs cost about as much as the
    # mask head itself, and the issue allows the label-given decoder 10 % more; at 32 they
    # cost about 4 % of a 256-channel mask head (first conv 257 -> 32, then 32 -> 32). The
    # first fc reads channels x 7 x 7: 32 x 49 x 128 is 0.2 M weights in every graph with a
    # mask head (the shipped demo model, under a size budget, narrows it to 16 and 64).
    mask_quality_channels: int = Field(default=32, ge=0)
    mask_quality_fc: int = Field(default=128, ge=1)
    # Not in the paper (``none``, off, by default): ``box`` thresholds each teacher pseudo-mask
    # as low as it takes to reach its box's sides (boxmask/model/pseudo_masks.py fit_to_box),
    # for a teacher that learned the new categories as background (a model pretrained where
    # they were not annotated). With sigma: crf the probabilities are shifted so that threshold
    # falls at 0.5, then the CRF refines them (pseudo_masks.fit_then_crf).
    pseudo_mask_fit: Literal["none", "box"] = "none"
    # Not in the paper (off by default; needs known_targets: checkpoint): the pseudo-masks are
    # also cleaned of the checkpoint's own masks of the image's box-only instances of the
    # categories it knows, as the paper cleans them of the seen masks (box-only data has none).
    clean_with_known_masks: bool = False
    # Not in the paper (off by default): BoxInst's terms on the teacher's masks of the box-only
    # instances (teacher_student only): the teacher keeps training on box-only data (it is not
    # frozen for want of masks) and learns from the boxes that their objects are objects.
    teacher_box_loss: Literal["none", "projection", "boxinst"] = "none"
    # Not in the paper (``soft``, off, by default; needs known_targets: checkpoint): ``refit``
    # is a second round of self-training. Box-only instances of the categories the checkpoint
    # learned *without* masks (``seen: false`` in it: its own pseudo-masks taught them) take
    # the checkpoint student's mask made into a pseudo-mask (sigma, pseudo_mask_fit and the
    # cleaning as for the teacher's) instead of its soft probabilities: the student of round
    # one, better than its teacher, teaches round two. Categories it learned from masks keep
    # the soft targets.
    known_pseudo_targets: Literal["soft", "refit"] = "soft"
    # Not in the paper (``instances``, off, by default; needs known_targets: checkpoint):
    # ``all`` is Learning without Forgetting's term on all new data: on every positive, whatever
    # its category, the student's channels of the categories the checkpoint knows match the
    # checkpoint's (``loss_mask_distill``), so learning the new shapes moves the old less.
    known_distill: Literal["instances", "all"] = "instances"
    # Not in the paper (0, off, by default; teacher_student only): rounds of self-training in
    # one run. Every this many iterations the student is copied into a frozen round head, whose
    # masks (made into pseudo-masks as the teacher's are: sigma, pseudo_mask_fit, cleaning)
    # then teach the box-only instances instead of the teacher's: a student that has overtaken
    # its teacher teaches the next round.
    self_train_every: int = Field(default=0, ge=0)
    # Not in the paper (0, off, by default): a soft Dice term (``loss_mask_dice``, this weight)
    # on the student's masks beside Mask R-CNN's per-cell BCE, on the same instances and
    # targets: Dice is counted per instance, as the box-prompted mean IoU is.
    mask_dice_weight: float = Field(default=0.0, ge=0.0)
    # Not in the paper (``none``, off, by default; inference only: training is unchanged):
    # ``box`` serves the masks of the categories the model learned from boxes alone (its
    # checkpoint's ``taught_by: pseudo_masks``) fitted to their box: each mask thresholded as
    # low as it takes to reach ``served_mask_fit_cover`` of its box's rows and columns (a tight
    # box touches its object on all four sides), as the pseudo-masks that taught them were
    # (``pseudo_mask_fit``). Built into the exported graphs; categories learned from masks are
    # served as they are.
    served_mask_fit: Literal["none", "box"] = "none"
    served_mask_fit_cover: float = Field(default=0.9, gt=0.0, le=1.0)
    # Not in the paper (``none``, off, by default): a guard against masks worse than the box, for
    # the same categories (learned from boxes alone). ``expected_iou`` serves the box itself
    # (the whole RoI grid) where it is the better bet by the mask's own probabilities p over its
    # box: the box's expected IoU with the object, mean(p), above the mask's, sum(p inside) /
    # (|mask| + sum(p outside)) (the expected intersection over the expected union, the object
    # drawn cell by cell from p). No threshold to tune. Built into the exported graphs, after
    # the fit when both are on; the runtime says so (``box_fallback``) where a mask is its box.
    served_box_guard: Literal["none", "expected_iou"] = "none"
    # Not in the paper (off by default; inference only): every served mask refined by a dense
    # CRF on the image's colours at its grid's cells (boxmask.runtime.crf, numpy; the paper's
    # third sigma, applied to the served masks instead of the pseudo-masks), masks that are
    # their box excepted. Not in the graphs (no ONNX op for it): the exporter writes
    # ``mask_refine: crf`` on the model card and the runtime applies it after the decoder, as
    # the eager model does here, so ``boxmask eval`` measures what is served.
    served_crf: bool = False
    # The served CRF's kernel (boxmask.runtime.crf): "local", the training sigma's (the
    # appearance kernel 2 cells wide; the card's ``mask_refine: crf``), or "wide" (10 cells,
    # nearly the whole box, on a sparse lattice; ``crf_wide``): +2.0 seen / +4.5 unseen
    # box-prompted mIoU over "local" on the demo model's headline masks
    # (docs/notebook/2026-12-07-crf-kernels.md), chosen on a held-out tuning set. "local" by default so that a
    # checkpoint trained before the choice serves as it was measured.
    served_crf_kernel: Literal["local", "wide"] = "local"


class TrainConfig(_Section):
    """SGD with linear warm-up and step decay; checkpoints every epoch."""

    epochs: int = Field(default=12, ge=1)
    batch_size: int = Field(default=2, ge=1)  # per process
    # ``sgd`` (the paper's) or ``adamw``: from random init on the small CPU-sized synthetic sets
    # AdamW learns the masks in far fewer iterations (docs/results.md, the recipe ablation).
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(default=0.02, gt=0)
    momentum: float = Field(default=0.9, ge=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    warmup_iters: int = Field(default=500, ge=0)
    warmup_factor: float = Field(default=0.001, gt=0, le=1)
    lr_steps: list[int] = Field(default_factory=lambda: [8, 11])  # epochs after which lr *= gamma
    # Not in the paper (none by default): epochs after which the rate returns to ``lr`` (a warm
    # restart; the steps before it no longer count), e.g. lr_steps [16, 22] with lr_restarts
    # [18]: the base rate to 16, a tenth to 18, the base again to 22, a tenth after.
    lr_restarts: list[int] = Field(default_factory=list)
    gamma: float = Field(default=0.1, gt=0)
    amp: bool = True  # only takes effect on CUDA
    seed: int = 0
    log_every: int = Field(default=20, ge=1)
    max_iters_per_epoch: int | None = Field(default=None, ge=1)  # for smoke runs
    output_dir: Path = Path("runs/default")
    # Epoch checkpoints kept on disk, newest first (None keeps all); checkpoint_last.pt is
    # always kept. A 24-epoch R18 run writes ~100 MB an epoch.
    keep_checkpoints: int | None = Field(default=None, ge=1)
    # Also refresh checkpoint_last.pt every this many iterations inside an epoch, so that a
    # run killed mid-epoch loses at most this many; resuming continues at that very iteration.
    checkpoint_every_iters: int | None = Field(default=None, ge=1)
    threads: int | None = None  # torch.set_num_threads on CPU
    # Multiply a loss by this before the sum, by the name the log shows (``mask_student``,
    # ``mask_teacher``, ``classifier``, ``box_reg``, ``objectness``, ``rpn_box_reg``); unnamed
    # losses keep 1. ``{mask_student: 0, mask_teacher: 0}`` trains the detector on boxes alone:
    # a first stage that the methods' runs can start from (model.init_from), standing in for
    # the ImageNet backbone the paper starts from (benchmarks/recipe_ablation.py, clear_boxes_*).
    loss_weights: dict[str, float] = Field(default_factory=dict)

    @field_validator("loss_weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: w for k, w in v.items() if not (w >= 0 and math.isfinite(w))}
        if bad:
            raise ValueError(f"loss weights must be finite and >= 0, got {bad}")
        return {k.removeprefix("loss_"): w for k, w in v.items()}

    @field_validator("lr_steps")
    @classmethod
    def _sorted_steps(cls, v: list[int]) -> list[int]:
        if sorted(v) != v:
            raise ValueError("lr_steps must be increasing epoch numbers, e.g. [8, 11]")
        return v

    @model_validator(mode="after")
    def _restarts_between_steps(self) -> TrainConfig:
        if sorted(self.lr_restarts) != self.lr_restarts or any(r < 1 for r in self.lr_restarts):
            raise ValueError("lr_restarts must be increasing epoch numbers (>= 1), e.g. [18]")
        same = sorted(set(self.lr_restarts) & set(self.lr_steps))
        if same:
            raise ValueError(f"epochs {same} are both in lr_steps and in lr_restarts: a step and "
                             "a restart at once is ambiguous")
        return self


class EvalConfig(_Section):
    """What `boxmask eval` reports besides mask AP."""

    overlap_threshold: float = 0.3
    overlap_bins: list[float] = Field(default_factory=lambda: [0.0, 0.1, 0.3, 0.5, 0.7, 1.0001])
    box_prompted: bool = True
    plots: bool = True


class BoxMaskConfig(_Section):
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        nxt = node.setdefault(key, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
        node = nxt
    node[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """``["train.epochs=2", "model.sigma=crf"]`` -> ``[("train.epochs", 2), ...]``."""
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.epochs=2")
        key, raw = item.split("=", 1)
        parsed.append((key.strip(), yaml.safe_load(raw) if raw != "" else None))
    return parsed


def load_config(path: str | Path | None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> BoxMaskConfig:
    """Read a YAML config, apply dotted overrides, validate.

    Relative data paths are resolved against the config file's folder, so a config can sit
    beside its data. Raises :class:`ConfigError` with a message naming the bad key.
    """
    tree: dict[str, Any] = dict(base or {})
    root = Path.cwd()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections")
        tree.update(loaded)
        root = path.parent
    for key, value in parse_overrides(overrides or []):
        _set_dotted(tree, key, value)
    try:
        cfg = BoxMaskConfig.model_validate(tree)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            lines.append(f"  {loc}: {err['msg']}")
        raise ConfigError("invalid config:\n" + "\n".join(lines)) from exc
    return resolve_paths(cfg, root)


def resolve_paths(cfg: BoxMaskConfig, root: Path) -> BoxMaskConfig:
    """Make relative data paths relative to ``root`` (the config file's folder)."""
    d = cfg.data
    for name in ("train_annotations", "train_images", "val_annotations", "val_images"):
        p = getattr(d, name)
        if p is not None and not p.is_absolute():
            setattr(d, name, (root / p).resolve())
    for name in ("backbone_weights", "init_from"):
        p = getattr(cfg.model, name)
        if p is not None and not p.is_absolute():
            setattr(cfg.model, name, (root / p).resolve())
    return cfg


def check_data_paths(cfg: BoxMaskConfig, need_val: bool = False) -> None:
    """Fail early, with the path, when data the run needs is missing."""
    d = cfg.data
    needed: list[tuple[str, Path | None]] = [("data.train_annotations", d.train_annotations),
                                             ("data.train_images", d.train_images)]
    if need_val:
        needed += [("data.val_annotations", d.val_annotations), ("data.val_images", d.val_images)]
    for key, p in needed:
        if p is None:
            raise ConfigError(f"{key} is not set in the config")
        if not Path(p).exists():
            raise ConfigError(f"{key}: {str(p)!r} does not exist (run `boxmask data synth` or fix the path)")
