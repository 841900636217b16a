"""Box-prompted masks are scored by mask IoU and mask AP, overall and per overlap bin."""

from __future__ import annotations

import pytest

from boxmask.evaluation.evaluator import evaluate_predictions
from tests.evaluation.coco_scenes import CATEGORIES, ann_from_mask, make_coco, rect_mask, rle


def scene():
    h = w = 40
    anns = [
        ann_from_mask(1, 1, 1, rect_mask(h, w, 0, 0, 10, 10)),     # seen, O = 0.5
        ann_from_mask(2, 1, 2, rect_mask(h, w, 5, 0, 15, 10)),     # unseen, O = 0.5
        ann_from_mask(3, 1, 1, rect_mask(h, w, 25, 25, 35, 35)),   # seen, O = 0
        ann_from_mask(4, 2, 2, rect_mask(h, w, 0, 0, 20, 20)),     # unseen, O = 0, image 2
        ann_from_mask(5, 2, 1, rect_mask(h, w, 30, 30, 40, 40), iscrowd=1),  # never prompted
    ]
    images = [{"id": i, "height": h, "width": w, "file_name": f"{i}.png"} for i in (1, 2)]
    return make_coco(images, anns, CATEGORIES), (h, w)


def test_mean_iou_and_mask_ap_of_box_prompted_masks():
    coco_gt, (h, w) = scene()
    prompted = [
        {"ann_id": 1, "segmentation": rle(rect_mask(h, w, 0, 0, 10, 10)), "score": 0.9},
        # Half the star: IoU exactly 0.5, which COCO's IoU 0.5 threshold still matches.
        {"ann_id": 2, "segmentation": rle(rect_mask(h, w, 5, 0, 10, 10)), "score": 0.8},
        {"ann_id": 3, "segmentation": rle(rect_mask(h, w, 25, 25, 35, 30)), "score": 0.7},
        # Instance 4 gets no mask: it counts as IoU 0 and as a missed instance.
    ]
    report = evaluate_predictions(coco_gt, [], {1}, iou_types=("segm",), box_prompted=prompted)
    bp = report["box_prompted"]
    assert bp["num_instances"] == {"all": 4, "seen": 2, "unseen": 2}
    assert bp["num_prompted"] == 3
    assert bp["mean_iou"]["seen"] == pytest.approx((1.0 + 0.5) / 2)
    assert bp["mean_iou"]["unseen"] == pytest.approx((0.5 + 0.0) / 2)
    assert bp["mean_iou"]["all"] == pytest.approx(2.0 / 4)
    # COCO samples precision at 101 recall points: recall 0.5 at precision 1 gives 51/101.
    half = 51 / 101
    # Seen: one perfect mask, one at IoU 0.5 -> AP50 = 1, AP75 = recall 0.5 at precision 1.
    assert bp["mask_ap"]["seen"]["AP50"] == pytest.approx(1.0)
    assert bp["mask_ap"]["seen"]["AP75"] == pytest.approx(half)
    # Unseen: IoU 0.5 on one of two instances -> recall 0.5 at IoU 0.5, nothing above.
    assert bp["mask_ap"]["unseen"]["AP50"] == pytest.approx(half)
    assert bp["mask_ap"]["unseen"]["AP75"] == 0.0
    # The overlapped subset holds instances 1 and 2 only.
    ov = bp["overlapped"]
    assert ov["num_instances"] == {"all": 2, "seen": 1, "unseen": 1}
    assert ov["mean_iou"] == {"all": pytest.approx(0.75), "seen": pytest.approx(1.0),
                              "unseen": pytest.approx(0.5)}
    assert ov["mask_ap"]["seen"]["AP"] == pytest.approx(1.0)
    # Per bin: O = 0 and O = 0.5 instances.
    bins = {(b["lo"], b["hi"]): b for b in bp["by_overlap_bin"]}
    assert bins[(0.0, 0.1)]["mean_iou"]["seen"] == pytest.approx(0.5)
    assert bins[(0.0, 0.1)]["mean_iou"]["unseen"] == 0.0
    assert bins[(0.5, 0.7)]["mean_iou"]["all"] == pytest.approx(0.75)
    assert bins[(0.7, 1.0001)]["num_instances"]["all"] == 0
    assert bins[(0.7, 1.0001)]["mean_iou"]["all"] is None
    hist = bp["iou_histogram"]
    assert sum(hist["seen"]) == 2 and sum(hist["unseen"]) == 2
    assert hist["seen"][-1] == 1  # the perfect mask lands in the last bin [0.95, 1.0]


