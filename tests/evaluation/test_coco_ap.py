"""Our AP is pycocotools' AP; overlap subsets ignore instances the way COCO ignores crowds."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from boxmask.evaluation.evaluator import evaluate_predictions
from boxmask.evaluation.subset_eval import SubsetCOCOeval, coco_results
from tests.evaluation.coco_scenes import (
    CATEGORIES,
    ann_from_mask,
    det_from_mask,
    make_coco,
    rect_mask,
)


def pycocotools_stats(coco_gt, dets, iou_type, cat_ids=None):
    coco_dt = coco_results(coco_gt, dets, iou_type)
    ev = COCOeval(coco_gt, coco_dt, iou_type)
    if cat_ids is not None:
        ev.params.catIds = sorted(cat_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_ap_on_every_category_equals_pycocotools_exactly(random_scene, iou_type):
    coco_gt, dets, _ = random_scene
    ours = SubsetCOCOeval(coco_gt, coco_results(coco_gt, dets, iou_type), iou_type)
    stats = ours.evaluate_subset(coco_gt.getCatIds())
    reference = pycocotools_stats(coco_gt, dets, iou_type)
    assert 0.0 < reference[0] < 1.0  # the scene is neither trivial nor hopeless
    np.testing.assert_array_equal(stats, reference)


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_seen_and_unseen_ap_equal_pycocotools_with_cat_ids(random_scene, iou_type):
    coco_gt, dets, seen = random_scene
    unseen = set(coco_gt.getCatIds()) - seen
    ours = SubsetCOCOeval(coco_gt, coco_results(coco_gt, dets, iou_type), iou_type)
    # One IoU pass, then each side in turn (and back), as the report does.
    for cats in (seen, unseen, seen, set(coco_gt.getCatIds())):
        np.testing.assert_array_equal(ours.evaluate_subset(cats),
                                      pycocotools_stats(coco_gt, dets, iou_type, cats))


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_one_matching_pass_gives_each_category_set_its_pycocotools_ap(random_scene, iou_type):
    coco_gt, dets, seen = random_scene
    sets = {"all": set(coco_gt.getCatIds()), "seen": seen, "unseen": {2}}
    ours = SubsetCOCOeval(coco_gt, coco_results(coco_gt, dets, iou_type), iou_type)
    for name, stats in ours.evaluate_subsets(sets).items():
        np.testing.assert_array_equal(stats, pycocotools_stats(coco_gt, dets, iou_type, sets[name]))


def test_report_ap_matches_pycocotools(random_scene):
    coco_gt, dets, seen = random_scene
    report = evaluate_predictions(coco_gt, dets, seen)
    for iou_type in ("segm", "bbox"):
        assert report[iou_type]["all"]["AP"] == pytest.approx(
            pycocotools_stats(coco_gt, dets, iou_type)[0], abs=0)
        assert report[iou_type]["unseen"]["AP50"] == pytest.approx(
            pycocotools_stats(coco_gt, dets, iou_type, {2})[1], abs=0)


def overlap_scene():
    """Instance 1 (disc) is covered half by instance 2 (star, O = 0.5); instance 3 (disc)
    stands alone (O = 0)."""
    h = w = 40
    anns = [
        ann_from_mask(1, 1, 1, rect_mask(h, w, 0, 0, 10, 10)),
        ann_from_mask(2, 1, 2, rect_mask(h, w, 5, 0, 15, 10)),
        ann_from_mask(3, 1, 1, rect_mask(h, w, 25, 25, 35, 35)),
    ]
    images = [{"id": 1, "height": h, "width": w, "file_name": "1.png"}]
    return make_coco(images, anns, CATEGORIES), (h, w)


def test_detection_on_a_non_overlapped_instance_is_no_false_positive_in_the_overlapped_subset():
    coco_gt, (h, w) = overlap_scene()
    dets = [
        # The best-scored disc is the isolated instance 3: a true positive in plain COCO,
        # outside the O >= 0.3 subset.
        det_from_mask(1, 1, rect_mask(h, w, 25, 25, 35, 35), 0.9),
        det_from_mask(1, 1, rect_mask(h, w, 0, 0, 10, 10), 0.8),
    ]
    report = evaluate_predictions(coco_gt, dets, {1}, iou_types=("segm",))
    assert report["overlap"]["num_overlapped"] == {"all": 2, "seen": 1, "unseen": 1}
    assert report["segm"]["seen"]["AP"] == pytest.approx(1.0)
    # Had the detection of instance 3 counted as a false positive ahead of the true positive,
    # precision at full recall would be 0.5.
    assert report["segm"]["overlapped"]["seen"]["AP"] == pytest.approx(1.0)
    # In the bin of instance 3 (O < 0.1) the detection of instance 1 is ignored the same way.
    low = report["segm"]["by_overlap_bin"][0]
    assert (low["lo"], low["hi"]) == (0.0, 0.1)
    assert low["ap"]["seen"]["AP"] == pytest.approx(1.0)
    # No star detected: the star is in the overlapped subset and gets AP 0.
    assert report["segm"]["overlapped"]["unseen"]["AP"] == 0.0


def test_unmatched_detection_counts_only_in_the_subset_its_box_falls_in():
    coco_gt, (h, w) = overlap_scene()
    dets = [
        # A disc on empty background (its box overlaps no object: O = 0), best scored.
        det_from_mask(1, 1, rect_mask(h, w, 20, 0, 30, 8), 0.95),
        det_from_mask(1, 1, rect_mask(h, w, 25, 25, 35, 35), 0.9),
        det_from_mask(1, 1, rect_mask(h, w, 0, 0, 10, 10), 0.8),
    ]
    report = evaluate_predictions(coco_gt, dets, {1}, iou_types=("segm",))
    # Plain COCO counts it: a false positive ranked first lowers AP.
    assert report["segm"]["seen"]["AP"] == pytest.approx(
        pycocotools_stats(coco_gt, dets, "segm", {1})[0], abs=0)
    assert report["segm"]["seen"]["AP"] < 0.7
    # The overlapped subset ignores it (O = 0 lies outside O >= 0.3) ...
    assert report["segm"]["overlapped"]["seen"]["AP"] == pytest.approx(1.0)
    # ... and the low-overlap bin counts it: one FP before the single TP -> precision 1/2.
    assert report["segm"]["by_overlap_bin"][0]["ap"]["seen"]["AP"] == pytest.approx(0.5)


def test_instances_fall_into_their_overlap_bins():
    coco_gt, _ = overlap_scene()
    report = evaluate_predictions(coco_gt, [], {1}, iou_types=("bbox",),
                                  overlap_bins=[0.0, 0.1, 0.3, 0.5, 0.7, 1.0001])
    per_bin = [b["all"] for b in report["overlap"]["num_per_bin"]]
    # O: instance 1 -> 0.5 (half its box is star), instance 2 -> 0.5, instance 3 -> 0.
    assert per_bin == [1, 0, 0, 2, 0]
    assert report["bbox"]["all"]["AP"] == 0.0
    assert report["num_detections"] == 0


def test_seen_ids_outside_the_ground_truth_are_refused(random_scene):
    coco_gt, dets, _ = random_scene
    with pytest.raises(ValueError, match="seen category ids"):
        evaluate_predictions(coco_gt, dets, {99})


def test_a_detection_scores_overlap_like_the_instance_it_lies_on():
    from boxmask.evaluation.instance_overlap import detection_overlaps, gt_overlaps

    coco_gt, (h, w) = overlap_scene()
    assert gt_overlaps(coco_gt) == pytest.approx({1: 0.5, 2: 0.5, 3: 0.0})
    dets = [
        det_from_mask(1, 2, rect_mask(h, w, 0, 0, 10, 10), 0.9),    # on instance 1 -> its O
        det_from_mask(1, 1, rect_mask(h, w, 20, 0, 30, 8), 0.9),    # on nothing -> 0
        det_from_mask(1, 1, rect_mask(h, w, 0, 0, 20, 10), 0.9),    # spans 1 and 2: best IoU is 1
    ]
    # The third box (200 px) is about instance 1 (IoU 0.5 vs 0.5: first wins); the star covers
    # 100 px of it -> 0.5.
    assert detection_overlaps(coco_gt, dets) == pytest.approx({1: 0.5, 2: 0.0, 3: 0.5})
