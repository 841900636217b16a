"""benchmarks/by_category.py: per-category means over a group's files, the unseen marks of each
group's own split, the box row, and a refusal to average over two splits."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "by_category.py"


@pytest.fixture(scope="module")
def by_category():
    yield load_script(SCRIPT, "by_category_benchmark")
    sys.modules.pop("by_category_benchmark", None)


def _result(ious: dict[str, float], unseen: set[str], box: dict[str, float] | None = None) -> dict:
    def cats(values: dict[str, float], unseen: set[str]) -> list[dict]:
        return [{"id": i, "name": n, "seen": n not in unseen, "mean_iou": v}
                for i, (n, v) in enumerate(values.items(), start=1)]

    def means(values: dict[str, float], unseen: set[str]) -> dict[str, float]:
        seen = [v for n, v in values.items() if n not in unseen]
        other = [v for n, v in values.items() if n in unseen]
        return {"seen": sum(seen) / len(seen), "unseen": sum(other) / len(other)}

    bp = {"by_category": cats(ious, unseen), "mean_iou": means(ious, unseen)}
    if box is not None:
        bp["box_baseline"] = {"by_category": cats(box, unseen), "mean_iou": means(box, unseen)}
    return {"box_prompted": bp}


def test_groups_average_their_files_and_mark_their_own_unseen(by_category, tmp_path, capsys):
    box = {"disc": 0.5, "star": 0.4}
    for seed, (disc, star) in enumerate([(0.8, 0.6), (0.7, 0.5)]):
        (tmp_path / f"a_s{seed}.json").write_text(
            json.dumps(_result({"disc": disc, "star": star}, {"star"}, box)))
    (tmp_path / "b.json").write_text(json.dumps(_result({"disc": 0.6, "star": 0.9}, {"disc"})))

    assert by_category.main([f"a={tmp_path}/a_s*.json", f"b={tmp_path}/b.json"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert rows[0] == "| run | files | disc | star | seen | unseen |"
    assert rows[1] == "| box as mask | | 50.0 | 40.0 | 50.0 | 40.0 |"
    assert rows[2] == "| a | 2 | 75.0 | 55.0* | 75.0 | 55.0 |"
    assert rows[3] == "| b | 1 | 60.0* | 90.0 | 90.0 | 60.0 |"


def test_a_group_over_two_splits_is_refused(by_category, tmp_path):
    (tmp_path / "x1.json").write_text(json.dumps(_result({"disc": 0.8, "star": 0.6}, {"star"})))
    (tmp_path / "x2.json").write_text(json.dumps(_result({"disc": 0.8, "star": 0.6}, {"disc"})))
    with pytest.raises(SystemExit, match="split the categories differently"):
        by_category.main([f"x={tmp_path}/x*.json"])


def test_a_glob_that_matches_nothing_says_so(by_category, tmp_path):
    with pytest.raises(SystemExit, match="no file matches"):
        by_category.main([f"{tmp_path}/none_*.json"])
