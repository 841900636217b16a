"""benchmarks/review_weights.py: the least-squares fit recovers known weights, each checkpoint's
terms are measured once and kept, and the table has every compared score."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "review_weights.py"


@pytest.fixture()
def bench():
    module = load_script(SCRIPT, "review_weights_bench")
    yield module
    sys.modules.pop("review_weights_bench", None)
    sys.modules.pop("mask_quality", None)


def _terms(seed: int, n: int = 400, head: bool = True) -> dict[str, np.ndarray]:
    """Synthetic terms whose true IoU is 0.1 + 0.3 conf + 0.2 sep + 0.1 head + 0.2 edge, plus
    noise."""
    rng = np.random.default_rng(seed)
    conf, sep, h, edge = rng.random(n), rng.random(n), rng.random(n), rng.random(n)
    iou = np.clip(0.1 + 0.3 * conf + 0.2 * sep + 0.1 * h + 0.2 * edge + rng.normal(0, 0.01, n),
                  0, 1)
    return {"seen": rng.random(n) < 0.3, "iou": iou, "confidence": conf, "separation": sep,
            "edge": edge,
            "separation_decoder": rng.random(n), "head": h if head else np.full(n, np.nan),
            "class_probability": rng.random(n), "mean_confidence": conf,
            "quality": 0.6 * conf + 0.3 * sep + 0.1 * h}


def test_the_fit_recovers_the_weights_of_the_true_iou(bench) -> None:
    got = bench.fit([_terms(0), _terms(1)])
    assert got == pytest.approx({"confidence": 0.375, "separation": 0.25, "head": 0.125,
                                 "edge": 0.25}, abs=0.02)
    alone = bench.fit([_terms(0)], with_head=False)
    assert alone["head"] == 0.0
    assert alone["confidence"] == pytest.approx(3 / 7, abs=0.05)
    flat = _terms(2)
    flat["iou"] = 1.0 - flat["confidence"]  # the terms say the opposite of the IoU
    flat["separation"] = flat["confidence"]
    flat["edge"] = flat["confidence"]
    with pytest.raises(SystemExit, match="do not predict"):
        bench.fit([flat], with_head=False)


def test_each_checkpoints_terms_are_measured_once_and_the_table_compares_every_score(
        bench, tmp_path, monkeypatch, capsys) -> None:
    calls = []

    def fake_terms(raw, crf=None, annotations=None, images=None):
        calls.append((raw["name"], crf, annotations))
        return _terms(len(calls))

    monkeypatch.setattr(bench, "mask_terms", fake_terms)
    import boxmask.model.checkpoint as ckpt

    monkeypatch.setattr(ckpt, "load_checkpoint", lambda path: {"name": path.parent.name})
    a, b = tmp_path / "a" / "checkpoint_last.pt", tmp_path / "b" / "checkpoint_last.pt"
    args = ["--checkpoint", str(a), "--checkpoint", str(b), "--annotations", "tune.json",
            "--images", "tune", "--out", str(tmp_path / "out"), "--finish", "none", "crf_wide"]
    assert bench.main(args) == 0
    assert calls == [("a", None, "tune.json"), ("b", None, "tune.json"),
                     ("a", "wide", "tune.json"), ("b", "wide", "tune.json")]
    out = capsys.readouterr().out
    assert "none: fitted weights confidence 0.38" in out or \
        "none: fitted weights confidence 0.37" in out
    for score in ("mean confidence", "before: decoder's terms, equal weights",
                  "decoder's confidence, served separation, equal weights",
                  "without the edge term (0.6 / 0.3 / 0.1)", "fitted weights",
                  "pooled weights (every finish)", "served (runtime.review.WEIGHTS_BY_FINISH)"):
        assert out.count(f"| {score} |") == 4  # two checkpoints, two finishes
    assert "Pooled over every finish: confidence 0.3" in out
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert set(result["finishes"]) == {"none", "crf_wide"}
    assert result["finishes"]["none"]["fitted"]["confidence"] == pytest.approx(0.375, abs=0.02)
    assert result["pooled"]["edge"] == pytest.approx(0.25, abs=0.02)
    # A rerun reads the kept terms and measures nothing again.
    assert bench.main(args) == 0
    assert len(calls) == 4
    with pytest.raises(SystemExit):
        bench.main(["--checkpoint", str(a), "--annotations", "tune.json"])
