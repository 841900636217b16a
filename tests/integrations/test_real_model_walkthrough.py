"""README, "Use a real model": its commands, run as written, on a torchvision Mask R-CNN file
this test makes itself (random weights, seeded; nothing is downloaded).

The commands are read from the README block between the ``real-model`` markers, so the README
cannot drift from what works. Two substitutions only: the weights file is this test's own (a
random file cannot carry torchvision's hash in its name), and the import gets small inference
settings (``--set model.min_size=...``) so that a ResNet-50 export stays CPU-test sized.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.processes import free_port, stop_process
from tests.torchvision_models import SETTINGS, write_torchvision_weights

REPO = Path(__file__).resolve().parents[2]
PUBLISHED_FILE = "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"

pytestmark = pytest.mark.slow


def readme_commands() -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- real-model:begin -->\s*```bash\n(.*?)```\s*<!-- real-model:end -->",
                      text, re.DOTALL)
    assert block, "README.md lost its real-model block"
    return [shlex.split(line) for line in block.group(1).splitlines() if line.startswith("boxmask ")]


def _photo(h: int = 120, w: int = 160) -> bytes:
    rng = np.random.default_rng(3)
    small = rng.integers(0, 256, (h // 10, w // 10, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((w, h), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _serve(argv: list[str], cwd: Path) -> None:
    """Run the README's `boxmask serve` line as a process and use the API it serves."""
    port = free_port()
    argv = [a if a != "8000" else str(port) for a in argv] + ["--host", "127.0.0.1"]
    log = cwd / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOXMASK_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "boxmask.cli", *argv[1:]], cwd=cwd,
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        with httpx.Client(base_url=url, timeout=120) as http:
            (model,) = http.get("/v1/models").json()["models"]
            cats = model["card"]["categories"]
            assert len(cats) == 80 and {"id": 90, "name": "toothbrush"}.items() <= cats[-1].items()
            files = {"image": ("photo.png", _photo(), "image/png")}
            seg = http.post("/v1/segment", files=files, data={
                "boxes": json.dumps([[20, 15, 110, 100], [60, 40, 150, 115]]),
                "labels": json.dumps(["dog", 62])})  # by COCO name and by COCO id (chair)
            assert seg.status_code == 200, seg.text
            got = [(i["category_id"], i["label"]) for i in seg.json()["instances"]]
            assert got == [(18, "dog"), (62, "chair")]
            det = http.post("/v1/detect", files=files, data={"score_threshold": "0.05"})
            assert det.status_code == 200, det.text
            assert det.json()["instances"], "the seeded random model detects something"
            assert all(1 <= i["category_id"] <= 90 for i in det.json()["instances"])
    finally:
        stop_process(proc)


def _label_studio_speaks_coco(model_dir: Path, config_xml: str) -> None:
    """The generated labelling config drives the Label Studio backend; a team's own name for a
    COCO category goes through the label map."""
    import base64

    from fastapi.testclient import TestClient

    from boxmask.integrations.labelstudio.config import LabelConfig
    from boxmask.server.app import create_app
    from boxmask.server.settings import LabelStudioSettings, ServerSettings

    parsed = LabelConfig.parse(config_xml)
    assert len(parsed.mask_labels) == 80 and "traffic light" in parsed.mask_labels
    config = config_xml.replace('"couch"', '"Sofa"')  # the team calls it Sofa
    app = create_app(ServerSettings(model_dir=model_dir, demo=False, log_json=False),
                     LabelStudioSettings(label_map={"Sofa": "couch"}))
    image = "data:image/png;base64," + base64.b64encode(_photo()).decode()

    def region(label: str) -> dict:
        return {"id": label, "type": "rectanglelabels", "from_name": "box", "to_name": "image",
                "original_width": 160, "original_height": 120, "image_rotation": 0,
                "value": {"x": 10, "y": 10, "width": 60, "height": 70, "rotation": 0,
                          "rectanglelabels": [label]}}

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/labelstudio/predict", json={
            "tasks": [{"id": 1, "data": {"image": image}, "annotations": [], "predictions": []}],
            "project": "1.1", "label_config": config,
            "params": {"context": {"result": [region("Sofa"), region("traffic light")]}}})
    assert r.status_code == 200, r.text
    labels = [item["value"]["brushlabels"] for item in r.json()["results"][0]["result"]]
    assert labels == [["Sofa"], ["traffic light"]]


def test_readme_real_model_commands_run_end_to_end(tmp_path: Path, monkeypatch) -> None:
    from boxmask.cli import app

    commands = readme_commands()
    assert [c[1] for c in commands] == ["import", "export", "serve", "labelstudio", "cvat"]
    write_torchvision_weights("maskrcnn_resnet50_fpn", tmp_path / "random_maskrcnn.pth")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    outputs: dict[str, str] = {}
    for argv in commands:
        if argv[1] == "serve":
            _serve(argv, tmp_path)
            continue
        redirect = None
        if ">" in argv:
            argv, redirect = argv[: argv.index(">")], argv[argv.index(">") + 1]
        argv = [str(tmp_path / "random_maskrcnn.pth") if a == PUBLISHED_FILE else a for a in argv]
        if argv[1] == "import":
            argv += [f"--set=model.{k}={v}" for k, v in SETTINGS.items()]
        result = runner.invoke(app, argv[1:])
        assert result.exit_code == 0, f"{' '.join(argv)}\n{result.output}"
        if redirect:
            Path(redirect).write_text(result.stdout)
            outputs[redirect] = result.stdout
    card = json.loads((tmp_path / "models" / "coco-r50" / "model.json").read_text())
    assert card["parity"]["passed"] and card["num_classes"] == 80
    assert card["provenance"]["source"]["arch"] == "maskrcnn_resnet50_fpn"
    spec = json.loads(outputs["cvat_spec.json"])
    assert len(spec) == 80 and spec[0] == {"id": 1, "name": "person", "type": "mask"}
    assert {"id": 90, "name": "toothbrush", "type": "mask"} in spec
    _label_studio_speaks_coco(tmp_path / "models" / "coco-r50", outputs["coco_labeling.xml"])


def test_int8_export_of_an_imported_model_records_its_accuracy_cost(tmp_path: Path) -> None:
    """`boxmask export --int8 --images DIR` on an imported checkpoint: calibrated on the user's
    images, with the int8 masks' agreement with fp32 written into model.json."""
    from boxmask.export.exporter import export_checkpoint
    from boxmask.model.torchvision_import import import_torchvision

    write_torchvision_weights("maskrcnn_resnet50_fpn", tmp_path / "w.pth")
    import_torchvision(tmp_path / "w.pth", "maskrcnn_resnet50_fpn", tmp_path / "c.pt", SETTINGS)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(4):
        (photos / f"{i}.png").write_bytes(_photo(100 + 10 * i, 150))
    card = export_checkpoint(tmp_path / "c.pt", tmp_path / "m", int8=True, calibration_images=2,
                             check=False, images=photos)
    int8 = card["quantization"]["int8"]
    assert int8["calibration_images"] == 2
    stored = json.loads((tmp_path / "m" / "model.json").read_text())["quantization"]["int8"]
    assert stored == json.loads(json.dumps(int8))
    assert any("iou" in k for k in int8), int8
