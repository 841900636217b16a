"""``build_model``: a config and a category count -> a :class:`BoxMaskRCNN`.

Random initialisation unless ``model.backbone_weights`` names a local torchvision state dict;
nothing is ever downloaded.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import (
    FasterRCNN,
    FastRCNNConvFCHead,
    FastRCNNPredictor,
    TwoMLPHead,
)
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import initLevelMapper

from boxmask.config import ModelConfig
from boxmask.model.backbones import build_backbone
from boxmask.model.heads import NormLayer, head_norm_layer
from boxmask.model.mask_branch import TeacherStudentMaskBranch
from boxmask.model.rcnn import FIRST_LEVEL_STRIDE, FPN_LEVELS, BoxMaskRCNN
from boxmask.model.roi_heads import BoxMaskRoIHeads


def pyramid_roi_align(output_size: int, sampling_ratio: int = 2) -> MultiScaleRoIAlign:
    """torchvision's RoIAlign over the FPN levels P2..P5, with the levels' scales fixed.

    ``MultiScaleRoIAlign`` infers each level's scale on the first batch it pools, as the
    feature size over the largest *unpadded* image size rounded to a power of two, and keeps
    it. A first image whose resized height is far below its padded one gets a wrong scale for
    good: 40 px padded to 64 gives P2 16 / 40 = 0.4, rounded to 1/2 instead of 1/4, and every
    later image is then pooled at half its boxes' true place (a wide panorama resized under
    max_size hits it too). The strides are known here (every backbone's P2 is at stride
    FIRST_LEVEL_STRIDE, each level doubles it), so they are set once and never inferred.
    The pool then maps RoIs to levels as torchvision would (canonical 224 px at level 4).
    """
    pool = MultiScaleRoIAlign(list(FPN_LEVELS), output_size=output_size,
                              sampling_ratio=sampling_ratio)
    strides = [FIRST_LEVEL_STRIDE * 2 ** i for i in range(len(FPN_LEVELS))]
    pool.scales = [1.0 / s for s in strides]
    first, last = strides[0].bit_length() - 1, strides[-1].bit_length() - 1  # log2: 2 .. 5
    pool.map_levels = initLevelMapper(first, last, canonical_scale=pool.canonical_scale,
                                      canonical_level=pool.canonical_level)
    return pool


def build_model(cfg: ModelConfig, num_classes: int, seen_labels: set[int] | None = None) -> BoxMaskRCNN:
    """Build the model of ``cfg.mode``.

    Args:
        cfg: the ``model`` section of a config.
        num_classes: C, categories without background.
        seen_labels: contiguous labels of the seen categories. The model itself does not need
            them (which masks are usable travels with each target as ``mask_valid``); they are
            checked here so a split that leaves nothing to learn from fails before training.
    """
    if num_classes < 1:
        raise ValueError("num_classes must be at least 1")
    if seen_labels is not None:
        bad = [s for s in seen_labels if not 1 <= s <= num_classes]
        if bad:
            raise ValueError(f"seen labels {bad} are outside 1..{num_classes}")
        if cfg.mode != "oracle" and not seen_labels and cfg.init_from is None:
            # With init_from the teacher comes trained from the checkpoint (a box-only fine-tune).
            raise ValueError("no seen category: the teacher would have no mask to learn from")

    norm = head_norm_layer(cfg.head_norm)
    body_norm = cfg.backbone_norm
    if body_norm == "auto" and cfg.init_from is not None:
        # Pretrained statistics come from the checkpoint: freeze them, as for backbone_weights.
        body_norm = "frozen_bn"
    backbone = build_backbone(cfg.backbone, cfg.fpn_channels, cfg.trainable_backbone_layers,
                              body_norm, cfg.backbone_weights, norm)
    sizes = cfg.anchor_sizes or [32, 64, 128, 256, 512]
    if len(sizes) != 5:
        raise ValueError("model.anchor_sizes needs 5 sizes, one per pyramid level P2..P6")
    anchors = AnchorGenerator(tuple((s,) for s in sizes), ((0.5, 1.0, 2.0),) * len(sizes))
    box_head = _box_head(cfg, norm)
    box_predictor = FastRCNNPredictor(cfg.representation_size, num_classes + 1)
    # Built after the box head, where FasterRCNN would build its default one: the same draws
    # from the seeded generator as before this option existed, so seeded runs still reproduce.
    rpn_head = RPNHead(cfg.fpn_channels, anchors.num_anchors_per_location()[0],
                       conv_depth=cfg.rpn_conv_depth)
    box_pool = pyramid_roi_align(7)
    base = FasterRCNN(
        backbone,
        num_classes=None,
        min_size=cfg.min_size,
        max_size=cfg.max_size,
        rpn_anchor_generator=anchors,
        rpn_head=rpn_head,
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=cfg.rpn_batch_size_per_image,
        box_roi_pool=box_pool,
        box_head=box_head,
        box_predictor=box_predictor,
        box_score_thresh=cfg.box_score_thresh,
        box_nms_thresh=cfg.box_nms_thresh,
        box_detections_per_img=cfg.box_detections_per_img,
        box_batch_size_per_image=cfg.box_batch_size_per_image,
    )
    mask_pool = pyramid_roi_align(14)
    branch = TeacherStudentMaskBranch(
        mask_pool, cfg.fpn_channels, cfg.mask_head_channels, num_classes, mode=cfg.mode,
        sigma=cfg.sigma, teacher_convs=cfg.teacher_convs, teacher_resolution=cfg.teacher_resolution,
        interact_warmup_iters=cfg.interact_warmup_iters,
        teacher_ignore_unseen_boxes=cfg.teacher_ignore_unseen_boxes, norm_layer=norm,
        mask_target_aligned=cfg.mask_target_aligned, unseen_box_loss=cfg.unseen_box_loss,
        box_pairwise_warmup_iters=cfg.box_pairwise_warmup_iters,
        box_pairwise_dilation=cfg.box_pairwise_dilation,
        pixel_channels=cfg.mask_pixel_channels, known_targets=cfg.known_targets,
        mask_quality=cfg.mask_quality, mask_quality_channels=cfg.mask_quality_channels,
        mask_quality_fc=cfg.mask_quality_fc, pseudo_mask_fit=cfg.pseudo_mask_fit,
        clean_with_known_masks=cfg.clean_with_known_masks, teacher_box_loss=cfg.teacher_box_loss,
        known_pseudo_targets=cfg.known_pseudo_targets,
        known_distill=cfg.known_distill,
        self_train_every=cfg.self_train_every,
        served_mask_fit_cover=cfg.served_mask_fit_cover if cfg.served_mask_fit == "box" else 0.0,
        served_box_guard=cfg.served_box_guard == "expected_iou",
        mask_dice_weight=cfg.mask_dice_weight)
    roi_heads = BoxMaskRoIHeads.from_roi_heads(base.roi_heads, branch,
                                               mask_rois_per_image=cfg.mask_rois_per_image)
    model = BoxMaskRCNN(base.backbone, base.rpn, roi_heads, base.transform,
                        served_crf=cfg.served_crf, crf_kernel=cfg.served_crf_kernel)
    model.num_classes = num_classes  # type: ignore[attr-defined]
    return model


def _box_head(cfg: ModelConfig, norm: NormLayer | None) -> nn.Module:
    """RoI features ``[P, F, 7, 7]`` -> ``[P, representation_size]``.

    ``mlp``: torchvision's v1 ``TwoMLPHead``. ``conv``: its v2 ``FastRCNNConvFCHead``, 4 convs
    of the FPN width then one fc (state-dict keys as torchvision's, so its weights load as they
    are).
    """
    if cfg.box_head == "mlp":
        return TwoMLPHead(cfg.fpn_channels * 7 * 7, cfg.representation_size)
    return FastRCNNConvFCHead((cfg.fpn_channels, 7, 7), [cfg.fpn_channels] * 4,
                              [cfg.representation_size], norm_layer=norm)
