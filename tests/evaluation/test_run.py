"""`boxmask eval` end to end on a tiny random-init checkpoint and a tiny synthetic dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from boxmask.config import ConfigError, load_config
from boxmask.data.coco import load_coco
from boxmask.data.splits import resolve_seen
from boxmask.data.synthetic import generate
from boxmask.evaluation.evaluator import evaluate_predictions
from boxmask.model import build_model

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "synth_tiny_test.yaml"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("eval_run")
    data = root / "data"
    generate(data, seed=0, num_train=1, num_val=2, image_size=64)
    cfg = load_config(CONFIG, [
        f"data.train_annotations={data / 'annotations/instances_train.json'}",
        f"data.train_images={data / 'images/train'}",
        f"data.val_annotations={data / 'annotations/instances_val.json'}",
        f"data.val_images={data / 'images/val'}",
        "model.box_detections_per_img=10",
    ])
    cats = sorted(json.loads(cfg.data.train_annotations.read_text())["categories"],
                  key=lambda c: c["id"])
    seen = resolve_seen(cfg.data.seen, cats)
    categories = [{"id": c["id"], "name": c["name"], "seen": c["id"] in seen, "label": k + 1}
                  for k, c in enumerate(cats)]
    model = build_model(cfg.model, len(categories),
                        {c["label"] for c in categories if c["seen"]})
    path = root / "run" / "checkpoint_epoch001.pt"
    path.parent.mkdir()
    torch.save({"model": model.state_dict(), "config": cfg.model_dump(mode="json"),
                "categories": categories, "epoch": 1, "iteration": 2,
                "optimizer": {}, "lr_scheduler": {}}, path)
    return path, cfg


def test_eval_of_a_checkpoint_writes_report_detections_and_plots(tiny_checkpoint, tmp_path):
    from boxmask.evaluation.run import evaluate_checkpoint

    path, cfg = tiny_checkpoint
    out = tmp_path / "report"
    report = evaluate_checkpoint(path, out_dir=out, progress=False)
    saved = json.loads((out / "report.json").read_text())
    assert saved["checkpoint"] == str(path) and saved["epoch"] == 1
    assert saved["num_images"] == 2
    for name in ("overlap_ap.png", "false_positives.png", "box_prompted_iou.png"):
        assert (out / name).stat().st_size > 0
    coco_gt = load_coco(cfg.data.val_annotations)
    detections = json.loads((out / "detections.json").read_text())
    assert 0 < len(detections) <= 2 * 10  # random weights still detect; capped per image
    cat_ids = set(coco_gt.getCatIds())
    assert all(d["category_id"] in cat_ids for d in detections)
    # The written detections are exactly what was scored.
    seen = set(report["categories"]["seen"])
    again = evaluate_predictions(coco_gt, detections, seen)
    assert again["segm"]["unseen"] == saved["segm"]["unseen"]
    assert again["bbox"]["all"] == saved["bbox"]["all"]
    # One box-prompted mask per non-crowd instance, each with a confidence in [0, 1].
    prompted = json.loads((out / "box_prompted.json").read_text())
    instances = coco_gt.getAnnIds(iscrowd=False)
    assert sorted(p["ann_id"] for p in prompted) == sorted(instances)
    assert all(0.0 <= p["score"] <= 1.0 for p in prompted)
    bp = saved["box_prompted"]
    assert bp["num_instances"]["all"] == len(instances)
    assert 0.0 <= bp["mean_iou"]["all"] <= 1.0


def test_eval_refuses_a_config_that_does_not_fit_the_weights(tiny_checkpoint, tmp_path):
    from boxmask.evaluation.run import evaluate_checkpoint

    path, _ = tiny_checkpoint
    with pytest.raises(ConfigError, match="does not fit"):
        evaluate_checkpoint(path, out_dir=tmp_path, overrides=["model.fpn_channels=8"],
                            max_images=1, progress=False)


def test_eval_refuses_a_file_that_is_not_a_checkpoint(tmp_path):
    from boxmask.evaluation.run import evaluate_checkpoint

    bogus = tmp_path / "model.pt"
    torch.save({"weights": {}}, bogus)
    with pytest.raises(ConfigError, match="not a boxmask training checkpoint"):
        evaluate_checkpoint(bogus, out_dir=tmp_path)
