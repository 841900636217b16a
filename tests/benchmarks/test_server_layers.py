"""benchmarks/server_layers.py: every layer and every timed call of a cached request is found
and timed, and the probes are gone afterwards."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from boxmask.runtime import predictor
from boxmask.server import inference
from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "server_layers.py"


def test_the_steps_cover_the_stack_and_the_route_and_are_undone(model_dir: Path, tmp_path: Path,
                                                                 capsys) -> None:
    before = (predictor.Predictor.predict, inference.segment, inference.wire_mask)
    bench = load_script(SCRIPT, "server_layers_bench")
    try:
        bench.main(["--model-dir", str(model_dir), "--requests", "3", "--warmup", "1",
                    "--json", str(tmp_path / "layers.json")])
    finally:
        sys.modules.pop("server_layers_bench", None)
    assert (predictor.Predictor.predict, inference.segment, inference.wire_mask) == before
    out = json.loads((tmp_path / "layers.json").read_text())
    steps = [s["step"] for s in out["steps"]]
    assert out["layers"][0] == "ServerErrorMiddleware" and out["layers"][-1] == "APIRouter"
    assert "RequestContextMiddleware" in out["layers"]
    for _, name, _ in bench.STEPS:
        assert f"to {name}" in steps and f"out of {name}" in steps, name
    # Every reading is in order: the steps add up to the whole request.
    assert abs(sum(s["mean_ms"] for s in out["steps"]) - out["total_ms"]["mean_ms"]) < 1e-6
    assert "| whole request |" in capsys.readouterr().out
