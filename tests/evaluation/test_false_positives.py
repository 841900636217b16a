"""False positives are attributed to background, seen objects or unseen objects."""

from __future__ import annotations

from boxmask.evaluation.evaluator import evaluate_predictions
from tests.evaluation.coco_scenes import (
    CATEGORIES,
    ann_from_mask,
    det_from_mask,
    make_coco,
    rect_mask,
)


def scene():
    h = w = 48
    anns = [
        ann_from_mask(1, 1, 1, rect_mask(h, w, 0, 0, 12, 12)),     # seen disc
        ann_from_mask(2, 1, 2, rect_mask(h, w, 20, 0, 32, 12)),    # unseen star
        ann_from_mask(3, 2, 3, rect_mask(h, w, 10, 10, 30, 30)),   # seen ring, image 2
    ]
    images = [{"id": i, "height": h, "width": w, "file_name": f"{i}.png"} for i in (1, 2)]
    return make_coco(images, anns, CATEGORIES), (h, w)


def test_false_positives_go_to_the_object_they_overlap_most():
    coco_gt, (h, w) = scene()
    dets = [
        det_from_mask(1, 1, rect_mask(h, w, 0, 0, 12, 12), 0.9),    # TP on the disc
        det_from_mask(1, 2, rect_mask(h, w, 0, 0, 12, 12), 0.8),    # star on the disc -> seen
        det_from_mask(1, 1, rect_mask(h, w, 21, 1, 33, 13), 0.7),   # disc on the star -> unseen
        det_from_mask(1, 1, rect_mask(h, w, 2, 30, 12, 40), 0.6),   # disc on nothing -> background
        det_from_mask(2, 3, rect_mask(h, w, 10, 10, 30, 30), 0.95),  # TP on the ring
        det_from_mask(2, 3, rect_mask(h, w, 12, 12, 32, 32), 0.9),  # duplicate ring -> seen
        det_from_mask(2, 2, rect_mask(h, w, 40, 40, 48, 48), 0.2),  # low score -> background
        # Touches the star (mask IoU 12/300 = 0.04 < 0.1): background.
        det_from_mask(1, 3, rect_mask(h, w, 31, 0, 45, 20), 0.55),
    ]
    report = evaluate_predictions(coco_gt, dets, {1, 3}, iou_types=("segm",),
                                  fp_score_threshold=0.5)
    fp = report["false_positives"]
    assert fp["iou_type"] == "segm" and fp["iou_threshold"] == 0.5
    top = fp["thresholded"]
    assert top["score_threshold"] == 0.5
    assert top["counts"] == {"background": 2, "seen": 2, "unseen": 1}
    assert top["total"] == 5
    # By the side of the *predicted* category: the star detection is the only unseen one.
    assert top["by_predicted"]["unseen"]["counts"] == {"background": 0, "seen": 1, "unseen": 0}
    everything = fp["all_scores"]
    assert everything["score_threshold"] is None
    assert everything["counts"] == {"background": 3, "seen": 2, "unseen": 1}
    assert abs(sum(v for v in everything["shares"].values()) - 1.0) < 1e-9


def test_box_false_positives_use_box_iou():
    coco_gt, (h, w) = scene()
    # An L-shaped mask whose box equals the disc's box but whose mask IoU with it is low.
    ell = rect_mask(h, w, 0, 0, 12, 1) | rect_mask(h, w, 0, 0, 1, 12)
    dets = [det_from_mask(1, 2, ell, 0.9)]
    report = evaluate_predictions(coco_gt, dets, {1, 3}, iou_types=("bbox", "segm"))
    assert report["false_positives"]["iou_type"] == "bbox"
    assert report["false_positives"]["thresholded"]["counts"]["seen"] == 1
    segm_first = evaluate_predictions(coco_gt, dets, {1, 3}, iou_types=("segm",))
    # Mask IoU 23/144 = 0.16 still reaches 0.1: the mask hits the disc too.
    assert segm_first["false_positives"]["thresholded"]["counts"]["seen"] == 1
