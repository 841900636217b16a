"""benchmarks/per_mask.py: the per-mask dump agrees with the evaluation's rasterisation, the
report groups and reads what the dump holds, the shift moves masks the way it says."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "per_mask.py"


@pytest.fixture(scope="module")
def bench():
    module = load_script(SCRIPT, "per_mask_bench")
    yield module
    sys.modules.pop("per_mask_bench", None)


def test_the_dump_holds_every_prompted_instance_and_the_boxes_iou_as_evaluated(
        bench, tiny_checkpoint, tmp_path, capsys) -> None:
    import torch
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    from boxmask.evaluation.box_prompted import box_as_mask_prompts

    out = tmp_path / "dump.npz"
    assert bench.main(["dump", str(tiny_checkpoint), str(out), "--max-images", "3"]) == 0
    assert not list(tmp_path.glob("*.partial*"))
    d = np.load(out)
    n = len(d["iou"])
    assert n > 0
    for key in ("probs", "teacher", "colours", "iou_fit", "iou_unguarded", "iou_crf", "review_crf", "iou_teacher",
                "box_iou", "seen", "cat", "review", "head", "class_prob", "fallback"):
        assert len(d[key]) == n, key
    r = d["probs"].shape[-1]
    assert d["probs"].shape == d["teacher"].shape == (n, r, r)
    assert d["colours"].shape[1] > r  # the ring around the box
    for key in ("iou", "iou_fit", "iou_unguarded", "iou_teacher", "box_iou", "review",
                "review_crf"):
        assert ((d[key] >= 0) & (d[key] <= 1)).all(), key
    assert ((d["iou_crf"] >= 0) & (d["iou_crf"] <= 1)).all()
    # The tiny model serves neither the guard nor the fit: those columns are the mask's own.
    np.testing.assert_array_equal(d["iou_unguarded"], d["iou"])

    # The box's IoU is the evaluation's box-as-mask baseline's, mask for mask.
    raw = torch.load(tiny_checkpoint, map_location="cpu", weights_only=False)
    coco = COCO(raw["config"]["data"]["val_annotations"])
    ids = sorted(coco.imgs)[:3]
    expected = []
    for image_id in ids:
        for prompt in box_as_mask_prompts(coco, [image_id]):
            gt = coco.annToRLE(coco.anns[prompt["ann_id"]])
            expected.append(float(mask_utils.iou([prompt["segmentation"]], [gt], [0])[0, 0]))
    np.testing.assert_allclose(d["box_iou"], expected, atol=1e-6)

    assert bench.main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"{n} masks" in text and "| unseen |" in text and "| seen |" in text

    assert bench.main(["shift", str(tiny_checkpoint), "--max-images", "2"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| all")]
    assert len(rows) <= 1  # none when no mask of the tiny model is non-empty


def test_the_dump_serves_the_weights_as_asked_and_refuses_a_training_setting(
        bench, tiny_checkpoint, tmp_path) -> None:
    out = tmp_path / "guarded.npz"
    assert bench.main(["dump", str(tiny_checkpoint), str(out), "--max-images", "1",
                       "--serve", "served_box_guard=expected_iou"]) == 0
    d = np.load(out)
    # A mask served as its box is the guard's; the column beside it is the same weights'
    # own mask, and only those masks differ.
    changed = d["iou"] != d["iou_unguarded"]
    assert not (changed & ~d["fallback"]).any()
    with pytest.raises(SystemExit, match=r"not a model\.served_"):
        bench.main(["dump", str(tiny_checkpoint), str(out), "--serve", "mode=oracle"])
    with pytest.raises(SystemExit):
        bench.main(["dump", str(tiny_checkpoint), str(out), "--serve", "served_box_guard"])


def _synthetic_dump(path: Path) -> None:
    """Two categories: 'slab' (unseen; four masks, one per band of the box's IoU, the whole one
    with a frame of background and served as its box by the guard) and 'disc' (seen)."""
    r = 12
    framed = np.zeros((r, r), dtype=np.float32)
    framed[2:-2, 2:-2] = 1.0
    full = np.ones((r, r), dtype=np.float32)
    probs = np.stack([framed, full, full, full, full])
    np.savez(path, names=np.array(["1:slab", "2:disc"]), probs=probs, teacher=probs,
             colours=np.zeros((5, r + 4, r + 4, 3), dtype=np.float32),
             iou=np.array([0.8, 0.9, 0.6, 0.3, 0.5]),
             iou_fit=np.array([0.8, 0.9, 0.6, 0.3, 0.5]),
             iou_unguarded=np.array([0.8, 0.6, 0.6, 0.3, 0.5]),
             iou_teacher=np.array([0.7, 0.5, 0.5, 0.2, 0.4]),
             box_iou=np.array([0.99, 0.97, 0.6, 0.4, 0.5]),
             seen=np.array([False, False, False, False, True]), cat=np.array([1, 1, 1, 1, 2]),
             review=np.full(5, 0.5), head=np.full(5, np.nan), class_prob=np.full(5, 0.9),
             fallback=np.array([False, True, False, False, False]))


def test_the_report_groups_a_category_by_its_boxes_iou_and_reads_the_frame(
        bench, tmp_path) -> None:
    path = tmp_path / "d.npz"
    _synthetic_dump(path)
    text = bench.report(path, ["slab"])
    slab = next(line for line in text.splitlines() if line.startswith("| slab*"))
    cells = [c.strip() for c in slab.split("|")[1:-1]]
    # masks, box, mask, mask - box, served fit, CRF (not in this dump), teacher, served as box,
    # their gain
    assert cells[1:10] == ["4", "74.0", "65.0", "-9.0", "65.0", "-", "47.5", "1", "+30.0"]
    bands = {line.split("|")[1].strip(): line.split("|")[2].strip()
             for line in text.splitlines() if line.startswith("| 0.")}
    assert bands == {"0.00 to 0.50": "1", "0.50 to 0.70": "1", "0.95 and above": "2"}
    frame = next(line for line in text.splitlines() if line.startswith("| mask |"))
    interior, ring, ring_on = (c.strip() for c in frame.split("|")[2:5])
    # Whole ones: one framed (interior 1, rings 0), one full: the rings half on.
    assert (interior, ring, ring_on) == ("1.00", "0.50", "50 %")
    with pytest.raises(SystemExit, match="no category 'cube'"):
        bench.report(path, ["cube"])


def test_frame_stats_reads_each_side(bench) -> None:
    probs = np.zeros((1, 10, 10), dtype=np.float32)
    probs[0, 2:, :] = 1.0  # everything but the top two rows
    f = bench.frame_stats(probs)
    assert f["top_on"] == 0.0 and f["bottom_on"] == 1.0
    assert f["left_on"] == f["right_on"] == pytest.approx(0.8)
    assert f["interior"] == 1.0


def test_shifted_moves_a_mask_and_drops_what_leaves_the_plane(bench) -> None:
    mask = np.zeros((4, 5), dtype=bool)
    mask[0, 1] = mask[3, 4] = True
    down = bench._shifted(mask, 1, 0)
    assert down[1, 1] and down.sum() == 1  # the bottom-right cell left the plane
    left = bench._shifted(mask, 0, -1)
    assert left[0, 0] and left[3, 3] and left.sum() == 2
    right = bench._shifted(mask, 0, 1)
    assert right[0, 2] and right.sum() == 1
    up = bench._shifted(mask, -1, 0)
    assert up[2, 4] and up.sum() == 1
