"""model.json is parsed strictly, files are checked against their sha256, categories resolve."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from boxmask.runtime.card import ModelCard
from boxmask.runtime.errors import ModelDirError, UnknownLabel


def _copy(contract_model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(contract_model_dir, tmp_path / "model"))


def test_card_loads_and_resolves_categories_by_id_name_and_label(contract_model_dir: Path) -> None:
    card = ModelCard.load(contract_model_dir)
    assert card.by_name("square").id == 3
    assert card.by_id(7).name == "triangle" and not card.by_id(7).seen
    assert card.by_label(2).name == "square"
    assert card.resolve("disc").label == 1 and card.resolve(3).label == 2
    assert card.label_to_id() == [0, 1, 3, 7]


def test_a_card_without_mask_grid_is_torchvisions_grid(contract_model_dir: Path,
                                                       tmp_path: Path) -> None:
    """Cards exported before the field existed came from models of torchvision's target grid;
    the predictor pastes their masks half a resized pixel on (boxmask/model/paste.py)."""
    from boxmask.runtime.predictor import Predictor
    from boxmask.runtime.transforms import ResizeInfo

    model = _copy(contract_model_dir, tmp_path)
    card_path = model / "model.json"
    card = json.loads(card_path.read_text())
    card.pop("mask_grid", None)
    card_path.write_text(json.dumps(card))
    old = ModelCard.load(model)
    assert old.mask_grid == "torchvision"
    info = ResizeInfo(original_size=(100, 200), resized_size=(50, 100), padded_size=(64, 128))
    assert Predictor._paste_offset(SimpleNamespace(card=old), info) == (1.0, 1.0)
    card["mask_grid"] = "aligned"
    card_path.write_text(json.dumps(card))
    assert Predictor._paste_offset(SimpleNamespace(card=ModelCard.load(model)), info) == (0.0, 0.0)


@pytest.mark.parametrize("label", ["dog", 2, 1.5, True])
def test_unknown_labels_list_the_known_names(contract_model_dir: Path, label: object) -> None:
    card = ModelCard.load(contract_model_dir, verify=False)
    with pytest.raises(UnknownLabel) as info:
        card.resolve(label)  # type: ignore[arg-type]
    assert info.value.known_names == ["disc", "square", "triangle"]
    assert "disc, square, triangle" in str(info.value)


def test_a_modified_file_fails_the_checksum(contract_model_dir: Path, tmp_path: Path) -> None:
    copy = _copy(contract_model_dir, tmp_path)
    with open(copy / "decoder.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelDirError, match="checksum mismatch for 'decoder'"):
        ModelCard.load(copy)
    ModelCard.load(copy, verify=["encoder"])  # only what is asked for is checked


def test_a_missing_file_or_card_is_reported(contract_model_dir: Path, tmp_path: Path) -> None:
    copy = _copy(contract_model_dir, tmp_path)
    (copy / "detector.onnx").unlink()
    with pytest.raises(ModelDirError, match="'detector' is missing"):
        ModelCard.load(copy)
    with pytest.raises(ModelDirError, match=r"model\.json is missing"):
        ModelCard.load(tmp_path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(format_version=99), "format_version 99"),
        (lambda c: c["categories"][0].update(label=5), "contiguous labels"),
        (lambda c: c["categories"][1].update(name="disc"), "names must be unique"),
        (lambda c: c.pop("preprocess"), "preprocess"),
    ],
)
def test_invalid_cards_are_rejected_with_the_reason(contract_model_dir: Path, edit, message: str) -> None:
    card = json.loads((contract_model_dir / "model.json").read_text())
    edit(card)
    with pytest.raises(ModelDirError, match=message):
        ModelCard.from_json(json.dumps(card))
