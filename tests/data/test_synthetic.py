"""The synthetic overlap dataset: deterministic, COCO-valid, heavily overlapping."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from boxmask.data.coco import decode_segmentation, load_coco
from boxmask.data.overlap import overlap_scores
from boxmask.data.synthetic import generate


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(tmp_path, tiny_synth):
    root, _ = tiny_synth
    again = tmp_path / "again"
    generate(again, seed=3, num_train=6, num_val=2, image_size=64)
    first, second = _files(root), _files(again)
    assert sorted(first) == sorted(second)
    assert "annotations/instances_train.json" in first and "images/val/000001.png" in first
    assert first == second
    other = tmp_path / "other"
    generate(other, seed=4, num_train=6, num_val=2, image_size=64)
    assert _files(other)["images/train/000000.png"] != first["images/train/000000.png"]


@pytest.mark.parametrize("split", ["train", "val"])
def test_annotations_are_valid_coco_whose_masks_match_area_and_box(tiny_synth, split):
    root, _ = tiny_synth
    coco = load_coco(root / "annotations" / f"instances_{split}.json")
    assert len(coco.dataset["categories"]) >= 8
    assert len(coco.imgs) == (6 if split == "train" else 2)
    assert coco.anns, "every split should hold instances"
    for img in coco.imgs.values():
        with Image.open(root / "images" / split / img["file_name"]) as im:
            assert im.mode == "RGB" and im.size == (img["width"], img["height"]) == (64, 64)
    for ann in coco.anns.values():
        assert ann["iscrowd"] == 0
        mask = coco.annToMask(ann)  # pycocotools' own decoder
        assert np.array_equal(mask, decode_segmentation(ann["segmentation"], 64, 64))
        assert mask.sum() == ann["area"] > 0
        ys, xs = np.nonzero(mask)
        x, y, w, h = ann["bbox"]
        assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_visible_masks_of_one_image_do_not_overlap(tiny_synth):
    root, _ = tiny_synth
    coco = load_coco(root / "annotations" / "instances_train.json")
    for image_id in coco.imgs:
        anns = coco.imgToAnns[image_id]
        if anns:
            stack = np.stack([coco.annToMask(a) for a in anns]).astype(int)
            assert stack.sum(0).max() <= 1


def test_stats_report_counts_split_and_overlap_share_that_match_the_json(tiny_synth):
    root, stats = tiny_synth
    assert json.loads((root / "stats.json").read_text()) == stats
    assert len(stats["suggested_split"]["seen"]) == 4 and len(stats["suggested_split"]["unseen"]) == 4
    coco = load_coco(root / "annotations" / "instances_train.json")
    train = stats["splits"]["train"]
    assert train["images"] == 6 and train["instances"] == len(coco.anns)
    assert sum(train["per_category"].values()) == len(coco.anns)
    scores = []
    for image_id in coco.imgs:
        anns = coco.imgToAnns[image_id]
        if not anns:
            continue
        masks = np.stack([coco.annToMask(a) for a in anns]).astype(bool)
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                           a["bbox"][1] + a["bbox"][3]] for a in anns])
        scores.extend(overlap_scores(boxes, masks))
    share = float(np.mean(np.asarray(scores) >= stats["overlap_threshold"]))
    assert train["overlap_share"] == pytest.approx(share, abs=1e-4)


def test_overlap_share_is_substantial_on_a_larger_sample(tmp_path):
    # 40 images at 128 px: enough for the share to settle near its value at full size.
    stats = generate(tmp_path / "ds", seed=0, num_train=40, num_val=0, image_size=128)
    assert stats["splits"]["train"]["overlap_share"] >= 0.35
    assert stats["splits"]["train"]["instances_per_image"] >= 4
    assert all(n > 0 for n in stats["splits"]["train"]["per_category"].values())


def test_the_clear_scene_keeps_a_third_of_instances_overlapped_with_readable_masks(tmp_path):
    # The headline benchmark's scenes: fewer piles than dense, yet O >= 0.3 for >= 30 % of
    # the instances (the condition), and masks that fill more of their box.
    clear = generate(tmp_path / "clear", seed=0, num_train=60, num_val=0, image_size=128,
                     scene="clear")
    dense = generate(tmp_path / "dense", seed=0, num_train=60, num_val=0, image_size=128)
    assert clear["scene_name"] == "clear" and dense["scene_name"] == "dense"
    assert clear["scene"]["texture_contrast"] < 1.0 == dense["scene"]["texture_contrast"]
    train = clear["splits"]["train"]
    assert train["overlap_share"] >= 0.30
    assert train["instances_per_image"] >= 3.5
    assert all(n > 0 for n in train["per_category"].values())
    assert train["instances_per_image"] < dense["splits"]["train"]["instances_per_image"]


def test_an_unknown_scene_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown scene 'busy'.*dense, clear"):
        generate(tmp_path / "ds", num_train=1, num_val=0, image_size=32, scene="busy")
    assert not (tmp_path / "ds").exists()


def test_refuses_a_non_empty_folder_unless_asked_to_overwrite(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        generate(out, seed=0, num_train=1, num_val=0, image_size=32)
    assert (out / "keep.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temporary folder left behind
    generate(out, seed=0, num_train=1, num_val=0, image_size=32, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "stats.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_bad_sizes_and_counts_are_refused(tmp_path):
    with pytest.raises(ValueError, match="at least 32"):
        generate(tmp_path / "a", image_size=16)
    with pytest.raises(ValueError, match="training image"):
        generate(tmp_path / "b", num_train=0)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
