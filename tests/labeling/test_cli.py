"""`boxmask label` on the command line: its options, its errors, and no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from boxmask.cli import app

REPO = Path(__file__).resolve().parents[2]
ISSUE_OPTIONS = ["--coco", "--images", "--out", "--model", "--format", "--only-missing",
                 "--min-score", "--workers", "--resume", "--label-map", "--engine",
                 "--pre-annotate", "--batch-boxes", "--batch-mb"]


def test_label_help_lists_every_option():
    result = CliRunner().invoke(app, ["label", "--help"], terminal_width=200,
                                env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0
    for option in ISSUE_OPTIONS:
        assert option in result.output


def test_bad_options_and_inputs_get_clear_errors(dataset, model_dir):
    runner = CliRunner()
    base = ["label", "--coco", str(dataset["boxes"]), "--images", str(dataset["images"]),
            "--out", str(dataset["boxes"].with_name("o.json")), "--model", str(model_dir),
            "--no-progress"]
    cases = {
        "--format must be rle or polygon": ["--format", "png"],
        "--engine must be local or ray": ["--engine", "spark"],
        "--min-score must be in [0, 1]": ["--min-score", "2"],
        "label map": ["--label-map", str(dataset["boxes"].with_name("nope.yaml"))],
    }
    for message, extra in cases.items():
        result = runner.invoke(app, base + extra, env={"COLUMNS": "300", "NO_COLOR": "1"})
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split())
    missing = ["label", "--coco", "nope.json", "--images", ".", "--out", "o.json"]
    result = runner.invoke(app, missing, env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "do not exist" in result.output
    bad_model = [*base[:-3], "--model", "no-such-model"]
    result = runner.invoke(app, bad_model, env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "bundled" in result.output


def test_label_command_runs_without_importing_torch(dataset, model_dir):
    out = dataset["out"]
    out.parent.mkdir(parents=True)
    code = (
        "import sys\n"
        "from boxmask.cli import app\n"
        f"args = ['label', '--coco', {str(dataset['boxes'])!r}, '--images', {str(dataset['images'])!r},"
        f" '--out', {str(out)!r}, '--model', {str(model_dir)!r}, '--no-progress']\n"
        "try:\n"
        "    app(args, standalone_mode=False)\n"
        "finally:\n"
        "    print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], check=False, env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "NO-TORCH"
    assert json.loads(out.read_text())["annotations"]
    assert "annotations masked" in proc.stderr  # the summary table


def test_label_exits_non_zero_with_one_line_when_no_image_could_be_labeled(dataset, model_dir):
    for image in dataset["images"].iterdir():
        image.unlink()
    out = dataset["out"]
    out.parent.mkdir(parents=True)
    args = ["label", "--coco", str(dataset["boxes"]), "--images", str(dataset["images"]),
            "--out", str(out), "--model", str(model_dir), "--no-progress"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "80", "NO_COLOR": "1"})
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no image could be labeled" in errors[0], result.output
    assert "missing" in errors[0]
    # The output and the report are still written: the report says what went wrong per image.
    assert json.loads(out.read_text())["annotations"]
