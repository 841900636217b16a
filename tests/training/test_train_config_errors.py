"""Bad configs fail before training with a message that names what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from boxmask.cli import app
from boxmask.config import ConfigError, load_config
from boxmask.training.trainer import train

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "synth_tiny_test.yaml"


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"train\.learning_rate"):
        load_config(TINY, ["train.learning_rate=0.1"])


def test_missing_annotations_file_is_named(tiny_cfg, tmp_path: Path) -> None:
    cfg = tiny_cfg(f"data.train_annotations={tmp_path / 'missing.json'}")
    with pytest.raises(ConfigError, match=r"data\.train_annotations: .*missing\.json.* does not exist"):
        train(cfg)


def test_unknown_seen_category_lists_the_known_ones(tiny_cfg) -> None:
    with pytest.raises(ConfigError, match="unicorn") as err:
        train(tiny_cfg("data.seen=[disc,unicorn]"))
    assert "hexagon" in str(err.value)


def test_missing_backbone_weights_are_named_not_downloaded(tiny_cfg, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.backbone_weights: .*r18\.pth"):
        train(tiny_cfg(f"model.backbone_weights={tmp_path / 'r18.pth'}"))


def test_cli_reports_config_errors_without_a_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", str(TINY), f"data.train_images={tmp_path / 'nowhere'}",
                                      f"data.train_annotations={tmp_path / 'a.json'}"])
    text = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code == 2
    assert "data.train_annotations" in text and "a.json' does not exist" in text
    assert "Traceback" not in text

    result = CliRunner().invoke(app, ["train", str(TINY), "train.epochs=zero"])
    assert result.exit_code == 2 and "train.epochs" in result.output
