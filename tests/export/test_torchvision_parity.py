"""An imported torchvision Mask R-CNN, exported and served, against torchvision itself.

For each architecture (v1, v2) with seeded random weights: the runtime's masks for given boxes
and labels against torchvision's mask branch on the same boxes, pasted the torchvision way
(mean IoU >= 0.99), and ``/v1/detect`` against ``model(images)`` (same labels, boxes within
1 px, scores within 1e-3).
"""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

from boxmask.runtime.prompted_masks import mask_iou
from tests.torchvision_models import import_overrides, write_torchvision_weights

ARCHS = ["maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2"]


@pytest.fixture(scope="module", params=ARCHS)
def imported(request, tmp_path_factory):
    """(arch, torchvision model, boxmask checkpoint, exported model directory, seconds taken,
    the exporter's own parity figures)."""
    from boxmask.export.exporter import export_checkpoint, load_trained_model
    from boxmask.export.parity import check_parity
    from boxmask.model.torchvision_import import import_torchvision

    torch.set_num_threads(2)
    arch = request.param
    tmp = tmp_path_factory.mktemp(arch)
    tv = write_torchvision_weights(arch, tmp / "weights.pth")
    start = time.perf_counter()
    import_torchvision(tmp / "weights.pth", arch, tmp / "imported.pt", import_overrides())
    # The exporter's check decodes 100 boxes per case: with R50's paper-width mask head that
    # is most of a minute on CPU, so it runs here on 20 (same bars, same code).
    export_checkpoint(tmp / "imported.pt", tmp / "model", name=arch, check=False)
    seconds = time.perf_counter() - start
    model, cfg, _, _ = load_trained_model(tmp / "imported.pt")
    parity = check_parity(model, tmp / "model", cfg, box_counts=(0, 1, 20), raise_on_failure=False)
    return arch, tv, tmp / "imported.pt", tmp / "model", seconds, parity


def _image(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth colour blobs (upsampled noise): structure at the scale of the boxes."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, max(h // 10, 2), max(w // 10, 2), generator=g)
    img = torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear")[0]
    return (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _boxes(n: int, h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, [w * 0.6, h * 0.6], size=(n, 2))
    wh = rng.uniform([w * 0.15, h * 0.15], [w * 0.4, h * 0.4], size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


@torch.no_grad()
def _torchvision_masks(tv, image: np.ndarray, boxes: np.ndarray, coco_ids: np.ndarray) -> np.ndarray:
    """torchvision's mask branch on given boxes and labels, its boxes scaled back by its own
    postprocess and its masks pasted by boxmask's (pixel-aligned) paste, which the runtime and
    boxmask's torch model use instead of torchvision's paste_masks_in_image."""
    from torchvision.models.detection.roi_heads import maskrcnn_inference
    from torchvision.models.detection.transform import resize_boxes

    from boxmask.model.paste import paste_masks

    x = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
    h, w = image.shape[:2]
    batch, _ = tv.transform([x])
    features = tv.backbone(batch.tensors)
    resized = resize_boxes(torch.from_numpy(boxes), (h, w), batch.image_sizes[0])
    rh = tv.roi_heads
    logits = rh.mask_predictor(rh.mask_head(rh.mask_roi_pool(features, [resized], batch.image_sizes)))
    probs = maskrcnn_inference(logits, [torch.from_numpy(coco_ids)])
    from boxmask.model.paste import grid_offset

    out = tv.transform.postprocess([{"boxes": resized}], batch.image_sizes, [(h, w)])
    # torchvision's weights learnt its half-pixel target grid: pasted half a resized pixel on.
    offset = grid_offset(False, (h, w), tuple(batch.image_sizes[0]))
    return (paste_masks(probs[0], out[0]["boxes"], (h, w), offset)[:, 0] > 0.5).numpy()


def test_exported_graphs_agree_with_the_imported_model(imported):
    arch, _, _, model_dir, _, parity = imported
    assert parity.passed, parity.failures
    assert parity["decoder"].min_mask_iou >= 0.99
    card = json.loads((model_dir / "model.json").read_text())
    assert card["num_classes"] == 80 and card["mode"] == "oracle"
    assert card["provenance"]["source"]["arch"] == arch


@pytest.mark.parametrize("hw", [(120, 160), (150, 110)])
def test_runtime_masks_match_torchvision_mask_branch(imported, hw):
    from boxmask.runtime import Predictor

    _, tv, _, model_dir, _, _ = imported
    h, w = hw
    image = _image(h, w, seed=h)
    boxes = _boxes(8, h, w, seed=w)
    card = json.loads((model_dir / "model.json").read_text())
    ids = np.array([c["id"] for c in card["categories"]])
    coco_ids = np.random.default_rng(h + w).choice(ids, size=len(boxes))
    predictor = Predictor.from_dir(model_dir)
    predictor.set_image(image)
    got = predictor.predict(boxes, labels=[int(i) for i in coco_ids])
    assert got.labels.tolist() == coco_ids.tolist()
    ref = _torchvision_masks(tv, image, boxes, coco_ids)
    # boxmask's masks never leave their box (docs/server.md): compare within the pixels each box
    # touches.
    for m, (x1, y1, x2, y2) in zip(ref, boxes, strict=True):
        inside = np.zeros_like(m)
        inside[int(np.floor(y1)):int(np.ceil(y2)), int(np.floor(x1)):int(np.ceil(x2))] = True
        m &= inside
    ious = [mask_iou(a, b) for a, b in zip(got.masks, ref, strict=True)]
    assert ref.any(axis=(1, 2)).all()  # the masks compared are not empty
    assert np.mean(ious) >= 0.99, ious


def test_detect_endpoint_matches_torchvision_model(imported):
    from fastapi.testclient import TestClient

    from boxmask.server import create_app
    from tests.server.conftest import make_settings

    _, tv, _, model_dir, _, _ = imported
    image = _image(120, 160, seed=7)
    with torch.no_grad():
        ref = tv([torch.from_numpy(image).permute(2, 0, 1).float() / 255.0])[0]
    assert len(ref["scores"]) >= 5 and len(set(ref["labels"].tolist())) >= 2
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    threshold = float(ref["scores"].min())  # every torchvision detection, nothing below
    with TestClient(create_app(make_settings(model_dir))) as client:
        r = client.post("/v1/detect", files={"image": ("x.png", buf.getvalue(), "image/png")},
                        data={"score_threshold": str(threshold - 1e-4), "max_detections": "100"})
    assert r.status_code == 200, r.text
    got = r.json()["instances"]
    assert len(got) == len(ref["scores"])
    # Matched one to one rather than by rank: random weights leave scores 1e-5 apart, within
    # float noise of each other, so two detections may trade places.
    unmatched = list(range(len(got)))
    for box, label, score in zip(ref["boxes"].numpy(), ref["labels"].tolist(), ref["scores"].tolist(), strict=True):
        match = [i for i in unmatched if got[i]["category_id"] == label
                 and np.abs(np.array(got[i]["box"]) - box).max() <= 1.0
                 and abs(got[i]["score"] - score) <= 1e-3]
        assert match, f"torchvision's {label} at {box.round(1)} ({score:.4f}) was not detected"
        unmatched.remove(match[0])
