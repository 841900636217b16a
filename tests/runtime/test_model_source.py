"""One way to name a model on every command: an exported model directory, a folder of them
(the server), or the name of a bundled model; anything else is one line that says what to do."""

from __future__ import annotations

import shutil

import pytest

from boxmask.runtime import contract
from boxmask.runtime.errors import ModelDirError, ModelNotFound
from boxmask.runtime.model_source import resolve_model_dir, resolve_model_root


@pytest.fixture
def bundle(model_dir, tmp_path, monkeypatch):
    """A package whose bundled models are one copy of the test model, in folder `demo`."""
    folder = tmp_path / "models"
    shutil.copytree(model_dir, folder / "demo")
    monkeypatch.setattr(contract, "BUNDLED_MODELS_DIR", folder)
    return folder


def test_model_is_found_by_path_folder_name_or_card_name(model_dir, bundle):
    card_name = contract.bundled_models().popitem()[0]
    assert resolve_model_dir(model_dir) == model_dir
    assert resolve_model_dir(str(model_dir)) == model_dir
    assert resolve_model_dir("demo") == bundle / "demo"
    assert resolve_model_dir(card_name) == bundle / "demo"
    assert resolve_model_dir(None) == bundle / "demo"
    with pytest.raises(ModelNotFound, match="bundled: "):
        resolve_model_dir("nope")


def test_the_server_takes_a_model_a_folder_of_models_or_a_bundled_name(model_dir, bundle, tmp_path):
    models = tmp_path / "several"
    for name in ("a", "b"):
        shutil.copytree(model_dir, models / name)
    assert resolve_model_root(models) == models
    assert resolve_model_root(model_dir) == model_dir
    assert resolve_model_root("demo") == bundle / "demo"
    assert resolve_model_root(None) == bundle
    # A command that needs one model names the choices instead of picking one.
    with pytest.raises(ModelNotFound, match=r"holds 2 exported models \(a, b\)"):
        resolve_model_dir(models)


@pytest.mark.parametrize("resolve", [resolve_model_dir, resolve_model_root])
def test_a_folder_with_a_checkpoint_says_which_export_command_to_run(resolve, bundle, tmp_path):
    run = tmp_path / "runs" / "ts"
    run.mkdir(parents=True)
    (run / "checkpoint_epoch1.pt").write_bytes(b"x")
    (run / "checkpoint_last.pt").write_bytes(b"x")
    with pytest.raises(ModelNotFound) as folder:
        resolve(run)
    assert f"`boxmask export {run / 'checkpoint_last.pt'} --out MODEL_DIR`" in str(folder.value)
    with pytest.raises(ModelNotFound) as file:
        resolve(run / "checkpoint_epoch1.pt")
    assert "is a checkpoint" in str(file.value)
    assert f"`boxmask export {run / 'checkpoint_epoch1.pt'} --out MODEL_DIR`" in str(file.value)
    for error in (folder.value, file.value):
        assert "\n" not in str(error) and isinstance(error, ModelDirError)


@pytest.mark.parametrize("resolve", [resolve_model_dir, resolve_model_root])
def test_an_empty_folder_or_a_missing_name_is_one_line_that_says_how_to_get_a_model(
        resolve, bundle, tmp_path):
    (tmp_path / "empty").mkdir()
    for spec, said in ((tmp_path / "empty", "holds no exported model"),
                       ("no-such-model", "neither a folder nor a bundled model")):
        with pytest.raises(ModelNotFound) as error:
            resolve(spec)
        text = str(error.value)
        assert said in text and "boxmask export" in text and "demo" in text and "\n" not in text


def test_without_a_bundled_model_the_error_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setattr(contract, "BUNDLED_MODELS_DIR", tmp_path / "none")
    for resolve in (resolve_model_dir, resolve_model_root):
        with pytest.raises(ModelNotFound, match="boxmask export"):
            resolve(None)
