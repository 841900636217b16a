"""The report is written as JSON and PNG plots and printed as tables."""

from __future__ import annotations

import io
import json

from rich.console import Console

from boxmask.evaluation.evaluator import evaluate_predictions
from boxmask.evaluation.plots import write_plots
from boxmask.evaluation.report import print_summary, write_json
from tests.evaluation.coco_scenes import rle


def full_report(random_scene):
    coco_gt, dets, seen = random_scene
    # Box-prompted masks: the ground-truth mask itself for every other instance.
    prompted = [{"ann_id": a["id"], "segmentation": rle(coco_gt.annToMask(a).astype(bool)),
                 "score": 1.0}
                for k, a in enumerate(coco_gt.dataset["annotations"])
                if not a["iscrowd"] and k % 2 == 0]
    return evaluate_predictions(coco_gt, dets, seen, box_prompted=prompted)


def test_plots_are_written_as_png(random_scene, tmp_path):
    report = full_report(random_scene)
    written = write_plots(report, tmp_path)
    assert sorted(p.name for p in written) == [
        "box_prompted_iou.png", "false_positives.png", "overlap_ap.png"]
    for p in written:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert p.stat().st_size > 5000  # a drawn figure, not an empty canvas


def test_report_round_trips_through_json_and_prints(random_scene, tmp_path):
    report = full_report(random_scene)
    path = write_json(report, tmp_path / "report.json")
    loaded = json.loads(path.read_text())
    assert loaded["segm"]["all"]["AP"] == report["segm"]["all"]["AP"]
    assert loaded["box_prompted"]["mean_iou"]["all"] == report["box_prompted"]["mean_iou"]["all"]
    buffer = io.StringIO()
    print_summary(loaded, Console(file=buffer, width=160))
    text = buffer.getvalue()
    for heading in ("Detection AP", "per overlap bin", "False positives", "Box-prompted"):
        assert heading in text
    assert f"{100 * report['segm']['unseen']['AP']:.1f}" in text
