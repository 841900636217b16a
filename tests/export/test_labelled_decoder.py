"""The labelled decoder: masks of boxes that come with their class, without the box head.

Its masks must be the full decoder's for the same labels (the export's parity check and the
runtime both hold it to that); the runtime and the server take it only when every box has a
label and no class score is asked for; directories exported before it still work.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from boxmask.files import sha256_file
from boxmask.runtime import Predictor
from boxmask.runtime.contract import LABELLED_DECODER_INPUTS, LABELLED_DECODER_OUTPUTS
from tests.runtime.test_predictor import CountingSession
from tests.server.conftest import make_settings, png_bytes

BOXES = np.array([[2, 3, 40, 50], [10, 8, 60, 62], [0, 0, 30, 20], [33, 20, 64, 60]], np.float32)


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (60, 80, 3), dtype=np.uint8)


def _counting(model_dir: Path, **kwargs) -> Predictor:
    p = Predictor.from_dir(model_dir, intra_op_threads=1, **kwargs)
    p.decoder = CountingSession(p.decoder)  # type: ignore[assignment]
    assert p.labelled_decoder is not None
    p.labelled_decoder = CountingSession(p.labelled_decoder)  # type: ignore[assignment]
    return p


def test_export_writes_the_labelled_decoder_with_the_contract_names(exported_model_dir: Path):
    import onnx

    card = json.loads((exported_model_dir / "model.json").read_text())
    entry = card["files"]["labelled_decoder"]
    assert sha256_file(exported_model_dir / entry["path"]) == entry["sha256"]
    graph = onnx.load(str(exported_model_dir / entry["path"])).graph
    assert [i.name for i in graph.input] == list(LABELLED_DECODER_INPUTS)
    assert [o.name for o in graph.output] == list(LABELLED_DECODER_OUTPUTS)
    # No box head in it: the box head's two fully connected layers are Gemm/MatMul nodes.
    assert not [n for n in graph.node if n.op_type in ("Gemm", "MatMul", "Softmax")]
    parity = card["parity"]
    assert parity["passed"] and not parity["graphs"]["labelled_decoder"]["failures"]
    assert parity["graphs"]["labelled_decoder"]["min_mask_iou"] >= 0.99
    assert card["onnx"]["labelled_decoder"]["outputs"] == {"mask_logits": ["N", "1", "28", "28"]}


@pytest.mark.parametrize("n", [1, 4])
def test_labelled_masks_equal_the_full_decoders_and_skip_the_box_head(exported_model_dir: Path,
                                                                       n: int):
    p = _counting(exported_model_dir)
    key = p.set_image(_image())
    ids = [c.id for c in p.card.categories]
    labels = [ids[i % len(ids)] for i in range(n)]
    full = p.predict(BOXES[:n], labels=labels, key=key)
    assert (p.decoder.runs, p.labelled_decoder.runs) == (1, 0)
    fast = p.predict(BOXES[:n], labels=labels, key=key, class_scores=False)
    assert (p.decoder.runs, p.labelled_decoder.runs) == (1, 1)
    np.testing.assert_allclose(fast.mask_probs, full.mask_probs, atol=1e-5)
    assert np.array_equal(fast.masks, full.masks)
    assert list(fast.labels) == labels == list(full.labels)
    assert np.isnan(fast.scores).all() and np.isfinite(full.scores).all()


def test_a_box_without_label_takes_the_full_decoder(exported_model_dir: Path):
    p = _counting(exported_model_dir)
    key = p.set_image(_image(1))
    ids = [c.id for c in p.card.categories]
    pred = p.predict(BOXES[:2], labels=[ids[0], None], key=key, class_scores=False)
    assert (p.decoder.runs, p.labelled_decoder.runs) == (1, 0)
    assert np.isfinite(pred.scores).all()


def test_a_directory_exported_before_the_labelled_decoder_still_serves(exported_model_dir: Path,
                                                                        tmp_path: Path):
    old = tmp_path / "old"
    shutil.copytree(exported_model_dir, old)
    card = json.loads((old / "model.json").read_text())
    for key in [k for k in card["files"] if k.startswith("labelled_decoder")]:
        (old / card["files"].pop(key)["path"]).unlink()
    (old / "model.json").write_text(json.dumps(card))
    p = Predictor.from_dir(old, intra_op_threads=1)
    assert p.labelled_decoder is None
    pred = p.predict(BOXES[:1], labels=[p.card.categories[0].id], key=p.set_image(_image()),
                     class_scores=False)
    assert np.isfinite(pred.scores).all()


def test_int8_export_quantises_the_labelled_decoder_too(tiny_checkpoint: Path, tmp_path: Path):
    from boxmask.export.exporter import export_checkpoint

    out = tmp_path / "int8"
    card = export_checkpoint(tiny_checkpoint, out, int8=True, calibration_images=2, check=False)
    entry = card["files"]["labelled_decoder_int8"]
    assert sha256_file(out / entry["path"]) == entry["sha256"]
    p = _counting(out, precision="int8")
    assert "labelled_decoder.int8.onnx" in p.labelled_decoder.describe()
    key = p.set_image(_image(2))
    label = [p.card.categories[-1].id] * 3
    full = p.predict(BOXES[:3], labels=label, key=key)
    fast = p.predict(BOXES[:3], labels=label, key=key, class_scores=False)
    assert p.labelled_decoder.runs == 1
    # Quantised separately, the two int8 graphs round differently, but only a little.
    assert np.abs(fast.mask_probs - full.mask_probs).max() < 0.1


def test_server_uses_the_labelled_decoder_when_labels_are_given(model_dir: Path):
    from boxmask.server import create_app

    with TestClient(create_app(make_settings(model_dir))) as client:
        image_id = client.post("/v1/images", content=png_bytes(),
                               headers={"content-type": "image/png"}).json()["image_id"]
        predictor = client.app.state.registry.slot(None).predictor
        predictor.decoder = CountingSession(predictor.decoder)
        predictor.labelled_decoder = CountingSession(predictor.labelled_decoder)
        name = predictor.card.categories[0].name
        boxes = BOXES[:2].tolist()

        def segment(**extra) -> list[dict]:
            r = client.post("/v1/segment", json={"image_id": image_id, "boxes": boxes, **extra})
            assert r.status_code == 200, r.text
            return r.json()["instances"]

        fast = segment(labels=[name, name])
        assert (predictor.decoder.runs, predictor.labelled_decoder.runs) == (0, 1)
        assert [i["score"] for i in fast] == [None, None]
        scored = segment(labels=[name, name], class_scores=True)
        assert (predictor.decoder.runs, predictor.labelled_decoder.runs) == (1, 1)
        assert all(0.0 <= i["score"] <= 1.0 for i in scored)
        assert [i["mask"] for i in fast] == [i["mask"] for i in scored]
        mixed = segment(labels=[name, None])
        assert (predictor.decoder.runs, predictor.labelled_decoder.runs) == (2, 1)
        assert all(i["score"] is not None for i in mixed)


def test_server_settings_choose_the_encoder_input_size(model_dir: Path):
    from boxmask.server import create_app

    with TestClient(create_app(make_settings(model_dir, input_min_size=48))) as client:
        predictor = client.app.state.registry.slot(None).predictor
        assert predictor.input_min_size == 48
        assert predictor.input_max_size == predictor.card.preprocess.max_size
