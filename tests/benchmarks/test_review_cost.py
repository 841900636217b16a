"""benchmarks/review_cost.py: the cost table runs and prints both widths and the edge term."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "review_cost.py"


def test_the_table_has_a_row_for_one_and_ten_boxes(capsys) -> None:
    bench = load_script(SCRIPT, "review_cost_bench")
    try:
        assert bench.main(["--blocks", "1", "--calls", "2"]) == 0
    finally:
        sys.modules.pop("review_cost_bench", None)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 1")]
    assert [r.split("|")[1].strip() for r in rows] == ["1", "10"]
    for row in rows:
        alone, ring, ratio, edge, edge_ratio = (float(v) for v in row.split("|")[2:7])
        assert alone > 0 and ring > 0 and abs(ratio - ring / alone) < 0.01 + 1e-3 * ratio
        assert edge > 0 and abs(edge_ratio - edge / ring) < 0.01 + 1e-3 * edge_ratio
