"""benchmarks/pseudo_mask_quality.py: the IoU it reports, and a run on a real checkpoint."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "pseudo_mask_quality.py"


def _script():
    spec = importlib.util.spec_from_file_location("pseudo_mask_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_iou_on_hand_made_grids() -> None:
    iou = _script()._iou
    a = torch.zeros(3, 4, 4, dtype=torch.bool)
    b = torch.zeros(3, 4, 4, dtype=torch.bool)
    a[0, :2] = True          # 8 cells
    b[0, 1:3] = True         # 8 cells, 4 shared -> 4 / 12
    a[1, 0, 0] = True        # disjoint from an empty target -> 0
    # row 2: both empty -> 1
    assert torch.allclose(iou(a, b), torch.tensor([4 / 12, 0.0, 1.0]))


def test_measure_on_a_teacher_student_checkpoint(tiny_checkpoint: Path) -> None:
    script = _script()
    r = script.measure(tiny_checkpoint, "train", 3)
    assert r["mode"] == "teacher_student" and r["images"] == 3
    assert r["unseen_all_n"] + r["seen_all_n"] == r["instances"] > 0
    for key in ("teacher", "pseudo_threshold", "pseudo_interact", "student"):
        value = r[f"unseen_all_{key}"]
        if r["unseen_all_n"]:
            assert 0.0 <= value <= 1.0
    assert r["seen_all_pseudo_threshold"] is None  # seen instances learn from real masks
    # The box baseline: the whole RoI as the mask. Shapes never fill their box, and the IoU of
    # the full grid with a mask is the share of the grid the mask covers.
    for group in ("unseen_all", "seen_all"):
        if r[f"{group}_n"]:
            assert 0.2 < r[f"{group}_box"] < 1.0
    # The cleaned box (box minus the seen masks) is a pseudo-mask too: unseen instances only,
    # never below the plain box (the cleaning only removes cells that are not the instance's,
    # so it can only raise the IoU) on any instance.
    assert r["seen_all_box_clean"] is None
    if r["unseen_all_n"]:
        assert r["unseen_all_box"] <= r["unseen_all_box_clean"] + 1e-6 <= 1.0 + 1e-6
    text = script.table([r])
    assert "| box | box_clean | teacher |" in text
    assert "unseen, overlapped" in text and text.count("\n") == 5
    # Per category: every category of the checkpoint, counts that add up, pseudo-masks only for
    # the unseen ones.
    cats = r["by_category"]
    assert sum(row["n"] for row in cats.values()) == r["instances"]
    for name, row in cats.items():
        if row["seen"]:
            assert row["pseudo_threshold"] is None, name
        elif row["n"]:
            assert 0.0 <= row["teacher"] <= 1.0 and 0.0 <= row["box"] <= 1.0, name
    by_cat = script.category_table([r])
    assert by_cat.count("\n") == 1 + len(cats)
