"""benchmarks/crf_on_masks.py on the bundled demo model and three synthetic images: one row per
category present, figures that are IoUs, and a CRF that leaves near-perfect masks alone."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "crf_on_masks.py"

pytest.importorskip("pydensecrf.densecrf", reason="needs boxmask[crf]")


@pytest.fixture(scope="module")
def crf_bench():
    yield load_script(SCRIPT, "crf_on_masks_benchmark")
    sys.modules.pop("crf_on_masks_benchmark", None)


def test_per_category_rows_on_the_bundled_model(crf_bench, tmp_path):
    from pycocotools.coco import COCO

    from boxmask.data.synthetic import generate

    data = tmp_path / "synthetic"
    generate(data, seed=0, num_train=1, num_val=3, image_size=128, scene="clear", version=1)
    table = crf_bench.measure(crf_bench.DEMO, data)
    coco = COCO(str(data / "annotations" / "instances_val.json"))
    present = {coco.cats[a["category_id"]]["name"] for a in coco.dataset["annotations"]}
    assert set(table) == present
    assert sum(r["n"] for r in table.values()) == len(coco.dataset["annotations"])
    for name, row in table.items():
        assert row["split"] in ("seen", "unseen")
        for key in ("model", "crf", "box"):
            assert 0.0 <= row[key] <= 1.0, (name, key, row)
    # The demo model beats the box on what it learnt from masks (over the seen instances).
    seen = [r for r in table.values() if r["split"] == "seen"]
    assert sum(r["n"] * r["model"] for r in seen) > sum(r["n"] * r["box"] for r in seen)
