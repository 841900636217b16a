"""`make run` serves the bundled demo model, and its masks are as good as the model says.

The server is started through the Makefile's own `run` recipe (`make -o setup run`, with this
interpreter as `PY`: the set-up step is what `make test` has just done), so a change to that
command or to the default model folder breaks this test. Every ground-truth box of the split the
model's `evaluation.json` was measured on goes through `POST /v1/segment` over HTTP; the masks'
mean IoU with the truth must match the shipped figures, and sit on the documented side of the
box-as-mask baseline measured here.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from tests.conftest import BUNDLED_MODEL, FIGURE_TOLERANCE, REPO
from tests.mask_quality import assert_matches_record, box_as_mask_by_side, mean_iou_by_side
from tests.processes import free_port
from tests.server.conftest import wait_until_ready


@pytest.fixture(scope="module")
def make_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    make = shutil.which("make")
    assert make, "make is needed: `make run` is the README's way to serve the demo model"
    port = free_port()
    log_path = tmp_path_factory.mktemp("make_run") / "server.log"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("BOXMASK_") and k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    with open(log_path, "wb") as log:
        # Its own process group: make starts the server as its child, and both must go.
        process = subprocess.Popen(
            [make, "--no-print-directory", "-o", "setup", "run", f"PY={sys.executable}",
             f"PORT={port}"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, url, log_path, "make run")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_make_run_serves_the_bundled_model_with_its_documented_mask_quality(
        make_run: str, bundled_evaluation: dict, bundled_eval_set: Path) -> None:
    card = json.loads((BUNDLED_MODEL / "model.json").read_text())
    models = httpx.get(f"{make_run}/v1/models", timeout=10).json()["models"]
    assert [m["name"] for m in models] == [card["name"]]
    coco = COCO(str(bundled_eval_set / "annotations" / "instances_val.json"))
    seen_ids = {c["id"] for c in card["categories"] if c["seen"]}
    masks = {}
    with httpx.Client(base_url=make_run, timeout=60) as client:
        for img_id in sorted(coco.getImgIds()):
            info = coco.imgs[img_id]
            anns = coco.imgToAnns[img_id]
            if not anns:
                continue
            data = (bundled_eval_set / "images" / "val" / info["file_name"]).read_bytes()
            boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][2], a["bbox"][3]] for a in anns]
            r = client.post("/v1/segment", json={
                "image": base64.b64encode(data).decode(), "boxes": boxes, "box_format": "xywh",
                "labels": [a["category_id"] for a in anns]})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["model"] == card["name"]
            for ann, inst in zip(anns, body["instances"], strict=True):
                assert inst["category_id"] == ann["category_id"]
                rle = {"size": inst["mask"]["size"], "counts": inst["mask"]["counts"].encode()}
                masks[ann["id"]] = mask_utils.decode(rle).astype(bool)
    measured = mean_iou_by_side(coco, masks, seen_ids)
    baseline = box_as_mask_by_side(coco, seen_ids)
    print(f"served {card['name']}: mean IoU {measured}, box as mask {baseline}")
    assert_matches_record(measured, bundled_evaluation["fp32"]["mean_iou"], baseline,
                          bundled_evaluation["box_as_mask"]["mean_iou"], FIGURE_TOLERANCE,
                          "make run")


def test_readme_quotes_the_figures_the_bundled_model_ships_with(bundled_evaluation: dict) -> None:
    """The README's sentence about the demo model says what its evaluation.json measured."""
    readme = " ".join((REPO / "README.md").read_text().split())
    found = re.search(r"mean IoU of (0\.\d+) on the unseen shapes and (0\.\d+) on the seen ones "
                      r"\(box as mask: (0\.\d+) and (0\.\d+)", readme)
    assert found, "README no longer states the demo model's mean IoUs beside the box as mask"
    fp32, box = bundled_evaluation["fp32"]["mean_iou"], bundled_evaluation["box_as_mask"]["mean_iou"]
    quoted = [float(v) for v in found.groups()]
    assert quoted == [round(fp32["unseen"], 2), round(fp32["seen"], 2),
                      round(box["unseen"], 2), round(box["seen"], 2)]


def test_the_bundled_model_stays_within_its_size_budget() -> None:
    """The demo model ships inside the package: every file of it, samples included, in at most
    30 MB (the issue's bundle budget; configs/demo_synth128_mnv3.yaml sizes the heads for it)."""
    folder = REPO / "boxmask" / "assets" / "models" / "synthetic-demo"
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert 0 < total <= 30_000_000, f"{total / 1e6:.1f} MB"


def test_the_bundled_models_server_figures_are_of_its_own_files(bundled_evaluation: dict
                                                                 ) -> None:
    """evaluation.json's `server` entry (benchmarks/server.py --record-in) was measured on the
    shipped files, through the command it names, with no failed request."""
    server = bundled_evaluation.get("server")
    assert server is not None, ("the bundled model ships no server figures: run python "
                                "benchmarks/server.py --start --model-dir boxmask/assets/models "
                                "--record-in boxmask/assets/models/synthetic-demo/evaluation.json")
    assert server["model_files"] == bundled_evaluation["model_files"]
    assert server["command"].startswith("python benchmarks/server.py --start")
    assert server["sustained"]["errors"] == 0
    assert server["cached_single_box_ms"]["p50"] > 0 and server["cached_ten_boxes_ms"]["n"] > 0
