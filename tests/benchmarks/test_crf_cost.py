"""benchmarks/crf_cost.py: the served CRF's cost table runs on a model and prints both rows."""

from __future__ import annotations

import re
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
        none, crf, diff, ratio, wide, wide_diff, wide_ratio = (
            float(v) for v in row.split("|")[2:9])
        for time, d, q in ((crf, diff, ratio), (wide, wide_diff, wide_ratio)):
            assert none > 0 and time > 0
            # Each printed figure is rounded to 2 decimals: the ratio of two rounded times is
            # off the printed (unrounded) ratio by at most this much.
            slack = 0.005 * (1 / none + time / none ** 2) + 0.005
            assert abs(d - (time - none)) < 0.02 and abs(q - time / none) <= slack + 1e-9
    for kernel in ("crf", "crf_wide"):
        assert re.search(rf"\b{kernel} \d+\.\d+ ms a mask", out), out
