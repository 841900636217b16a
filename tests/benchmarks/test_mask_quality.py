"""benchmarks/mask_quality.py: the review figures, and the post-hoc head on a tiny model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "mask_quality.py"


@pytest.fixture(scope="module")
def bench():
    module = load_script(SCRIPT, "mask_quality_bench")
    yield module
    sys.modules.pop("mask_quality_bench", None)


def test_review_recall_counts_the_bad_masks_among_the_lowest_scores(bench) -> None:
    ious = np.array([0.9, 0.2, 0.8, 0.4, 0.95, 0.85, 0.7, 0.6, 0.3, 0.99])
    perfect = ious.copy()  # a score equal to the IoU finds the worst first
    assert bench.review_recall(perfect, ious, 0.2) == pytest.approx(2 / 3)
    assert bench.review_recall(perfect, ious, 0.3) == 1.0
    assert bench.review_recall(-perfect, ious, 0.3) == 0.0
    assert bench.review_recall(perfect, np.ones(4), 0.2) is None


def test_the_head_trained_post_hoc_leaves_the_masks_and_reports_every_score(
        bench, tiny_checkpoint, tmp_path) -> None:
    assert bench.main(["--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path),
                       "--smoke"]) == 0
    result = json.loads((tmp_path / "head_s0" / "result.json").read_text())
    assert result["iterations"] == 2  # what the head trained for, read from its checkpoint
    for side in ("seen", "unseen", "all"):
        assert set(result[side]) >= {"quality", "class probability", "mean confidence",
                                     "instances", "mean_iou"}
    assert result["all"]["instances"] == result["seen"]["instances"] + result["unseen"]["instances"]
    # Every part but the head was frozen: the student is the checkpoint's, weight for weight.
    import torch

    before = torch.load(tiny_checkpoint, map_location="cpu", weights_only=False)["model"]
    after = torch.load(tmp_path / "head_s0" / "checkpoint_last.pt", map_location="cpu",
                       weights_only=False)["model"]
    student = [k for k in before if ".student." in k]
    assert student and all(torch.equal(before[k], after[k]) for k in student)
    assert any(".quality." in k for k in after)

    # A checkpoint that has the head (trained with the model): measured as it is, then each
    # seed's head starts fresh from a copy without it.
    second = tmp_path / "second"
    assert bench.main(["--checkpoint", str(tmp_path / "head_s0" / "checkpoint_last.pt"),
                       "--out", str(second), "--smoke"]) == 0
    as_trained = json.loads((second / "with_the_model" / "result.json").read_text())
    assert as_trained["all"]["instances"] == result["all"]["instances"]
    stripped = torch.load(second / "without_quality_head.pt", map_location="cpu",
                          weights_only=False)["model"]
    assert stripped and not any(".quality." in k for k in stripped)
    assert (second / "head_s0" / "result.json").is_file()
    for side in ("seen", "unseen"):  # the head's own IoU beside the served review score
        assert "head" in as_trained[side] and "head" in result[side]


def test_with_no_seeds_a_checkpoint_is_measured_as_it_is(bench, tiny_checkpoint,
                                                        tmp_path) -> None:
    """A checkpoint without a head (the fine-tune benchmark's): the review score of the mask's
    statistics, nothing trained."""
    assert bench.main(["--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path),
                       "--seeds"]) == 0
    result = json.loads((tmp_path / "with_the_model" / "result.json").read_text())
    assert result["head"] is False and not (tmp_path / "head_s0").exists()
    assert "head" not in result["all"]
    assert set(result["all"]) >= {"quality", "class probability", "mean confidence"}


def test_the_colour_terms_ring_can_be_set_to_compare_widths(bench, tiny_checkpoint,
                                                             tmp_path) -> None:
    """--review-context measures the review score with another ring around the box (0: the
    box's cells alone) and says so in the result; only the served score changes."""
    results = {}
    for name, extra in (("served", []), ("box_only", ["--review-context", "0"])):
        assert bench.main(["--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / name),
                           "--seeds", *extra]) == 0
        results[name] = json.loads((tmp_path / name / "with_the_model" / "result.json").read_text())
    assert "review_context" not in results["served"]
    assert results["box_only"]["review_context"] == 0
    for side in ("seen", "unseen"):
        assert results["box_only"][side]["mean confidence"] == results["served"][side]["mean confidence"]


def test_the_crf_served_masks_are_scored_by_the_decoders_masks(bench, tiny_checkpoint,
                                                               tmp_path) -> None:
    """--crf: the true IoU is the refined mask's (what a mask_refine: crf bundle serves), the
    scores the decoder's masks' (the runtime's order): the scores match a plain run's."""
    plain, refined = tmp_path / "plain", tmp_path / "crf"
    assert bench.main(["--checkpoint", str(tiny_checkpoint), "--out", str(plain), "--seeds"]) == 0
    assert bench.main(["--checkpoint", str(tiny_checkpoint), "--out", str(refined), "--seeds",
                       "--crf"]) == 0
    a = json.loads((plain / "with_the_model" / "result.json").read_text())
    b = json.loads((refined / "with_the_model" / "result.json").read_text())
    assert b["served_crf"] is True and "served_crf" not in a
    assert a["all"]["instances"] == b["all"]["instances"]
    assert a["all"]["mean_iou"] != b["all"]["mean_iou"]
    # --crf wide: the wide kernel's refined masks (a crf_wide bundle), named in the result.
    wide = tmp_path / "wide"
    assert bench.main(["--checkpoint", str(tiny_checkpoint), "--out", str(wide), "--seeds",
                       "--crf", "wide"]) == 0
    c = json.loads((wide / "with_the_model" / "result.json").read_text())
    assert c["served_crf"] is True and c["served_crf_kernel"] == "wide"
    assert "served_crf_kernel" not in b
    assert c["all"]["instances"] == b["all"]["instances"]
    assert c["all"]["mean_iou"] != b["all"]["mean_iou"]
