"""benchmarks/train_step_profile.py on the tiny config: the parts add up to no more than the
step, and a cap on the mask heads' RoIs is what reaches them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_CONFIG
from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "train_step_profile.py"


@pytest.fixture(scope="module")
def profile_bench():
    yield load_script(SCRIPT, "train_step_profile_benchmark")
    sys.modules.pop("train_step_profile_benchmark", None)


def _overrides(d: Path, tmp_path: Path) -> list[str]:
    return [f"data.train_annotations={d / 'annotations' / 'instances_train.json'}",
            f"data.train_images={d / 'images' / 'train'}",
            f"data.val_annotations={d / 'annotations' / 'instances_val.json'}",
            f"data.val_images={d / 'images' / 'val'}", f"train.output_dir={tmp_path}"]


def test_parts_and_a_mask_roi_cap(profile_bench, tiny_dataset, tmp_path):
    import torch

    torch.set_num_threads(1)
    base = _overrides(tiny_dataset, tmp_path)
    full = profile_bench.measure(TINY_CONFIG, base, iters=2, warmup=1)
    capped = profile_bench.measure(TINY_CONFIG, [*base, "model.mask_rois_per_image=1"],
                                   iters=2, warmup=1)
    parts = full["parts"]
    assert {"backbone", "rpn", "roi_heads", "roi_heads.mask_branch", "forward (all)",
            "backward + step"} <= set(parts)
    assert parts["forward (all)"] + parts["backward + step"] <= full["total"] * 1.01
    assert parts["roi_heads.mask_branch"] <= parts["roi_heads"] <= parts["forward (all)"]
    assert full["mask_rois"] > 1
    assert capped["mask_rois"] == 1
