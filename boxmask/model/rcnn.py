"""BoxMaskRCNN: torchvision's GeneralizedRCNN wiring with the teacher-student RoI heads.

Inference is split as in Segment Anything: ``encode`` (transform + backbone, once per image)
and ``decode`` (per set of boxes); ``segment_boxes`` composes them for the box-prompted setting,
and the exporter wraps the same two methods.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from boxmask.model.mask_branch import PIXELS
from boxmask.model.paste import grid_offset, paste_masks
from boxmask.model.roi_heads import BoxMaskRoIHeads

FPN_LEVELS = ("0", "1", "2", "3")
# Every backbone's first FPN level has stride 4 (backbones.py), and images are padded to a
# multiple of 32: the padded input is exactly 4x the first level.
FIRST_LEVEL_STRIDE = 4


class BoxMaskRCNN(GeneralizedRCNN):
    """Mask R-CNN whose mask branch is the teacher-student pair of Zhao et al. (2022).

    ``model(images, targets)`` in training returns the loss dict (``loss_classifier``,
    ``loss_box_reg``, ``loss_objectness``, ``loss_rpn_box_reg``, and ``loss_mask_teacher`` /
    ``loss_mask_student`` by mode); in eval, per image ``boxes [K, 4]``, ``labels [K]``,
    ``scores [K]`` and ``masks [K, 1, H, W]`` probabilities in the original image frame.
    """

    def __init__(self, backbone: nn.Module, rpn: RegionProposalNetwork,
                 roi_heads: BoxMaskRoIHeads, transform: GeneralizedRCNNTransform,
                 served_crf: bool = False, crf_kernel: str = "local") -> None:
        super().__init__(backbone, rpn, roi_heads, transform)
        self.roi_heads: BoxMaskRoIHeads
        # model.served_crf: the masks this model returns in eval refined by the runtime's CRF
        # (boxmask.runtime.crf) with model.served_crf_kernel's parameters, as the runtime
        # serves them; not part of the exported graphs.
        self.served_crf = served_crf
        self.crf_kernel = crf_kernel

    def forward(self, images: list[torch.Tensor],
                targets: list[dict[str, torch.Tensor]] | None = None):  # type: ignore[override]
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            for t in targets:
                if t["boxes"].ndim != 2 or t["boxes"].shape[-1] != 4:
                    raise ValueError(f"target boxes must be [N, 4], got {tuple(t['boxes'].shape)}")
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        batch, targets = self.transform(images, targets)
        if targets is not None:
            for i, t in enumerate(targets):
                bad = (t["boxes"][:, 2:] <= t["boxes"][:, :2]).any(dim=1)
                if bad.any():
                    raise ValueError(f"degenerate box {t['boxes'][bad][0].tolist()} in target {i}: "
                                     "boxes need positive width and height")
        features = self.backbone(batch.tensors)
        proposals, proposal_losses = self.rpn(batch, features, targets)
        features = self.with_pixels(features, batch.tensors)  # after the RPN, which reads all keys
        images_for_heads = (self.pixels(batch.tensors)
                            if self.roi_heads.mask_branch.needs_images else None)
        detections, detector_losses = self.roi_heads(features, proposals, batch.image_sizes,
                                                     targets, images=images_for_heads)
        if self.training:
            return {**detector_losses, **proposal_losses}
        # The transform scales boxes back to the original pixels; the masks are pasted here,
        # pixel-aligned (boxmask/model/paste.py), not by torchvision's paste_masks_in_image.
        grids = [d.pop("masks", None) for d in detections]
        if self.served_crf:
            grids = [g if g is None else self.refine(g, d["boxes"], image)
                     for g, d, image in zip(grids, detections, self.pixels(batch.tensors),
                                            strict=True)]
        detections = self.transform.postprocess(detections, batch.image_sizes, original_sizes)
        for d, g, size, resized in zip(detections, grids, original_sizes, batch.image_sizes,
                                       strict=True):
            if g is not None:
                d["masks"] = paste_masks(g, d["boxes"], size, self.paste_offset(size, resized))
        return detections

    def paste_offset(self, original: tuple[int, int], resized: tuple[int, int]
                     ) -> tuple[float, float]:
        """(dx, dy) to move boxes by before pasting: non-zero for a model trained on
        torchvision's half-pixel target grid (boxmask/model/paste.py)."""
        return grid_offset(self.roi_heads.mask_branch.mask_target_aligned, original,
                           (int(resized[0]), int(resized[1])))

    def with_pixels(self, features: OrderedDict[str, torch.Tensor], batch: torch.Tensor
                    ) -> OrderedDict[str, torch.Tensor]:
        """``features`` with the mask branch's pixel map of the normalised padded ``batch``
        added as ``features["pixels"]`` when its heads fuse one (``model.mask_pixel_channels``);
        ``features`` itself otherwise."""
        stem = self.roi_heads.mask_branch.pixel_stem
        if stem is None:
            return features
        return OrderedDict([*features.items(), (PIXELS, stem(batch))])

    def pixels(self, batch: torch.Tensor) -> torch.Tensor:
        """The transform's normalised batch ``[B, 3, H, W]`` back to RGB 0..255, with the
        transform's own mean and std (the one place the normalisation is defined)."""
        mean = batch.new_tensor(self.transform.image_mean)[None, :, None, None]
        std = batch.new_tensor(self.transform.image_std)[None, :, None, None]
        return (batch * std + mean) * 255.0

    @torch.no_grad()
    def refine(self, probs: torch.Tensor, boxes: torch.Tensor, pixels: torch.Tensor
               ) -> torch.Tensor:
        """``probs`` ``[N, 1, R, R]`` refined by the runtime's CRF (boxmask.runtime.crf.
        refine_boxes) on ``pixels`` (``[3, H', W']`` RGB 0..255 of the resized image, padding
        allowed), ``boxes`` ``[N, 4]`` xyxy in its coordinates: the masks the runtime serves
        for a model card with ``mask_refine: crf`` (``crf_wide``: ``crf_kernel`` "wide")."""
        from boxmask.runtime.crf import KERNELS, mask_refine_name, refine_boxes

        if probs.shape[0] == 0:
            return probs
        image = pixels.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        refined = refine_boxes(image, boxes.detach().float().cpu().numpy(),
                               probs[:, 0].detach().float().cpu().numpy(),
                               KERNELS[mask_refine_name(True, self.crf_kernel)])
        return torch.from_numpy(refined)[:, None].to(probs.device, probs.dtype)

    # -- the box-prompted path (set the image once, then decode boxes) --------------------
    def encode(self, image: torch.Tensor) -> tuple[OrderedDict[str, torch.Tensor], tuple[int, int]]:
        """One image ``[3, H, W]`` in [0, 1] -> FPN levels ``'0'..'3'`` (and ``'pixels'`` for
        pixel-fused mask heads) and the resized (h, w)."""
        features, resized, _ = self._encode(image)
        return features, resized

    def _encode(self, image: torch.Tensor
                ) -> tuple[OrderedDict[str, torch.Tensor], tuple[int, int], torch.Tensor]:
        """:meth:`encode`, and the transform's normalised padded batch ``[1, 3, H', W']``."""
        batch, _ = self.transform([image])
        features = self.backbone(batch.tensors)
        levels = OrderedDict((k, features[k]) for k in FPN_LEVELS)
        return self.with_pixels(levels, batch.tensors), batch.image_sizes[0], batch.tensors

    def detect_features(self, features: dict[str, torch.Tensor],
                        image_size: tuple[int, int] | tuple[torch.Tensor, torch.Tensor]
                        ) -> dict[str, torch.Tensor]:
        """Detections of one image from what :meth:`encode` returned: the automatic
        pre-annotation path, sharing the encoder (and its cache) with the box-prompted one.

        Args:
            features: FPN levels ``'0'..'3'`` of one image (batch of 1), as ``encode`` gives.
            image_size: the resized, unpadded (h, w) (ints, or 0-d tensors in an export).
        Returns:
            ``boxes [K, 4]`` (resized-image pixels), ``labels [K]``, ``scores [K]``,
            ``masks [K, 1, R, R]`` probabilities, as :meth:`forward` before pasting.
        """
        levels = [features[k] for k in FPN_LEVELS]
        names = list(FPN_LEVELS)
        # The levels the backbone adds above P5 (P6 for the RPN), recomputed from P5 exactly as
        # the FPN does, so the encoder need not export them.
        extra = getattr(getattr(self.backbone, "fpn", None), "extra_blocks", None)
        if extra is not None:
            levels, names = extra(levels, [], names)
        all_features = OrderedDict(zip(names, levels, strict=True))
        p2 = levels[0]
        # The anchor generator reads only the padded batch's shape: a 1-channel stand-in.
        padded = p2.new_zeros(()).expand(1, 1, p2.shape[-2] * FIRST_LEVEL_STRIDE,
                                         p2.shape[-1] * FIRST_LEVEL_STRIDE)
        batch = ImageList(padded, [image_size])  # type: ignore[list-item]
        proposals, _ = self.rpn(batch, all_features)
        if PIXELS in features:
            all_features[PIXELS] = features[PIXELS]
        detections, _ = self.roi_heads(all_features, proposals, batch.image_sizes)
        return detections[0]

    def resize_scale(self, image_size: tuple[int, int], resized: tuple[int, int]) -> torch.Tensor:
        """Per-axis factors (x, y) from original to resized pixels, as the transform uses."""
        return torch.tensor([resized[1] / image_size[1], resized[0] / image_size[0]])

    @torch.no_grad()
    def segment_boxes(self, images: list[torch.Tensor], boxes: list[torch.Tensor],
                      labels: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Masks for given boxes, pasted into each original image.

        Args:
            images (list[Tensor[3, H, W]]): in [0, 1].
            boxes (list[Tensor[N_i, 4]]): xyxy in original pixels.
            labels (list[Tensor[N_i]]): contiguous labels, 0 or None for "predict the class".
        Returns:
            list[Tensor[N_i, 1, H, W]]: mask probabilities.
        """
        out = []
        for i, (image, b) in enumerate(zip(images, boxes, strict=True)):
            h, w = int(image.shape[-2]), int(image.shape[-1])
            lab = labels[i] if labels is not None else torch.zeros(len(b), dtype=torch.int64)
            probs, _, _, resized = self._decode(image, b, lab)
            out.append(paste_masks(probs, b.float(), (h, w), self.paste_offset((h, w), resized)))
        return out

    def decode_in_image(self, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode one image and decode its boxes (original pixels).

        Returns mask probabilities ``[N, 1, R, R]``, class scores ``[N, C + 1]`` and labels
        ``[N]``.
        """
        probs, scores, used, _ = self._decode(image, boxes, labels)
        return probs, scores, used

    def _decode(self, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int]]:
        """:meth:`decode_in_image`, and the resized (h, w) the image was encoded at."""
        features, resized, batch = self._encode(image)
        scale = self.resize_scale((int(image.shape[-2]), int(image.shape[-1])), resized)
        scaled = boxes.float() * scale.to(boxes.device).repeat(2)[None]
        logits, scores, used = self.roi_heads.decode_boxes(features, scaled, labels.long(), resized)
        probs = logits.sigmoid()
        if self.served_crf:
            probs = self.refine(probs, scaled, self.pixels(batch)[0])
        return probs, scores, used, resized