def test_masks_for_unknown_instances_are_refused():
    coco_gt, (h, w) = scene()
    with pytest.raises(ValueError, match="unknown annotation ids"):
        evaluate_predictions(coco_gt, [], {1}, iou_types=("segm",),
                             box_prompted=[{"ann_id": 99, "segmentation": rle(rect_mask(h, w, 0, 0, 2, 2))}])


def test_every_box_prompted_figure_comes_with_the_box_as_mask_and_the_margin_over_it():
    h = w = 40
    l_shape = rect_mask(h, w, 0, 0, 10, 10)
    l_shape[5:, 5:] = False  # a 10x10 box holding 75 mask pixels: the box scores IoU 0.75
    ring = rect_mask(h, w, 20, 20, 40, 40)
    ring[25:35, 25:35] = False  # 300 of 400 box pixels
    anns = [ann_from_mask(1, 1, 1, l_shape),  # seen, alone in its box
            ann_from_mask(2, 1, 2, ring)]     # unseen
    images = [{"id": 1, "height": h, "width": w, "file_name": "1.png"}]
    coco_gt = make_coco(images, anns, CATEGORIES)
    prompted = [{"ann_id": 1, "segmentation": rle(l_shape), "score": 0.9},     # exact
                {"ann_id": 2, "segmentation": rle(rect_mask(h, w, 20, 20, 40, 30)), "score": 0.5}]
    bp = evaluate_predictions(coco_gt, [], {1}, iou_types=("segm",),
                              box_prompted=prompted)["box_prompted"]
    box = bp["box_baseline"]
    assert box["num_prompted"] == 2
    assert box["mean_iou"]["seen"] == pytest.approx(0.75)
    assert box["mean_iou"]["unseen"] == pytest.approx(0.75)
    # The model's unseen mask (top half of the ring's box): 150 / (200 + 300 - 150) = 3/7.
    assert bp["mean_iou"]["unseen"] == pytest.approx(3 / 7)
    margin = bp["margin_over_box"]
    assert margin["mean_iou"]["seen"] == pytest.approx(0.25)
    assert margin["mean_iou"]["unseen"] == pytest.approx(3 / 7 - 0.75)
    assert margin["mean_iou"]["all"] == pytest.approx((1 + 3 / 7) / 2 - 0.75)
    # Mask AP of the box: IoU 0.75 matches at thresholds 0.50..0.75 (6 of 10) -> AP 0.6.
    assert box["mask_ap"]["seen"]["AP"] == pytest.approx(0.6)
    assert margin["mask_ap"]["seen"] == pytest.approx(bp["mask_ap"]["seen"]["AP"] - 0.6)
    assert set(margin["overlapped"]) == {"mean_iou", "mask_ap"}


def test_box_prompted_figures_per_category_beside_the_box():
    """A mean over a split can hide one category that does worse than the box: each category
    gets its own mean IoU (all and overlapped instances), the box's, and the margin."""
    coco_gt, (h, w) = scene()
    prompted = [
        {"ann_id": 1, "segmentation": rle(rect_mask(h, w, 0, 0, 10, 10))},   # IoU 1
        {"ann_id": 2, "segmentation": rle(rect_mask(h, w, 5, 0, 10, 10))},   # IoU 0.5, O = 0.5
        {"ann_id": 3, "segmentation": rle(rect_mask(h, w, 25, 25, 35, 30))},  # IoU 0.5
        {"ann_id": 4, "segmentation": rle(rect_mask(h, w, 0, 0, 20, 10))},   # IoU 0.5
    ]
    bp = evaluate_predictions(coco_gt, [], {1}, iou_types=("segm",),
                              box_prompted=prompted)["box_prompted"]
    cats = {c["id"]: c for c in bp["by_category"]}
    assert cats[1]["seen"] and not cats[2]["seen"]
    assert cats[1]["num_instances"] == 2 and cats[1]["num_overlapped"] == 1
    assert cats[1]["mean_iou"] == pytest.approx(0.75)
    assert cats[1]["overlapped_mean_iou"] == pytest.approx(1.0)
    assert cats[2]["mean_iou"] == pytest.approx(0.5)
    assert cats[2]["overlapped_mean_iou"] == pytest.approx(0.5)
    # Every instance here is its box, so the box scores 1 and both categories fall below it.
    box = {c["id"]: c for c in bp["box_baseline"]["by_category"]}
    assert box[1]["mean_iou"] == pytest.approx(1.0) and box[2]["mean_iou"] == pytest.approx(1.0)
    margin = bp["margin_over_box"]["by_category"]
    assert margin[cats[1]["name"]] == pytest.approx(-0.25)
    assert margin[cats[2]["name"]] == pytest.approx(-0.5)
