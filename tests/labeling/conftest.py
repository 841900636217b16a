"""Fixtures for the batch labeler: a small synthetic dataset with its masks removed.

`model_dir` (tests/conftest.py) is the exported model every labeling test runs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from boxmask.data.synthetic import generate
from boxmask.labeling import LabelOptions, LabelSettings, run_label_job

NUM_IMAGES = 6
IMAGE_SIZE = 96


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("labeling") / "synthetic"
    generate(out, seed=3, num_train=1, num_val=NUM_IMAGES, image_size=IMAGE_SIZE)
    return out


def strip_masks(coco: dict[str, Any]) -> dict[str, Any]:
    """The same dataset as a box-only one: no annotation keeps its segmentation."""
    coco = json.loads(json.dumps(coco))
    for ann in coco["annotations"]:
        ann.pop("segmentation", None)
    return coco


@pytest.fixture
def dataset(synthetic_dir: Path, tmp_path: Path) -> dict[str, Path]:
    """A private copy (images may be damaged by a test) of the val split, masks removed.

    Keys: ``images`` (folder), ``boxes`` (box-only JSON), ``truth`` (the original JSON),
    ``out`` (where the output goes).
    """
    images = tmp_path / "images"
    shutil.copytree(synthetic_dir / "images" / "val", images)
    truth = synthetic_dir / "annotations" / "instances_val.json"
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps(strip_masks(json.loads(truth.read_text())), indent=1))
    return {"images": images, "boxes": boxes, "truth": truth, "out": tmp_path / "out" / "labels.json"}


def label(dataset: dict[str, Path], model_dir: Path, out: Path | None = None, coco: Path | None = None,
          settings: LabelSettings | None = None, **kwargs: Any) -> dict[str, Any]:
    """Run a job in this process and return its report."""
    out = out or dataset["out"]
    out.parent.mkdir(parents=True, exist_ok=True)
    options = LabelOptions(coco=coco or dataset["boxes"], images=dataset["images"], out=out,
                           model=model_dir, settings=settings or LabelSettings(), progress=False,
                           **kwargs)
    return run_label_job(options)
