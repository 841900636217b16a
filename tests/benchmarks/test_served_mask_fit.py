"""benchmarks/served_mask_fit.py on the tiny model: every validation instance scored in each
variant, and the table that prints them."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "served_mask_fit.py"


@pytest.fixture(scope="module")
def bench():
    yield load_script(SCRIPT, "served_mask_fit_bench")
    sys.modules.pop("served_mask_fit_bench", None)


def test_every_instance_is_scored_plain_and_fitted_and_tabled(bench, tiny_checkpoint, tiny_dataset,
                                                              capsys) -> None:
    coco = tiny_dataset / "annotations" / "instances_val.json"
    images = tiny_dataset / "images" / "val"
    truth = json.loads(coco.read_text())
    names = {c["id"]: c["name"] for c in truth["categories"]}
    expected = Counter(names[a["category_id"]] for a in truth["annotations"])
    ious = bench.measure(tiny_checkpoint, coco, images)
    assert set(ious) == {"plain", "fit0.95", "fit0.90"}
    for by_name in ious.values():
        assert Counter({n: len(v) for n, v in by_name.items()}) == expected
        assert all(0.0 <= v <= 1.0 for vs in by_name.values() for v in vs)

    assert bench.main([str(tiny_checkpoint), "--coco", str(coco), "--images", str(images)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert len(lines) == 2 + 3  # header, rule, one row per variant
    assert all(tiny_checkpoint.parent.name in line for line in lines[2:])
