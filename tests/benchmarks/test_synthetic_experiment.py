"""benchmarks/synthetic_experiment.py: a run's training time counts every epoch of its final
checkpoint, also when the run was resumed (its last segment alone would under-report it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "synthetic_experiment.py"


@pytest.fixture(scope="module")
def experiment():
    yield load_script(SCRIPT, "synthetic_experiment_benchmark")
    sys.modules.pop("synthetic_experiment_benchmark", None)


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_resumed_run_counts_each_epoch_once_with_its_last_time(experiment, tmp_path: Path) -> None:
    rows = [
        {"kind": "iter", "iteration": 10, "time_per_iter": 1.0},
        {"kind": "epoch", "epoch": 1, "iteration": 250, "epoch_time": 400.0},
        {"kind": "epoch", "epoch": 2, "iteration": 500, "epoch_time": 410.0},
        # Epoch 3's checkpoint did not survive the cut, so epoch 3 was trained again after the
        # resume and logged a second time: only its last record counts.
        {"kind": "epoch", "epoch": 3, "iteration": 750, "epoch_time": 999.0},
        {"kind": "iter", "iteration": 510, "time_per_iter": 1.1},
        {"kind": "epoch", "epoch": 3, "iteration": 750, "epoch_time": 420.0},
    ]
    assert experiment.epoch_seconds(_write(tmp_path / "metrics.jsonl", rows)) == pytest.approx(1230.0)


def test_no_log_or_no_epoch_records_gives_zero(experiment, tmp_path: Path) -> None:
    assert experiment.epoch_seconds(tmp_path / "missing.jsonl") == 0.0
    only_iters = _write(tmp_path / "metrics.jsonl", [{"kind": "iter", "iteration": 10}])
    assert experiment.epoch_seconds(only_iters) == 0.0
