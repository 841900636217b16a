"""COCO AP restricted to a set of categories and to a subset of the ground-truth instances.

pycocotools' ``COCOeval`` already knows how to leave ground truth out of a score without
pretending it is not there: crowd regions and instances outside the area range are *ignored*.
A detection matched to an ignored instance is neither a true nor a false positive, an ignored
instance is not counted among the positives (it cannot lower recall), and a detection left
unmatched is dropped only if it itself lies outside the range (its own area, for area ranges).

:class:`SubsetCOCOeval` applies the same rule to any instance subset, here the overlap subsets
(``O >= 0.3``, the overlap bins):

- instances outside the subset get ``ignore = 1`` before matching, exactly like a crowd
  annotation does in ``COCOeval._prepare`` (matching still prefers non-ignored instances);
- an unmatched detection is ignored when its own overlap score lies outside the subset's range
  (the analogue of COCO ignoring an unmatched detection whose area is outside the area range);
  without this, every background false positive of the dataset would count against every bin,
  and bins with few instances would look worse only for having few instances.

IoUs are computed once per image and category; every subset evaluation reuses them, so the
seen / unseen / all x overlap-bin grid costs one IoU pass plus cheap re-matching.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Collection, Iterable, Mapping

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# The order of COCOeval.stats for boxes and masks (the first six are the AP numbers).
STAT_NAMES: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)
AP_NAMES: tuple[str, ...] = STAT_NAMES[:6]


def stats_to_dict(stats: Iterable[float], names: Iterable[str] = AP_NAMES) -> dict[str, float | None]:
    """Name COCOeval stats; COCO's ``-1`` ("no ground truth in this setting") becomes ``None``."""
    out: dict[str, float | None] = {}
    for name, value in zip(names, stats, strict=False):
        out[name] = None if value < 0 else float(value)
    return out


