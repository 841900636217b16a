"""`--model` takes an exported model directory or the name of a bundled model."""

from __future__ import annotations

import shutil

import pytest

from boxmask.config import ConfigError
from boxmask.labeling import model_source
from boxmask.runtime import contract


def test_model_is_found_by_path_folder_name_or_card_name(model_dir, tmp_path, monkeypatch):
    bundle = tmp_path / "models"
    shutil.copytree(model_dir, bundle / "demo")
    monkeypatch.setattr(contract, "BUNDLED_MODELS_DIR", bundle)
    card_name = contract.bundled_models().popitem()[0]

    assert model_source.resolve_model_dir(model_dir) == model_dir
    assert model_source.resolve_model_dir("demo") == bundle / "demo"
    assert model_source.resolve_model_dir(card_name) == bundle / "demo"
    assert model_source.resolve_model_dir(None) == bundle / "demo"
    with pytest.raises(ConfigError, match="bundled: "):
        model_source.resolve_model_dir("nope")


def test_without_a_bundled_model_the_error_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setattr(contract, "BUNDLED_MODELS_DIR", tmp_path / "none")
    with pytest.raises(ConfigError, match="boxmask export"):
        model_source.resolve_model_dir(None)
