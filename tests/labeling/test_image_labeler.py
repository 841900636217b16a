"""One image's labeling: a crowded image is decoded within the memory budget, with the same masks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from boxmask.labeling.engines import load_predictor
from boxmask.labeling.image_labeler import label_image
from boxmask.labeling.options import LabelSettings
from boxmask.labeling.plan import ImageTask
from boxmask.runtime.predictor import decoder_bytes_per_box

REPO = Path(__file__).resolve().parents[2]


def crowded_task(model_ids: list[int], boxes: int, size: int = 256, seed: int = 0) -> ImageTask:
    """``boxes`` boxes of 5 to 60 pixels, of every model category, on one ``size`` image."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, size - 60, (boxes, 2))
    xyxy = np.concatenate([xy, xy + rng.uniform(5, 60, (boxes, 2))], axis=1).round(1)
    return ImageTask(index=0, image_id=1, file_name="crowded.png", path="", height=size,
                     width=size, ann_indices=list(range(boxes)), boxes=xyxy.tolist(),
                     category_ids=[model_ids[i % len(model_ids)] for i in range(boxes)])


def crowded_image(size: int = 256, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


class BoxCountingSession:
    """A decoder session that remembers how many boxes each run was given."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.boxes_per_run: list[int] = []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def run(self, inputs, output_names=None):
        self.boxes_per_run.append(int(inputs["boxes"].shape[0]))
        return self.inner.run(inputs, output_names)


def test_the_default_budget_splits_a_crowded_image_into_bounded_runs_with_the_same_masks(
        model_dir):
    settings = LabelSettings()
    assert settings.batch_bytes > 0  # bounded unless asked otherwise
    predictor = load_predictor(model_dir, threads=1, batch_bytes=settings.batch_bytes)
    predictor.decoder = BoxCountingSession(predictor.decoder)
    limit = settings.batch_bytes // decoder_bytes_per_box(predictor.card)
    task = crowded_task([c.id for c in predictor.card.categories], boxes=int(2.5 * limit))
    image = crowded_image()

    budgeted = label_image(predictor, image, task, settings)
    runs = predictor.decoder.boxes_per_run
    assert len(runs) == 3 and max(runs) <= limit and sum(runs) == len(task.boxes)

    # Small runs of a fixed size, without a budget, give the same result record.
    unbounded = load_predictor(model_dir, threads=1, batch_bytes=0)
    small = label_image(unbounded, image, task, LabelSettings(batch_boxes=7, batch_bytes=0))
    assert budgeted == small
    assert len(budgeted["masks"]) > len(task.boxes) // 2


# Run with the repository as the working directory: ``python -c`` puts it on the import path.
_MEASURE = """
import json
from pathlib import Path
from boxmask.labeling.engines import load_predictor
from boxmask.labeling.image_labeler import label_image
from boxmask.labeling.options import LabelSettings
from tests.labeling.test_image_labeler import crowded_image, crowded_task

def status(field):
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field))
    return int(line.split()[1]) * 1024

settings = LabelSettings()
predictor = load_predictor({model_dir!r}, threads=1, batch_bytes=settings.batch_bytes)
ids = [c.id for c in predictor.card.categories]
label_image(predictor, crowded_image(seed=1), crowded_task(ids, 20, seed=1), settings)  # warm up
# VmHWM, the peak RSS, from here on: getrusage's would count the parent's RSS at fork time.
Path("/proc/self/clear_refs").write_text("5")
before = status("VmRSS:")
result = label_image(predictor, crowded_image(), crowded_task(ids, {boxes}), settings)
print(json.dumps({{"growth": status("VmHWM:") - before, "budget": settings.batch_bytes,
                   "masks": len(result["masks"])}}))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="reads the peak RSS from /proc")
def test_three_thousand_boxes_on_one_image_stay_within_the_default_budget(model_dir):
    # The case: all 3,000 boxes in one decoder run took 3.99 GB (the demo model); the
    # tiny test model takes about 360 MB that way, and must stay under the 256 MiB budget.
    code = _MEASURE.format(model_dir=str(model_dir), boxes=3000)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=False, cwd=REPO,
                          env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert proc.returncode == 0, proc.stderr
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    assert measured["masks"] > 1000
    assert measured["growth"] < measured["budget"], measured
