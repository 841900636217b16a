"""CocoInstances: targets as torchvision's references build them, unseen masks never decoded."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from boxmask.config import ConfigError, DataConfig
from boxmask.data.build import build_dataset
from boxmask.data.coco import CocoInstances, collate, decode_segmentation

H, W = 16, 20


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _uncompressed_rle(mask: np.ndarray) -> dict:
    # Column-major run lengths starting with a run of zeros, as COCO's iscrowd RLE.
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    return {"size": [H, W], "counts": counts}


@pytest.fixture
def hand_made(tmp_path: Path) -> tuple[Path, dict]:
    """Two images; category ids 1, 3, 7 (7 unseen) to check contiguous labels."""
    images = tmp_path / "images"
    images.mkdir()
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:, :10] = (255, 0, 0)
    Image.fromarray(rgb).save(images / "a.png")
    Image.fromarray(rgb).save(images / "b.png")
    block = np.zeros((H, W), bool)
    block[2:6, 12:18] = True

    def ann(i: int, img: int, cat: int, bbox: list, seg: object, crowd: int = 0) -> dict:
        return {"id": i, "image_id": img, "category_id": cat, "bbox": bbox, "segmentation": seg,
                "area": 10.0 * i, "iscrowd": crowd}

    data = {
        "images": [{"id": 10, "file_name": "a.png", "width": W, "height": H},
                   {"id": 11, "file_name": "b.png", "width": W, "height": H}],
        "categories": [{"id": 7, "name": "star"}, {"id": 1, "name": "disc"},
                       {"id": 3, "name": "ring"}],
        "annotations": [
            ann(1, 10, 1, [1, 1, 4, 4], [[1, 1, 5, 1, 5, 5, 1, 5]]),  # polygon
            ann(2, 10, 3, [12, 2, 6, 4], _rle(block)),  # compressed RLE
            ann(3, 10, 1, [12, 2, 6, 4], _uncompressed_rle(block)),  # uncompressed RLE
            # Unseen, with a segmentation that cannot be decoded: any attempt would raise.
            ann(4, 10, 7, [6, 8, 5, 5], {"size": [999, 999], "counts": "not an RLE"}),
            ann(5, 10, 1, [0, 0, 20, 16], _rle(np.ones((H, W), bool)), crowd=1),  # crowd
            ann(6, 10, 3, [3, 3, 0, 5], [[3, 3, 3, 8, 3, 8]]),  # degenerate box
            ann(7, 10, 3, [15, 10, 20, 20], [[15, 10, 19, 10, 19, 15, 15, 15]]),  # past the edge
            ann(8, 11, 1, [0, 0, 5, 5], [[0, 0, 5, 0, 5, 5]], crowd=1),  # b.png: crowd only
        ],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return images, data


def test_item_shapes_dtypes_and_contiguous_labels(hand_made):
    images, data = hand_made
    ds = CocoInstances(images, data, seen_ids={1, 3})
    assert ds.label_to_cat_id == [0, 1, 3, 7] and ds.cat_id_to_label == {1: 1, 3: 2, 7: 3}
    assert ds.num_classes == 3 and ds.seen_labels == {1, 2}
    assert [(c["id"], c["label"], c["seen"]) for c in ds.categories] == [
        (1, 1, True), (3, 2, True), (7, 3, False)]
    image, target = ds[0]
    assert image.shape == (3, H, W) and image.dtype == torch.float32
    assert image.min() >= 0 and image.max() <= 1 and image[0, 0, 0] == 1 and image[1, 0, 0] == 0
    n = len(target["labels"])
    assert target["boxes"].shape == (n, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == [1, 2, 1, 3, 2]
    assert target["masks"].shape == (n, H, W) and target["masks"].dtype == torch.uint8
    assert target["mask_valid"].dtype == torch.bool
    assert target["iscrowd"].tolist() == [0] * n and target["image_id"] == 10
    assert target["area"].tolist() == [10.0, 20.0, 30.0, 40.0, 70.0]


def test_unseen_masks_are_never_decoded_into_targets(hand_made):
    images, data = hand_made
    # Category 7's segmentation is not decodable: building the item proves it was never read.
    _, target = CocoInstances(images, data, seen_ids={1, 3})[0]
    unseen = target["labels"] == 3
    assert unseen.sum() == 1
    assert target["masks"][unseen].sum() == 0 and not target["mask_valid"][unseen].any()
    assert target["mask_valid"][~unseen].all()
    assert (target["masks"][~unseen].flatten(1).sum(1) > 0).all()
    # With 7 seen, the same annotation is decoded and fails loudly.
    with pytest.raises(ValueError, match="does not match the image size"):
        CocoInstances(images, data, seen_ids={1, 3, 7})[0]


def test_seen_and_unseen_swap_which_masks_exist(hand_made):
    images, data = hand_made
    _, target = CocoInstances(images, data, seen_ids={3})[0]
    disc = target["labels"] == 1
    assert target["masks"][disc].sum() == 0 and not target["mask_valid"][disc].any()
    assert target["mask_valid"][target["labels"] == 2].all()


def test_polygon_and_both_rle_forms_decode_to_the_same_pixels(hand_made):
    images, data = hand_made
    _, target = CocoInstances(images, data, seen_ids={1, 3})[0]
    block = np.zeros((H, W), np.uint8)
    block[2:6, 12:18] = 1
    assert np.array_equal(target["masks"][1].numpy(), block)  # compressed RLE
    assert np.array_equal(target["masks"][2].numpy(), block)  # uncompressed RLE
    poly = target["masks"][0].numpy()
    assert poly[1:5, 1:5].all() and poly.sum() == poly[1:6, 1:6].sum()


def test_crowd_and_degenerate_annotations_are_dropped_and_boxes_clipped(hand_made):
    images, data = hand_made
    ds = CocoInstances(images, data, seen_ids={1, 3})
    assert ds.ids == [10]  # b.png holds only a crowd annotation
    _, target = ds[0]
    boxes = target["boxes"].tolist()
    assert [0.0, 0.0, 20.0, 16.0] not in boxes  # crowd
    assert all(x2 > x1 and y2 > y1 for x1, y1, x2, y2 in boxes)
    assert boxes[0] == [1.0, 1.0, 5.0, 5.0]  # xywh -> xyxy
    assert boxes[-1] == [15.0, 10.0, 20.0, 16.0]  # clipped to the image

    kept = CocoInstances(images, data, seen_ids={1, 3}, drop_empty=False)
    assert kept.ids == [10, 11]
    _, empty = kept[1]
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, H, W)
    assert empty["labels"].shape == (0,) and empty["mask_valid"].shape == (0,)


def test_bad_inputs_get_clear_errors(hand_made, tmp_path):
    images, data = hand_made
    with pytest.raises(ConfigError, match=r"\[99\] are not in the dataset; known: 1:disc"):
        CocoInstances(images, data, seen_ids={1, 99})
    with pytest.raises(FileNotFoundError, match="images folder"):
        CocoInstances(tmp_path / "nowhere", data, seen_ids={1})
    with pytest.raises(FileNotFoundError, match="do not exist"):
        CocoInstances(images, tmp_path / "missing.json", seen_ids={1})
    with pytest.raises(ValueError, match="no 'annotations' list"):
        CocoInstances(images, {"images": [], "categories": []}, seen_ids={1})
    stray = {**data, "annotations": data["annotations"] + [{**data["annotations"][0], "id": 99,
                                                            "category_id": 5}]}
    with pytest.raises(ValueError, match=r"category ids \[5\] that are not in"):
        CocoInstances(images, stray, seen_ids={1})
    with pytest.raises(ValueError, match="unsupported COCO segmentation"):
        decode_segmentation("polygon?", H, W)


def test_images_are_read_as_the_runtime_reads_them(hand_made):
    """One decoder for training and inference: EXIF orientation applied, 16 bits scaled."""
    from boxmask.runtime.images import decode_image

    images, data = hand_made
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:4, :3] = (200, 10, 10)  # a mark in the top-left corner of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 3  # orientation: rotated 180 degrees
    Image.fromarray(rgb).save(images / "a.jpg", exif=exif, quality=100)
    ramp = (np.arange(H * W, dtype=np.uint16).reshape(H, W) * 200)
    Image.fromarray(ramp).save(images / "b.png")  # 16-bit grey
    data = {**data, "images": [{**data["images"][0], "file_name": "a.jpg"},
                               {**data["images"][1], "file_name": "b.png"}]}
    ds = CocoInstances(images, data, seen_ids={1, 3})
    for image_id, name in ((10, "a.jpg"), (11, "b.png")):
        expected = decode_image((images / name).read_bytes(), max_pixels=None)
        got = (ds.load_image(image_id) * 255).round().byte().permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(got, expected)
    flipped = ds.load_image(10)
    assert flipped[0, -1, -1] > 0.6 and flipped[0, 0, 0] < 0.2  # the mark is now bottom-right
    grey = ds.load_image(11)
    assert 0.3 < float(grey.mean()) < 0.9  # scaled, not clipped to white


def test_collate_keeps_lists(hand_made):
    images, data = hand_made
    ds = CocoInstances(images, data, seen_ids={1, 3}, drop_empty=False)
    imgs, targets = collate([ds[0], ds[1]])
    assert isinstance(imgs, list) and len(imgs) == 2 and targets[1]["image_id"] == 11


def test_config_builds_train_and_val_sets_with_the_same_split(tiny_synth):
    root, _ = tiny_synth
    cfg = DataConfig(train_annotations=root / "annotations/instances_train.json",
                     train_images=root / "images/train",
                     val_annotations=root / "annotations/instances_val.json",
                     val_images=root / "images/val", seen=["disc", "square", "triangle", "cross"])
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert train.seen_ids == val.seen_ids == {1, 2, 3, 4}
    assert train.transforms is not None and val.transforms is None
    for ds in (train, val):
        for i in range(len(ds)):
            _, t = ds[i]
            seen = torch.tensor([int(lbl) in ds.seen_labels for lbl in t["labels"]], dtype=torch.bool)
            assert torch.equal(t["mask_valid"], seen)
            assert t["masks"][~seen].sum() == 0
    with pytest.raises(ConfigError, match="unknown seen category 'blob'"):
        build_dataset(cfg.model_copy(update={"seen": ["blob"]}), "train")
    # The oracle's training set: every mask, the same labels.
    oracle = build_dataset(cfg, "train", every_mask=True)
    assert oracle.label_to_cat_id == train.label_to_cat_id
    assert oracle.seen_labels == set(range(1, len(oracle.label_to_cat_id)))
    _, t = oracle[0]
    assert bool(t["mask_valid"].all()) and t["masks"].flatten(1).sum(1).min() > 0
