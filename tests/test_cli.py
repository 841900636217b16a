"""The `boxmask` command as a user meets it: help pages, --version, naming a model, the output
of the long and the chatty commands, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import typer
from PIL import Image
from typer.core import TyperGroup
from typer.testing import CliRunner

from boxmask.cli import app
from boxmask.runtime.contract import bundled_models
from tests.processes import free_port

runner = CliRunner()
WIDE = {"COLUMNS": "300", "NO_COLOR": "1"}
BUNDLED = "synthetic-demo"


def _commands(group: TyperGroup, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    ctx = typer.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, TyperGroup):
            found += _commands(command, (*path, name))
        else:
            found.append((*path, name))
    return found


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def test_version_prints_the_installed_package_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"boxmask {version('boxmask')}"


def test_no_help_page_shows_a_value_type_after_a_plain_flag() -> None:
    commands = _commands(typer.main.get_command(app))
    assert ("export",) in commands and ("cvat", "spec") in commands
    for path in commands:
        result = runner.invoke(app, [*path, "--help"], env=WIDE)
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output, f"boxmask {' '.join(path)} --help:\n{result.output}"
    export = runner.invoke(app, ["export", "--help"], env=WIDE).output
    assert "--fp16" in export and "<int>" in export  # options with a value keep their type


@pytest.fixture
def checkpoint_folder(tmp_path: Path) -> Path:
    """A training run's folder: checkpoints, no exported model."""
    run = tmp_path / "runs" / "ts"
    run.mkdir(parents=True)
    (run / "checkpoint_last.pt").write_bytes(b"not really")
    return run


@pytest.fixture
def tiny_coco(tmp_path: Path) -> tuple[Path, Path]:
    images = tmp_path / "imgs"
    images.mkdir()
    Image.new("RGB", (32, 24)).save(images / "a.png")
    coco = tmp_path / "boxes.json"
    coco.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 24}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10],
                         "area": 100, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "disc"}]}))
    return coco, images


def _model_commands(model: str, coco: tuple[Path, Path], out: Path) -> dict[str, list[str]]:
    return {
        "label": ["label", "--coco", str(coco[0]), "--images", str(coco[1]),
                  "--out", str(out / "o.json"), "--model", model, "--no-progress"],
        "labelstudio config": ["labelstudio", "config", "--model-dir", model],
        "cvat spec": ["cvat", "spec", "--model-dir", model],
        "cvat boxes-to-masks": ["cvat", "boxes-to-masks", "--task", "1", "--model-dir", model,
                                "--host", "http://127.0.0.1:9"],
        "serve": ["serve", "--model-dir", model],
    }


def test_a_folder_that_holds_a_checkpoint_is_one_line_naming_the_export_command_everywhere(
        checkpoint_folder: Path, tiny_coco, tmp_path: Path, monkeypatch) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("the server started"))
    for name, argv in _model_commands(str(checkpoint_folder), tiny_coco, tmp_path).items():
        result = runner.invoke(app, argv, env=WIDE)
        assert result.exit_code == 2, (name, result.output)
        assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
        lines = _error_lines(result.output)
        assert len(lines) == 1, (name, result.output)
        assert f"boxmask export {checkpoint_folder / 'checkpoint_last.pt'} --out" in lines[0], name


def test_a_bundled_model_name_works_on_every_command(tiny_coco, tmp_path: Path, monkeypatch) -> None:
    import uvicorn

    bundled = bundled_models()[BUNDLED]
    names = [c["name"] for c in json.loads((bundled / "model.json").read_text())["categories"]]
    commands = _model_commands(BUNDLED, tiny_coco, tmp_path)

    config = runner.invoke(app, commands["labelstudio config"])
    assert config.exit_code == 0 and all(f'<Label value="{n}"/>' in config.stdout for n in names)
    spec = runner.invoke(app, commands["cvat spec"])
    assert spec.exit_code == 0 and [c["name"] for c in json.loads(spec.stdout)] == names
    label = runner.invoke(app, commands["label"], env=WIDE)
    assert label.exit_code == 0, label.output
    assert json.loads((tmp_path / "o.json").read_text())["annotations"][0]["segmentation"]

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: served.update(k))
    for key in ("MODEL_DIR", "DEFAULT_MODEL", "TRITON_URL", "CACHE_BYTES", "MAX_CONCURRENCY",
                "LOG_LEVEL", "LOG_JSON"):
        monkeypatch.setenv(f"BOXMASK_{key}", "")  # restored after the test: serve sets them
        monkeypatch.delenv(f"BOXMASK_{key}")
    serve = runner.invoke(app, commands["serve"], env=WIDE)
    assert serve.exit_code == 0 and served, serve.output
    assert Path(os.environ["BOXMASK_MODEL_DIR"]) == bundled.resolve()


