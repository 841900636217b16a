"""A box-only dataset in, masks out: structure, fidelity to the input, accuracy on the truth."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from unittest.mock import ANY

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from boxmask.config import ConfigError
from boxmask.labeling import LabelSettings
from boxmask.runtime.card import ModelCard
from boxmask.runtime.prompted_masks import mask_iou
from tests.conftest import copy_without_detector
from tests.labeling.conftest import label


def _coco(path: Path) -> COCO:
    coco = COCO()
    coco.dataset = json.loads(Path(path).read_text())
    coco.createIndex()
    return coco


def test_round_trip_masks_every_known_box_and_keeps_every_other_field(dataset, model_dir):
    card = ModelCard.load(model_dir)
    report = label(dataset, model_dir)

    inp = json.loads(dataset["boxes"].read_text())
    out = json.loads(dataset["out"].read_text())
    truth = _coco(dataset["truth"])
    pred = _coco(dataset["out"])
    known = {c["id"] for c in inp["categories"] if c["name"] in card.names}
    seen_names = {c.name for c in card.categories if c.seen}

    # Everything but the annotations is untouched; annotations keep their order and fields.
    assert {k: v for k, v in out.items() if k != "annotations"} == \
           {k: v for k, v in inp.items() if k != "annotations"}
    assert len(out["annotations"]) == len(inp["annotations"])
    ious: dict[str, list[float]] = {"seen": [], "unseen": []}
    version = hashlib.sha256((model_dir / "model.json").read_bytes()).hexdigest()[:12]
    for a_in, a_out in zip(inp["annotations"], out["annotations"], strict=True):
        added = {k: a_out[k] for k in a_out.keys() - a_in.keys()}
        assert {k: a_out[k] for k in a_in} == a_in
        if a_in["category_id"] not in known:
            assert added == {"boxmask": {"status": "not_masked", "reason": "unknown_category",
                                         "model": card.name, "version": version}}
            continue
        if "segmentation" not in added:  # a random model may give an empty mask
            assert added["boxmask"]["status"] == "not_masked"
            assert a_in["id"] in [e["id"] for e in report["not_masked"]["empty_mask"]]
            continue
        meta = added["boxmask"]
        assert meta["status"] == "masked"
        assert meta["model"] == card.name and meta["version"] == version
        assert 0.0 <= meta["score"] <= 1.0
        image = truth.imgs[a_in["image_id"]]
        assert added["segmentation"]["size"] == [image["height"], image["width"]]
        mask = pred.annToMask(a_out).astype(bool)
        assert mask.sum() == meta["mask_area"] > 0
        # The mask stays inside its (pasted, hence slightly padded) box.
        x, y, w, h = a_in["bbox"]
        ys, xs = np.nonzero(mask)
        assert xs.min() >= int(x) - 1 and xs.max() <= x + w + 1
        assert ys.min() >= int(y) - 1 and ys.max() <= y + h + 1
        name = truth.cats[a_in["category_id"]]["name"]
        ious["seen" if name in seen_names else "unseen"].append(
            mask_iou(mask, truth.annToMask(truth.anns[a_in["id"]]).astype(bool)))

    summary = report["summary"]
    assert summary["annotations_masked"] == sum(len(v) for v in ious.values()) > 0
    assert summary["images_labeled"] == summary["images"] == len(inp["images"])
    unknown_names = {c["name"] for c in report["unknown_categories"]}
    assert unknown_names == {c["name"] for c in inp["categories"] if c["id"] not in known}
    # The fixture model is barely trained: its masks' quality is checked on the bundled demo
    # model instead (test_bundled_model_quality.py).
    assert all(0.0 <= v <= 1.0 for side in ious.values() for v in side)


def test_input_file_is_byte_identical_after_labeling(dataset, model_dir):
    before = dataset["boxes"].read_bytes()
    stat = dataset["boxes"].stat()
    label(dataset, model_dir)
    assert dataset["boxes"].read_bytes() == before
    assert dataset["boxes"].stat().st_mtime_ns == stat.st_mtime_ns
    # Nothing but the output and its report is left beside the output.
    assert sorted(p.name for p in dataset["out"].parent.iterdir()) == ["labels.json",
                                                                       "labels.report.json"]


def test_output_may_not_overwrite_the_input(dataset, model_dir):
    before = dataset["boxes"].read_bytes()
    with pytest.raises(ConfigError, match="overwrite the input"):
        label(dataset, model_dir, out=dataset["boxes"])
    # Nor may the report or the journal written beside the output.
    named_like_a_report = dataset["boxes"].with_name("x.report.json")
    named_like_a_report.write_bytes(before)
    with pytest.raises(ConfigError, match=r"the report .* would overwrite the input"):
        label(dataset, model_dir, out=dataset["boxes"].with_name("x.json"), coco=named_like_a_report)
    assert named_like_a_report.read_bytes() == before
    with pytest.raises(ConfigError, match="is a folder"):
        label(dataset, model_dir, out=dataset["images"])
    assert dataset["boxes"].read_bytes() == before


def test_output_files_get_the_umask_mode_and_survive_odd_unicode(dataset, model_dir):
    import os

    coco = json.loads(dataset["boxes"].read_text())
    coco.setdefault("info", {})["description"] = "caf\u00e9 \ud83d"  # a lone surrogate: valid JSON
    odd = dataset["boxes"].with_name("odd.json")
    odd.write_text(json.dumps(coco))  # ASCII: the surrogate as a \\ud83d escape
    assert "\\ud83d" in odd.read_text()
    old = os.umask(0o022)
    try:
        label(dataset, model_dir, coco=odd)
    finally:
        os.umask(old)
    out = json.loads(dataset["out"].read_text())
    assert out["info"]["description"] == "caf\u00e9 \ud83d"
    for path in (dataset["out"], dataset["out"].with_name("labels.report.json")):
        assert path.stat().st_mode & 0o777 == 0o644, oct(path.stat().st_mode)


def test_polygon_masks_decode_with_pycocotools(dataset, model_dir):
    label(dataset, model_dir, settings=LabelSettings(mask_format="polygon"))
    out = json.loads(dataset["out"].read_text())
    coco = _coco(dataset["out"])
    masked = [a for a in out["annotations"] if a["boxmask"]["status"] == "masked"]
    assert masked
    for ann in masked:
        assert isinstance(ann["segmentation"], list)
        assert all(len(p) >= 6 and len(p) % 2 == 0 for p in ann["segmentation"])
        assert coco.annToMask(ann).any(), json.dumps(ann)


def test_only_missing_keeps_existing_segmentations(dataset, model_dir):
    coco = json.loads(dataset["boxes"].read_text())
    truth = json.loads(dataset["truth"].read_text())
    # Half the annotations already have their mask: those must come out unchanged.
    for ann, t in list(zip(coco["annotations"], truth["annotations"], strict=True))[::2]:
        ann["segmentation"] = t["segmentation"]
    partial = dataset["boxes"].with_name("partial.json")
    partial.write_text(json.dumps(coco))
    report = label(dataset, model_dir, coco=partial, only_missing=True)
    out = json.loads(dataset["out"].read_text())
    for a_in, a_out in zip(coco["annotations"], out["annotations"], strict=True):
        if "segmentation" in a_in:
            a_out = dict(a_out)
            assert a_out.pop("boxmask") == {"status": "not_masked", "reason": "has_segmentation",
                                            "model": ANY, "version": ANY}
            assert a_out == a_in
    assert len(report["not_masked"]["has_segmentation"]) == len(coco["annotations"][::2])
    # Each entry says which annotation (its position: ids may repeat) on which image.
    for entry in report["not_masked"]["has_segmentation"]:
        ann = coco["annotations"][entry["index"]]
        assert (entry["id"], entry["image_id"]) == (ann["id"], ann["image_id"])


def test_min_score_leaves_low_scoring_annotations_as_they_were(dataset, model_dir):
    report = label(dataset, model_dir, settings=LabelSettings(min_score=0.9999))
    out = json.loads(dataset["out"].read_text())
    masked = [a for a in out["annotations"] if a["boxmask"]["status"] == "masked"]
    assert all(a["boxmask"]["score"] >= 0.9999 for a in masked)
    dropped = {e["index"] for e in report["not_masked"].get("below_min_score", [])}
    assert dropped
    for i in dropped:
        ann = out["annotations"][i]
        assert "segmentation" not in ann
        assert ann["boxmask"]["status"] == "not_masked"
        assert ann["boxmask"]["reason"] == "below_min_score"


def test_label_map_renames_categories_and_unknown_ones_are_reported(dataset, model_dir, tmp_path):
    card = ModelCard.load(model_dir)
    coco = json.loads(dataset["boxes"].read_text())
    renamed = next(c for c in coco["categories"] if c["name"] in card.names)
    model_name, renamed["name"] = renamed["name"], "renamed-" + renamed["name"]
    coco["categories"].append({"id": 999, "name": "zebra"})
    coco["annotations"].append({"id": 10_000, "image_id": coco["images"][0]["id"],
                                "category_id": 999, "bbox": [1, 1, 20, 20], "area": 400,
                                "iscrowd": 0, "note": "kept as is"})
    src = tmp_path / "renamed.json"
    src.write_text(json.dumps(coco))

    # Without the map, the renamed category is unknown to the model.
    report = label(dataset, model_dir, coco=src)
    assert renamed["name"] in {c["name"] for c in report["unknown_categories"]}

    label_map = tmp_path / "map.yaml"
    label_map.write_text(f"{renamed['name']}: {model_name}\n")
    report = label(dataset, model_dir, coco=src, label_map=label_map)
    out = json.loads(dataset["out"].read_text())
    unknown = {c["name"]: c for c in report["unknown_categories"]}
    assert renamed["name"] not in unknown and unknown["zebra"]["annotations"] == 1
    zebra = dict(out["annotations"][-1])
    assert zebra.pop("boxmask")["status"] == "not_masked"
    assert zebra == coco["annotations"][-1]  # the zebra, untouched but for its marker
    renamed_masked = [a for a in out["annotations"]
                      if a["category_id"] == renamed["id"] and a["boxmask"]["status"] == "masked"]
    assert renamed_masked

    label_map.write_text(f"{renamed['name']}: no-such-model-category\n")
    with pytest.raises(ConfigError, match="model does not know"):
        label(dataset, model_dir, coco=src, label_map=label_map)


def test_pre_annotate_adds_marked_detections_only_to_images_without_boxes(dataset, model_dir, tmp_path):
    coco = json.loads(dataset["boxes"].read_text())
    empty_image = coco["images"][0]["id"]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] != empty_image]
    src = tmp_path / "some_empty.json"
    src.write_text(json.dumps(coco))
    report = label(dataset, model_dir, coco=src, pre_annotate=True,
                   settings=LabelSettings(detect_threshold=0.0))
    out = json.loads(dataset["out"].read_text())
    new = out["annotations"][len(coco["annotations"]):]
    assert report["summary"]["pre_annotations"] == len(new)
    assert len(new) + report["summary"]["pre_annotations_unmatched"] > 0
    ids = [a["id"] for a in out["annotations"]]
    assert len(set(ids)) == len(ids)
    cat_ids = {c["id"] for c in coco["categories"]}
    for ann in new:
        assert ann["image_id"] == empty_image
        assert ann["boxmask"]["pre_annotated"] is True
        assert ann["category_id"] in cat_ids
        rle = mask_utils.frPyObjects(ann["segmentation"], *ann["segmentation"]["size"]) \
            if isinstance(ann["segmentation"]["counts"], list) else ann["segmentation"]
        assert mask_utils.area(rle) == ann["area"] > 0


def test_pre_annotate_with_a_model_without_a_detector_is_refused_before_any_work(
        dataset, model_dir, tmp_path):
    no_detector = copy_without_detector(model_dir, tmp_path / "no_detector")
    with pytest.raises(ConfigError, match="--pre-annotate needs a detector"):
        label(dataset, no_detector, pre_annotate=True)
    assert not dataset["out"].exists()
    assert not list(dataset["out"].parent.glob("*.journal.jsonl"))