class SubsetCOCOeval(COCOeval):
    """``COCOeval`` that evaluates many (categories, instance subset) pairs on one IoU pass.

    Args:
        coco_gt: ground truth.
        coco_dt: detections (``coco_gt.loadRes(...)``).
        iou_type: ``"segm"`` or ``"bbox"``.
        img_ids: images to evaluate (default: every image of ``coco_gt``).
    """

    def __init__(self, coco_gt: COCO, coco_dt: COCO, iou_type: str,
                 img_ids: Collection[int] | None = None) -> None:
        if iou_type not in ("segm", "bbox"):
            raise ValueError(f"iou_type must be 'segm' or 'bbox', got {iou_type!r}")
        super().__init__(coco_gt, coco_dt, iou_type)
        if img_ids is not None:
            self.params.imgIds = sorted(int(i) for i in img_ids)
        self._all_cat_ids: list[int] = sorted(coco_gt.getCatIds())
        self._ious_ready = False
        self._dt_outside: set[int] = set()
        self.last_subset_is_plain = False

    def _compute_ious(self) -> None:
        """``COCOeval.evaluate`` up to and including the IoUs, over every category."""
        p = self.params
        p.imgIds = [int(i) for i in np.unique(p.imgIds)]
        p.catIds = list(self._all_cat_ids)
        p.maxDets = sorted(p.maxDets)
        self._prepare()
        self.ious = {(img_id, cat_id): self.computeIoU(img_id, cat_id)
                     for img_id in p.imgIds for cat_id in p.catIds}
        self._ious_ready = True

    def evaluateImg(self, imgId, catId, aRng, maxDet):
        result = super().evaluateImg(imgId, catId, aRng, maxDet)
        if result is None or not self._dt_outside:
            return result
        # Unmatched detections outside the subset are ignored, as COCOeval does for area.
        outside = np.array([d in self._dt_outside for d in result["dtIds"]], dtype=bool)
        unmatched = result["dtMatches"] == 0
        result["dtIgnore"] = np.logical_or(result["dtIgnore"], unmatched & outside[None, :])
        return result

    def evaluate_subsets(self, cat_sets: Mapping[str, Collection[int]],
                         keep_gt: Collection[int] | None = None,
                         dt_outside: Collection[int] | None = None,
                         area_ranges: bool = True) -> dict[str, np.ndarray]:
        """AP/AR stats (``COCOeval.stats``, 12 numbers) of one instance subset, per category set.

        Matching is per image and category, so it runs once over the union of the category
        sets; each set is then accumulated from its own categories' matches (the same numbers
        as a separate ``COCOeval`` run with ``params.catIds`` set to it).

        Args:
            cat_sets: ``{name: category ids}`` to average over (COCO's ``params.catIds``).
            keep_gt: annotation ids of the instances in the subset; every other instance is
                ignored. ``None`` keeps all (plain COCO evaluation).
            dt_outside: detection ids that lie outside the subset; they are ignored when they
                match no instance. ``None``: none.
            area_ranges: also evaluate COCO's small / medium / large ranges; without them the
                matching costs a quarter and ``APs/APm/APl`` (and ``ARs/m/l``) are ``-1``.

        Returns:
            ``{name: [12] float array}``; ``-1`` where the subset holds no instance.
        """
        if not self._ious_ready:
            self._compute_ious()
        sets = {name: sorted(int(c) for c in cats) for name, cats in cat_sets.items()}
        union = sorted(set().union(*sets.values())) if sets else []
        unknown = set(union) - set(self._all_cat_ids)
        if unknown:
            raise ValueError(f"category ids {sorted(unknown)} are not in the ground truth")
        keep = None if keep_gt is None else set(keep_gt)
        for anns in self._gts.values():
            for g in anns:
                # The same rule as COCOeval._prepare (crowd -> ignore), plus the subset.
                g["ignore"] = bool(g.get("iscrowd", 0)) or (keep is not None and g["id"] not in keep)
        self._dt_outside = set(dt_outside or ())
        p = copy.deepcopy(self.params)
        if not area_ranges:
            p.areaRng, p.areaRngLbl = p.areaRng[:1], p.areaRngLbl[:1]
        p.catIds = union
        self.params = p
        max_det = p.maxDets[-1]
        n_area, n_img = len(p.areaRng), len(p.imgIds)
        evaluated = [self.evaluateImg(img_id, cat_id, area, max_det)
                     for cat_id in union for area in p.areaRng for img_id in p.imgIds]
        self._dt_outside = set()
        position = {c: k for k, c in enumerate(union)}
        results: dict[str, np.ndarray] = {}
        for name, cats in sets.items():
            if not cats:
                results[name] = -np.ones(len(STAT_NAMES))
                continue
            # COCOeval.accumulate indexes evalImgs as [category][area][image].
            self.evalImgs = [e for c in cats for e in
                             evaluated[position[c] * n_area * n_img:(position[c] + 1) * n_area * n_img]]
            sub = copy.deepcopy(p)
            sub.catIds = cats
            self.params = self._paramsEval = sub
            with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress
                self.accumulate()
                self.summarize()
            results[name] = np.asarray(self.stats, dtype=np.float64)
        # Leave the matches of every category in place for per-detection analyses.
        self.evalImgs, self.params = evaluated, p
        self._paramsEval = copy.deepcopy(p)
        self.last_subset_is_plain = keep is None and not dt_outside and area_ranges
        return results

    def evaluate_subset(self, cat_ids: Collection[int], keep_gt: Collection[int] | None = None,
                        dt_outside: Collection[int] | None = None) -> np.ndarray:
        """:meth:`evaluate_subsets` for a single category set."""
        return self.evaluate_subsets({"cats": cat_ids}, keep_gt, dt_outside)["cats"]

    def per_image_results(self) -> list[dict]:
        """The ``evalImgs`` of the last subset (every category of it) for the ``all`` area range."""
        all_range = self.params.areaRng[0]
        return [e for e in self.evalImgs if e is not None and e["aRng"] == all_range]


def coco_results(coco_gt: COCO, detections: list[Mapping], iou_type: str) -> COCO:
    """``coco_gt.loadRes`` for one IoU type; accepts an empty list and does not print.

    Detections are COCO result dicts (``image_id``, ``category_id``, ``score``, ``bbox`` xywh
    and/or ``segmentation`` RLE). ``loadRes`` takes a result's area from its box when it has
    one, so mask results are stripped of their boxes (as detectron2 does) and box results of
    their masks; a mask-only result gets the box around its mask for box evaluation.
    """
    if iou_type not in ("segm", "bbox"):
        raise ValueError(f"iou_type must be 'segm' or 'bbox', got {iou_type!r}")
    results = []
    for det in detections:
        d = dict(det)
        if iou_type == "segm":
            if "segmentation" not in d:
                raise ValueError("mask evaluation needs a 'segmentation' in every detection")
            d.pop("bbox", None)
        else:
            if "bbox" not in d:
                if "segmentation" not in d:
                    raise ValueError("a detection needs a 'bbox' or a 'segmentation'")
                d["bbox"] = [float(v) for v in mask_utils.toBbox(d["segmentation"])]
            d.pop("segmentation", None)
        results.append(d)
    with contextlib.redirect_stdout(io.StringIO()):
        if not results:
            empty = COCO()
            empty.dataset = {"images": copy.deepcopy(coco_gt.dataset["images"]),
                             "categories": copy.deepcopy(coco_gt.dataset["categories"]),
                             "annotations": []}
            empty.createIndex()
            return empty
        return coco_gt.loadRes(results)
