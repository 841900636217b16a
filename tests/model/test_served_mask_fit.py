"""``model.served_mask_fit: box``: the masks of the categories a model learned from boxes alone
are served fitted to their box, in the eager model and in the exported graphs alike; the other
categories' masks and training are unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def test_the_logit_shift_is_the_fitted_thresholds_logit() -> None:
    from boxmask.model.pseudo_masks import box_fit_logit_shift, fit_thresholds, fit_to_box

    g = torch.Generator().manual_seed(0)
    probs = torch.rand(6, 28, 28, generator=g) * torch.linspace(0.1, 1.0, 6)[:, None, None]
    inside = torch.ones(6, 28, 28, dtype=torch.bool)
    t = fit_thresholds(probs, inside, 0.9)
    shift = box_fit_logit_shift(probs, 0.9)
    torch.testing.assert_close(shift, torch.logit(t), rtol=1e-5, atol=1e-5)
    # Subtracted from the logits, the mask at 0.5 is the fitted mask.
    logits = torch.logit(probs.clamp(1e-6, 1 - 1e-6)) - shift[:, None, None]
    fitted = fit_to_box(probs, inside, 0.9)
    agree = ((logits >= 0).float() == fitted).float().mean()
    assert agree > 0.999  # cells exactly at a threshold may round either way


def _rewritten(ckpt_path: Path, dst: Path, **model) -> Path:
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    ckpt["config"]["model"].update(model)
    torch.save(ckpt, dst)
    return dst


def _decode(model, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor):
    with torch.no_grad():
        features, resized = model.encode(image)
        scale = model.resize_scale(tuple(image.shape[-2:]), resized)
        logits, *_ = model.roi_heads.decode_boxes_with_quality(
            features, boxes * scale.repeat(2)[None], labels, resized)
    return logits[:, 0]


def test_only_the_categories_learned_from_boxes_are_fitted(tiny_checkpoint: Path,
                                                          tiny_dataset: Path,
                                                          tmp_path: Path) -> None:
    from boxmask.data.coco import CocoInstances
    from boxmask.model.checkpoint import load_checkpoint, model_from_checkpoint
    from boxmask.model.pseudo_masks import fit_to_box

    plain, cats = model_from_checkpoint(load_checkpoint(tiny_checkpoint))
    fitted_ckpt = _rewritten(tiny_checkpoint, tmp_path / "fit.pt", served_mask_fit="box")
    fitted, _ = model_from_checkpoint(load_checkpoint(fitted_ckpt))
    by_boxes = {int(c["label"]) for c in cats if not c["seen"]}
    assert by_boxes and by_boxes != {int(c["label"]) for c in cats}
    flags = fitted.roi_heads.mask_branch.served_fit_labels
    assert {i for i in range(len(flags)) if flags[i]} == by_boxes

    ds = CocoInstances(tiny_dataset / "images" / "val",
                       tiny_dataset / "annotations" / "instances_val.json", set(),
                       drop_empty=False, allow_no_masks=True)
    image = ds.load_image(ds.ids[0])
    boxes = torch.tensor([[2.0, 2.0, 40.0, 30.0], [10.0, 8.0, 60.0, 58.0]] * len(cats))
    labels = torch.tensor([int(c["label"]) for c in cats for _ in range(2)])
    a, b = _decode(plain, image, boxes, labels), _decode(fitted, image, boxes, labels)
    moved = [i for i, label in enumerate(labels.tolist()) if label in by_boxes
             and not torch.equal(a[i] >= 0, b[i] >= 0)]
    assert moved, "no mask of a box-taught category needed the fit: the test shows nothing"
    for i, label in enumerate(labels.tolist()):
        if label in by_boxes:
            want = fit_to_box(a[i:i + 1].sigmoid(), torch.ones(1, *a.shape[1:], dtype=torch.bool),
                              0.9)[0]
            assert ((b[i] >= 0).float() == want).float().mean() > 0.999
        else:
            torch.testing.assert_close(b[i], a[i])


def test_the_exported_graphs_serve_the_fitted_masks(tiny_checkpoint: Path, tiny_dataset: Path,
                                                    tmp_path: Path) -> None:
    """The exporter's own parity check runs eager against ONNX with the fit in both; the
    runtime's masks are the eager model's."""
    from PIL import Image

    from boxmask.export.exporter import export_checkpoint
    from boxmask.model.checkpoint import load_checkpoint, model_from_checkpoint
    from boxmask.runtime import Predictor

    ckpt = _rewritten(tiny_checkpoint, tmp_path / "fit.pt", served_mask_fit="box")
    out = tmp_path / "model"
    export_checkpoint(ckpt, out, name="fitted")
    model, cats = model_from_checkpoint(load_checkpoint(ckpt))
    path = min((tiny_dataset / "images" / "val").glob("*.png"))
    rgb = np.asarray(Image.open(path).convert("RGB"))
    p = Predictor.from_dir(out, intra_op_threads=1)
    boxes = [[2, 2, 40, 30], [10, 8, 60, 58]]
    names = [c["name"] for c in cats if not c["seen"]][:1] * 2
    pred = p.predict(boxes, labels=names, key=p.set_image(rgb), class_scores=False)
    label = next(int(c["label"]) for c in cats if c["name"] == names[0])
    image = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0
    eager = _decode(model, image, torch.tensor(boxes, dtype=torch.float32),
                    torch.tensor([label, label])).sigmoid().numpy()
    np.testing.assert_allclose(pred.mask_probs, eager, atol=1e-4)


def test_the_box_guard_serves_the_box_where_its_expected_iou_is_higher() -> None:
    from boxmask.model.mask_branch import BOX_LOGIT, box_guard

    def logits(p: torch.Tensor) -> torch.Tensor:
        return torch.logit(p.clamp(1e-6, 1 - 1e-6))[None, None]

    confident = torch.full((28, 28), 0.02)
    confident[4:20, 6:22] = 0.98  # a sure mask over a third of its box: kept
    unsure = torch.full((28, 28), 0.45)
    unsure[2:26, 2:26] = 0.9  # sure of the middle, half-sure of the rest: the box is the bet
    # E[box] = mean(p) = 0.80; E[mask] = 0.9 * 576 / (576 + 0.45 * 208) = 0.78.
    both = torch.cat([logits(confident), logits(unsure)])
    out = box_guard(both, torch.tensor([True, True]))
    torch.testing.assert_close(out[0], both[0])
    assert torch.all(out[1] == BOX_LOGIT)
    # Only where asked (the labels learned from boxes alone).
    kept = box_guard(both, torch.tensor([True, False]))
    torch.testing.assert_close(kept, both)
    assert box_guard(both[:0], torch.zeros(0, dtype=torch.bool)).shape == (0, 1, 28, 28)


def test_the_box_guard_is_in_the_model_and_the_exported_graphs(tiny_checkpoint: Path,
                                                                tmp_path: Path) -> None:
    """Guarded labels are the box-taught ones; the exporter's eager-vs-ONNX parity check passes
    with the guard in both, and masks the guard turned into boxes come back as boxes."""
    from boxmask.export.exporter import export_checkpoint
    from boxmask.model.checkpoint import load_checkpoint, model_from_checkpoint
    from boxmask.model.mask_branch import BOX_LOGIT
    from boxmask.runtime import Predictor

    ckpt = _rewritten(tiny_checkpoint, tmp_path / "guard.pt", served_box_guard="expected_iou")
    model, cats = model_from_checkpoint(load_checkpoint(ckpt))
    branch = model.roi_heads.mask_branch
    flags = branch.served_fit_labels
    assert branch.served_box_guard and branch.served_mask_fit_cover == 0
    assert {i for i in range(len(flags)) if flags[i]} == {int(c["label"]) for c in cats
                                                          if not c["seen"]}
    out = tmp_path / "model"
    export_checkpoint(ckpt, out, name="guarded")  # raises on a parity failure
    p = Predictor.from_dir(out, intra_op_threads=1)
    rgb = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    name = next(c["name"] for c in cats if not c["seen"])
    boxes = [[2, 2, 40, 30], [10, 8, 60, 58], [0, 0, 64, 64]]
    pred = p.predict(boxes, labels=[name] * 3, key=p.set_image(rgb), class_scores=False)
    label = next(int(c["label"]) for c in cats if c["name"] == name)
    image = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0
    eager = _decode(model, image, torch.tensor(boxes, dtype=torch.float32),
                    torch.tensor([label] * 3))
    np.testing.assert_allclose(pred.mask_probs, eager.sigmoid().numpy(), atol=1e-4)
    # The runtime says which masks the guard made boxes: those the eager model did.
    np.testing.assert_array_equal(pred.box_fallback,
                                  (eager == BOX_LOGIT).flatten(1).all(dim=1).numpy())


def test_the_runtime_and_the_server_say_where_a_mask_is_its_box() -> None:
    from boxmask.model.mask_branch import BOX_LOGIT
    from boxmask.runtime.predictor import Prediction
    from boxmask.server.inference import instances

    probs = np.full((2, 28, 28), 0.2, dtype=np.float32)
    probs[0, 5:20, 5:20] = 0.97
    probs[1] = 1 / (1 + np.exp(-BOX_LOGIT))  # the guard's box
    pred = Prediction(scores=np.array([0.9, 0.8], np.float32), labels=np.array([1, 2]),
                      boxes=np.array([[0, 0, 20, 20], [4, 6, 30, 26]], np.float32),
                      mask_probs=probs, names=["a", "b"], image_size=(40, 40))
    np.testing.assert_array_equal(pred.box_fallback, [False, True])
    assert pred.subset([1]).box_fallback.tolist() == [True]
    out = instances(pred, "rle")
    assert [i.box_fallback for i in out] == [False, True]
    # The box's mask is the box's pixels.
    assert pred.mask(1)[6:26, 4:30].all() and pred.mask(1).sum() == 20 * 26
