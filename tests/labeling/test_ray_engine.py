"""The Ray Data engine writes the same bytes as the local engine."""

from __future__ import annotations

import json

import pytest

from tests.labeling.conftest import label

ray = pytest.importorskip("ray", reason="the Ray engine needs boxmask[labeling]")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_engine_output_equals_local_engine_output(dataset, model_dir, local_ray):
    local_report = label(dataset, model_dir)
    ray_out = dataset["out"].with_name("ray.json")
    # 2 actors, 2 images per batch: results come back out of order and batched.
    ray_report = label(dataset, model_dir, out=ray_out, engine="ray", workers=2,
                       images_per_batch=2)
    assert ray_out.read_bytes() == dataset["out"].read_bytes()
    assert ray_report["summary"]["annotations_masked"] == \
        local_report["summary"]["annotations_masked"] > 0
    assert json.loads(ray_out.with_name("ray.report.json").read_text())["engine"] == "ray"
