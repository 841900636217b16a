"""benchmarks/crf_kernels.py: every candidate kernel gets its row, scored on the same decoder
masks, the box and the unrefined masks beside them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "crf_kernels.py"


def test_the_table_has_every_kernel_scored_against_the_served_one(
        exported_model_dir, tiny_dataset, capsys) -> None:
    bench = load_script(SCRIPT, "crf_kernels_bench")
    try:
        assert bench.main(["--model-dir", str(exported_model_dir),
                           "--coco", str(tiny_dataset / "annotations" / "instances_val.json"),
                           "--images", str(tiny_dataset / "images" / "val"),
                           "--max-images", "2"]) == 0
        names = list(bench.candidates())
    finally:
        sys.modules.pop("crf_kernels_bench", None)
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1]
            for line in out.splitlines() if line.startswith("| ") and "---" not in line}
    rows.pop("masks")  # the header
    assert list(rows) == ["box as mask", "decoder (no CRF)", *names]
    assert "crf (served)" in rows and "crf_wide (served)" in rows
    for name, (seen, unseen, margin, _over, ms) in rows.items():
        assert 0 <= float(seen) <= 100 and 0 <= float(unseen) <= 100
        assert float(margin) == pytest.approx(float(unseen) - float(rows["box as mask"][1]),
                                              abs=0.11)
        # A CRF's row has its time; the box's and the decoder's have none.
        assert (ms.strip() == "") == (name in ("box as mask", "decoder (no CRF)"))
    assert rows["box as mask"][2].strip() == "+0.0"
    assert rows["crf (served)"][3].strip() == "+0.0 / +0.0"


def test_images_not_at_the_models_size_are_refused(exported_model_dir, tmp_path) -> None:
    import json

    from PIL import Image

    bench = load_script(SCRIPT, "crf_kernels_bench")
    (tmp_path / "images").mkdir()
    Image.new("RGB", (300, 200)).save(tmp_path / "images" / "a.png")
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 300, "height": 200}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50],
                             "area": 2500, "iscrowd": 0,
                             "segmentation": [[10, 10, 60, 10, 60, 60, 10, 60]]}],
            "categories": [{"id": 1, "name": "x"}]}
    (tmp_path / "a.json").write_text(json.dumps(coco))
    try:
        with pytest.raises(SystemExit, match="model's own size"):
            bench.main(["--model-dir", str(exported_model_dir), "--coco",
                        str(tmp_path / "a.json"), "--images", str(tmp_path / "images")])
    finally:
        sys.modules.pop("crf_kernels_bench", None)
