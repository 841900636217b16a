"""benchmarks/peers.py without the SAM family installed: its table, its skip path, and one
run of each timing path on tiny models (a fake SAM-like peer, the tiny exported boxmask model).
Nothing here is timed against a bar."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "peers.py"


@pytest.fixture(scope="module")
def peers():
    yield load_script(SCRIPT, "peers_benchmark")
    sys.modules.pop("peers_benchmark", None)


def _result(peers, name: str, family: str, enc: float, box: float):
    return peers.Result(name, family, "fp32", enc, {1: box, 10: 10 * box, 100: 100 * box}, 300.0)


def test_ratios_are_against_the_fastest_peer_in_each_column(peers):
    table = peers.markdown_table([
        _result(peers, "Slow SAM", "peer", 2000.0, 40.0),
        _result(peers, "Fast SAM", "peer", 500.0, 50.0),
        _result(peers, "boxmask", "boxmask", 1000.0, 5.0),
    ])
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()}
    assert "2,000 (4.00x)" in rows["Slow SAM"] and "40.0 (1.00x)" in rows["Slow SAM"]
    assert "500 (1.00x)" in rows["Fast SAM"]
    # boxmask: encoder 1000 / 500, one box 5 / 40, first mask 1005 / (500 + 50).
    assert "1,000 (2.00x)" in rows["boxmask"] and "5.0 (0.12x)" in rows["boxmask"]
    assert "1,005 (1.83x)" in rows["boxmask"]
    assert "encoder ms: Fast SAM" in table and "1 box ms: Slow SAM" in table


def test_without_peers_the_table_has_no_ratios(peers):
    table = peers.markdown_table([_result(peers, "boxmask", "boxmask", 1000.0, 5.0)])
    assert "x)" not in table.splitlines()[-1] and "against the fastest peer" not in table


def test_missing_packages_are_skipped_with_the_install_command(peers, monkeypatch, capsys):
    monkeypatch.setattr(peers, "missing_module", lambda module: True)
    monkeypatch.setattr(peers, "photos", lambda: {"tiny": np.zeros((32, 48, 3), np.uint8)})
    peers.main(["--models", "--threads", "1"])
    out = capsys.readouterr().out
    for spec in peers.PEERS.values():
        assert f"skipped {spec.name}: package `{spec.module}` is not installed" in out
        assert spec.install in out


def _export_fake_sam(folder: Path) -> dict:
    """A SAM-shaped pair of graphs, tiny: the decoder takes SamOnnxModel's inputs."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Decoder(nn.Module):
        def forward(self, emb, coords, labels, mask_input, has_mask, orig):
            low = emb.mean(1, keepdim=True) + coords.mean((1, 2)).view(-1, 1, 1, 1) * labels.sum()
            h, w = orig.to(torch.int64)[0], orig.to(torch.int64)[1]
            up = F.interpolate(low.expand(coords.shape[0], 1, -1, -1), size=(h, w),
                               mode="bilinear", align_corners=False)
            return up + has_mask + mask_input.mean(), low.flatten(1)[:, :1], low

    peers = sys.modules["peers_benchmark"]
    encoder = nn.Conv2d(3, 8, 16, stride=16)
    peers._export(encoder, (torch.randn(1, 3, 64, 64),), folder / "encoder.onnx", ["image"],
                  ["image_embeddings"])
    args = (torch.randn(1, 8, 4, 4), torch.rand(1, 2, 2) * 64, torch.tensor([[2.0, 3.0]]),
            torch.zeros(1, 1, 16, 16), torch.zeros(1), torch.tensor([30.0, 40.0]))
    peers._export(Decoder(), args, folder / "decoder.onnx",
                  ["image_embeddings", "point_coords", "point_labels", "mask_input",
                   "has_mask_input", "orig_im_size"], ["masks", "iou_predictions", "low_res_masks"],
                  {"point_coords": {0: "boxes"}, "point_labels": {0: "boxes"}, "masks": {0: "boxes"},
                   "iou_predictions": {0: "boxes"}, "low_res_masks": {0: "boxes"}})
    return {"encoder_size": 64, "frame": 64, "mask_input": [16, 16], "kind": "sam",
            "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}


def test_a_peer_and_a_boxmask_model_are_timed_in_one_table(peers, monkeypatch, tmp_path,
                                                           model_dir):
    monkeypatch.setitem(peers.PEERS, "fake", peers.PeerSpec("Fake SAM", "numpy", "-",
                                                             _export_fake_sam))
    images = {"a": np.random.default_rng(0).integers(0, 256, (30, 40, 3), np.uint8),
              "b": np.random.default_rng(1).integers(0, 256, (50, 36, 3), np.uint8)}
    peer = peers.time_peer("fake", tmp_path, images, threads=1, repeats=1)
    assert (tmp_path / "fake" / "meta.json").is_file()  # cached for the next run
    model = peers.PeerModel(tmp_path / "fake", peers.export_peer("fake", tmp_path)[1], threads=1)
    masks = model.masks(model.encode(images["b"]), peers.boxes_for(images["b"], 12, 0))
    assert len(masks) == 12 and masks[0].shape == (50, 36)
    ours = peers.time_boxmask("demo", model_dir, images, threads=1, repeats=1, precision="fp32")
    assert "labelled decoder" in ours.detail
    for r in (peer, ours):
        assert set(r.boxes_ms) == set(peers.BOX_COUNTS) and r.encoder_ms > 0 and r.peak_rss_mb >= 0
    table = peers.markdown_table([peer, ours])
    assert "Fake SAM" in table and "1 box, no label (full decoder)" in table
