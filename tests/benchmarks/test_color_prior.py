"""benchmarks/color_prior.py on two synthetic images: shares that are fractions, and a prior
that, on flat-coloured shapes, joins pixels of one label almost always."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "color_prior.py"


@pytest.fixture(scope="module")
def prior_bench():
    yield load_script(SCRIPT, "color_prior_benchmark")
    sys.modules.pop("color_prior_benchmark", None)


def test_measure_on_two_synthetic_images(prior_bench, tmp_path, capsys):
    from boxmask.data.synthetic import generate

    data = tmp_path / "synthetic"
    generate(data, seed=0, num_train=1, num_val=2, image_size=128, scene="clear", version=2)
    rows = prior_bench.measure(data, images=2)
    assert set(rows) <= {"seen", "unseen"} and rows
    for side, r in rows.items():
        assert r["edges"] > 0, side
        for key in ("same_label", "kept_inside", "kept_outside"):
            assert 0.0 <= r[key] <= 1.0, (side, key, r)
        # Kept pairs are far more often same-label than chance (about half inside a box).
        assert r["same_label"] > 0.95, (side, r)
        assert 0.0 < r["kept_inside"] < 1.0
    assert prior_bench.main(["--data", str(data), "--images", "1"]) == 0
    assert "| same label |" in capsys.readouterr().out
