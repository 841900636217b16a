"""RoI heads: torchvision's box branch plus the teacher-student mask branch.

``decode_boxes`` is the per-box path shared by the eager box-prompted predictor and the exported
``decoder.onnx``: the same code produces both, so the export cannot drift from the model.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss

from boxmask.model.mask_branch import TeacherStudentMaskBranch


class BoxMaskRoIHeads(RoIHeads):
    """``RoIHeads`` whose mask part is a :class:`TeacherStudentMaskBranch`."""

    def __init__(self, *args, mask_branch: TeacherStudentMaskBranch,
                 mask_rois_per_image: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.mask_branch = mask_branch
        # Training only: at most this many positive RoIs per image go to the mask losses.
        self.mask_rois_per_image = mask_rois_per_image

    @classmethod
    def from_roi_heads(cls, base: RoIHeads, mask_branch: TeacherStudentMaskBranch,
                       mask_rois_per_image: int | None = None) -> BoxMaskRoIHeads:
        """Reuse the box components and sampling settings of a torchvision ``RoIHeads``."""
        return cls(
            box_roi_pool=base.box_roi_pool,
            box_head=base.box_head,
            box_predictor=base.box_predictor,
            fg_iou_thresh=base.proposal_matcher.high_threshold,
            bg_iou_thresh=base.proposal_matcher.low_threshold,
            batch_size_per_image=base.fg_bg_sampler.batch_size_per_image,
            positive_fraction=base.fg_bg_sampler.positive_fraction,
            bbox_reg_weights=base.box_coder.weights,
            score_thresh=base.score_thresh,
            nms_thresh=base.nms_thresh,
            detections_per_img=base.detections_per_img,
            mask_branch=mask_branch,
            mask_rois_per_image=mask_rois_per_image,
        )

    def forward(self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor],
                image_shapes: list[tuple[int, int]],
                targets: list[dict[str, torch.Tensor]] | None = None,
                images: torch.Tensor | None = None,
                ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        """Train: ``([], losses)``. Eval: ``(detections, {})`` with per image ``boxes [K, 4]``,
        ``labels [K]``, ``scores [K]``, ``masks [K, 1, R, R]`` (probabilities)."""
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(
                proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)

        if self.training:
            loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels,
                                                          regression_targets)
            positive = [self._mask_rois(torch.where(lab > 0)[0]) for lab in labels]
            mask_losses = self.mask_branch.losses(
                features, [p[k] for p, k in zip(proposals, positive, strict=True)], image_shapes,
                [m[k] for m, k in zip(matched_idxs, positive, strict=True)], targets, images)
            return [], {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg, **mask_losses}

        boxes, scores, labels = self.postprocess_detections(class_logits, box_regression,
                                                            proposals, image_shapes)
        masks = self.mask_branch.predict(features, boxes, image_shapes, labels)
        return [{"boxes": b, "labels": lab, "scores": s, "masks": m}
                for b, lab, s, m in zip(boxes, labels, scores, masks, strict=True)], {}

    def _mask_rois(self, positive: torch.Tensor) -> torch.Tensor:
        """Indices ``[P]`` of one image's positive RoIs -> the at most ``mask_rois_per_image``
        of them (a uniform random subset, in their original order) the mask losses train on."""
        cap = self.mask_rois_per_image
        if cap is None or positive.numel() <= cap:
            return positive
        keep = torch.randperm(positive.numel(), device=positive.device)[:cap]
        return positive[keep.sort().values]

    def classify_boxes(self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                       image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        """Class probabilities of given boxes, ``[sum N_i, C + 1]`` (background first)."""
        box_features = self.box_head(self.box_roi_pool(features, boxes, image_shapes))
        class_logits, _ = self.box_predictor(box_features)
        return F.softmax(class_logits, -1)

    def decode_boxes(self, features: dict[str, torch.Tensor], boxes: torch.Tensor,
                     labels: torch.Tensor, image_shape: tuple[int, int]
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Masks for given boxes of one image: what an annotator gets after drawing a box.

        Args:
            features: FPN levels of one image (batch of 1).
            boxes (Tensor[N, 4]): xyxy in the resized-image frame.
            labels (Tensor[N]): contiguous labels; ``0`` means "not given: use the class the
                box head predicts for this box".
            image_shape: resized (h, w).
        Returns:
            mask_logits (Tensor[N, 1, R, R]), class_scores (Tensor[N, C + 1]),
            labels_out (Tensor[N]) the label each mask is of.
        """
        mask_logits, class_scores, labels_out, _ = self.decode_boxes_with_quality(
            features, boxes, labels, image_shape)
        return mask_logits, class_scores, labels_out

    def decode_boxes_with_quality(self, features: dict[str, torch.Tensor], boxes: torch.Tensor,
                                  labels: torch.Tensor, image_shape: tuple[int, int]
                                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                             torch.Tensor | None]:
        """:meth:`decode_boxes` and each mask's predicted IoU ``[N]`` (None when the model has
        no mask-quality head)."""
        class_scores = self.classify_boxes(features, [boxes], [image_shape])
        predicted = class_scores[:, 1:].argmax(dim=1) + 1
        labels_out = torch.where(labels > 0, labels, predicted)
        mask_logits, quality = self.mask_branch.mask_logits_and_quality(
            features, [boxes], [image_shape], [labels_out])
        return mask_logits, class_scores, labels_out, quality
