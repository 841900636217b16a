"""benchmarks/crf_cost.py: the served CRF's cost table runs on a model and prints both rows."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "crf_cost.py"


def test_the_table_has_a_row_for_one_and_ten_boxes(exported_model_dir, capsys) -> None:
    bench = load_script(SCRIPT, "crf_cost_bench")
    try:
        assert bench.main(["--model-dir", str(exported_model_dir), "--blocks", "1",
                           "--calls", "2"]) == 0
    finally:
        sys.modules.pop("crf_cost_bench", None)
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| 1")]
    assert [r.split("|")[1].strip() for r in rows] == ["1", "10"]
    for row in rows:
        none, crf, diff, ratio = (float(v) for v in row.split("|")[2:6])
        assert none > 0 and crf > 0
        # Each printed figure is rounded to 2 decimals: the ratio of two rounded times is off
        # the printed (unrounded) ratio by at most this much.
        slack = 0.005 * (1 / none + crf / none ** 2) + 0.005
        assert abs(diff - (crf - none)) < 0.02 and abs(ratio - crf / none) <= slack + 1e-9
    assert "ms a mask" in out
