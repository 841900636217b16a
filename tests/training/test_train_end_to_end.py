"""A tiny run through `train()`: real synthetic data, the real model, every artefact on disk."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from boxmask.model.checkpoint import load_checkpoint
from boxmask.training.metrics import read_metrics
from boxmask.training.trainer import train


def test_tiny_training_loss_falls(tiny_cfg, tmp_path: Path) -> None:
    from boxmask.data.synthetic import generate

    # Two images in one batch every step, no flips, a constant rate after a 1-step warm-up:
    # a working loop must fit them.
    data = tmp_path / "two"
    generate(data, seed=1, num_train=2, num_val=1, image_size=64)
    cfg = tiny_cfg(f"data.train_annotations={data / 'annotations' / 'instances_train.json'}",
                   f"data.train_images={data / 'images' / 'train'}",
                   "train.epochs=10", "train.max_iters_per_epoch=1", "train.batch_size=2",
                   "data.horizontal_flip=0", "train.warmup_iters=1", "train.lr_steps=[]",
                   "train.lr=0.01")
    train(cfg)
    losses = [r["loss"] for r in read_metrics(Path(cfg.train.output_dir) / "metrics.jsonl")]
    assert len(losses) == 10
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:2]) / 2, losses


def test_run_writes_config_metrics_and_contract_checkpoints(tiny_cfg) -> None:
    cfg = tiny_cfg("train.epochs=2", "train.max_iters_per_epoch=2")
    last = train(cfg)
    out = Path(cfg.train.output_dir)
    assert last == out / "checkpoint_last.pt"
    assert {p.name for p in out.glob("checkpoint_*.pt")} == {
        "checkpoint_epoch001.pt", "checkpoint_epoch002.pt", "checkpoint_last.pt"}
    assert not list(out.glob("*.tmp"))  # atomic writes leave nothing behind

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 2
    assert Path(saved["data"]["train_annotations"]).is_absolute()  # resolved paths

    records = read_metrics(out / "metrics.jsonl", kind=None)
    iters = [r for r in records if r["kind"] == "iter"]
    assert [r["iteration"] for r in iters] == [1, 2, 3, 4]
    assert [r["epoch"] for r in iters] == [1, 1, 2, 2]
    for r in iters:
        assert {"lr", "loss", "loss_classifier", "loss_box_reg", "loss_objectness",
                "loss_rpn_box_reg", "loss_mask_teacher", "loss_mask_student",
                "time_per_iter", "data_time"} <= r.keys()
        assert abs(r["loss"] - sum(v for k, v in r.items() if k.startswith("loss_"))) < 1e-4
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2]

    ckpt = load_checkpoint(last)
    assert {"model", "config", "categories", "epoch", "iteration", "optimizer", "lr_scheduler",
            "scaler", "rng"} <= ckpt.keys()
    assert (ckpt["epoch"], ckpt["iteration"]) == (2, 4)
    assert ckpt["config"]["model"]["mode"] == "teacher_student"
    json.dumps(ckpt["config"])  # JSON-able, as the exporter copies it into model.json
    cats = ckpt["categories"]
    assert [c["label"] for c in cats] == list(range(1, 9))
    assert {c["name"] for c in cats if c["seen"]} == {"disc", "square", "triangle", "cross"}
    assert {c["name"] for c in cats if not c["seen"]} == {"ring", "star", "crescent", "hexagon"}
    epoch1 = torch.load(out / "checkpoint_epoch001.pt", map_location="cpu", weights_only=True)
    assert epoch1["epoch"] == 1 and epoch1["iteration"] == 2


def test_oracle_trains_on_every_mask_but_keeps_the_split_for_evaluation(tiny_cfg) -> None:
    from boxmask.training.trainer import build_training_data

    cfg = tiny_cfg("model.mode=oracle")
    data = build_training_data(cfg)
    assert data.mask_labels == set(range(1, 9))
    assert {c["name"] for c in data.categories if not c["seen"]} == {
        "ring", "star", "crescent", "hexagon"}
    _image, target = data.dataset[0]
    assert bool(target["mask_valid"].all())  # unseen masks decoded for the oracle only

    ts = build_training_data(tiny_cfg())
    assert ts.mask_labels == {1, 2, 3, 4}