def _serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    # A server that starts anyway (the bug) is cut off by the timeout; the fix exits in seconds.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BOXMASK_")}
    return subprocess.run([sys.executable, "-m", "boxmask.cli", "serve", "--port",
                           str(free_port()), *args],
                          env={**clean, **(env or {}), "COLUMNS": "300"}, capture_output=True,
                          text=True, timeout=60, check=False, cwd=tmp_path)


def test_serve_refuses_to_start_without_a_model_in_one_line(checkpoint_folder: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [(["--model-dir", str(empty)], None, "holds no exported model"),
             (["--model-dir", str(checkpoint_folder)], None,
              f"`boxmask export {checkpoint_folder / 'checkpoint_last.pt'} --out MODEL_DIR`"),
             ([], {"BOXMASK_MODEL_DIR": str(empty)}, "holds no exported model")]
    for args, env, said in cases:
        result = _serve(tmp_path, *args, env=env)
        assert result.returncode != 0, result
        assert "Traceback" not in result.stderr and "serving on" not in result.stderr
        lines = _error_lines(result.stderr)
        assert len(lines) == 1 and lines[0].startswith("error:") and said in lines[0], result.stderr


def test_data_synth_prints_a_short_summary_and_names_the_cli_flag_when_refusing(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    args = ["data", "synth", "--out", str(out), "--images", "2", "--val-images", "1", "--size", "32"]
    result = runner.invoke(app, args, env=WIDE)
    assert result.exit_code == 0, result.output
    lines = _error_lines(result.output)
    assert len(lines) <= 4, result.output  # was 148 lines of JSON
    assert str(out / "stats.json") in result.output and "2 train + 1 val images" in result.output
    assert json.loads((out / "stats.json").read_text())["splits"]["train"]["per_category"]

    again = runner.invoke(app, args, env=WIDE)
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert "overwrite=True" not in again.output


def test_export_shows_each_stage_the_parity_figures_and_where_the_model_is(
        tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    result = runner.invoke(app, ["export", str(tiny_checkpoint), "--out", str(out), "--name", "t",
                                 "--crf"], env=WIDE)
    assert result.exit_code == 0, result.output
    text = result.output
    # --crf: the card asks the runtime to refine the masks (the checkpoint's config does not).
    assert json.loads((out / "model.json").read_text())["mask_refine"] == "crf"
    stages = ["loading the checkpoint", "exporting the encoder", "exporting the decoder",
              "exporting the labelled decoder", "exporting the detector", "checking parity",
              "writing model.json"]
    positions = [text.find(f"done {stage}") for stage in stages]
    assert -1 not in positions and positions == sorted(positions), text
    graphs = json.loads((out / "model.json").read_text())["parity"]["graphs"]
    assert f"p2 {graphs['encoder']['max_abs']['p2']:.1e}" in text
    assert f"mask_logits {graphs['decoder']['max_abs']['mask_logits']:.1e}" in text
    assert f"min mask IoU {graphs['labelled_decoder']['min_mask_iou']:.4f}" in text
    assert "labelled decoder" in text and "detector" in text and "passed" in text
    assert f"exported t to {out}" in text and f"boxmask serve --model-dir {out}" in text


def test_a_failed_parity_check_names_the_stage_the_graph_and_the_gap(
        tiny_checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    from boxmask.export import exporter
    from boxmask.export.errors import ExportError

    def disagree(*args, **kwargs):
        raise ExportError("ONNX Runtime disagrees with torch: decoder logits differ by 2.50e-01 "
                          "(largest logit 12.3), beyond 0.001 + 1e-05 x the box's largest |logit|")

    monkeypatch.setattr(exporter, "check_parity", disagree)
    result = runner.invoke(app, ["export", str(tiny_checkpoint), "--out", str(tmp_path / "m")],
                           env=WIDE)
    assert result.exit_code == 2
    lines = _error_lines(result.output)
    assert lines[-1].startswith("error: checking parity (ONNX Runtime against torch) failed: ")
    assert "decoder logits differ by 2.50e-01" in lines[-1]
    assert not (tmp_path / "m").exists()
