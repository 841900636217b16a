"""Seen/unseen splits: built-in COCO VOC/non-VOC, lists of names or ids, clear errors."""

import pytest

from boxmask.config import ConfigError
from boxmask.data.splits import VOC_COCO_NAMES, parse_seen_option, resolve_seen

COCO_NAMES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
]
# COCO's ids skip numbers (1..90 for 80 categories); the split must not assume 1..80.
COCO_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
            25, 27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49,
            50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74,
            75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90]
COCO = [{"id": i, "name": n} for i, n in zip(COCO_IDS, COCO_NAMES, strict=True)]
SHAPES = [{"id": i, "name": n} for i, n in enumerate(["disc", "square", "ring", "star"], start=1)]


def test_coco_voc_and_nonvoc_partition_the_80_categories():
    voc, nonvoc = resolve_seen("coco-voc", COCO), resolve_seen("coco-nonvoc", COCO)
    assert len(voc) == 20 and len(nonvoc) == 60
    assert voc.isdisjoint(nonvoc) and voc | nonvoc == set(COCO_IDS)
    by_id = {c["id"]: c["name"] for c in COCO}
    assert {by_id[i] for i in voc} == VOC_COCO_NAMES
    assert 64 in voc and 67 in voc and 72 in voc  # potted plant, dining table, tv


def test_all_and_lists_of_names_and_ids():
    assert resolve_seen("all", SHAPES) == {1, 2, 3, 4}
    assert resolve_seen(["disc", 4], SHAPES) == {1, 4}
    assert resolve_seen(["Square ", "3"], SHAPES) == {2, 3}
    assert resolve_seen("ring", SHAPES) == {3}


def test_cli_option_parses_builtins_and_comma_lists():
    assert parse_seen_option("coco-voc") == "coco-voc"
    assert parse_seen_option("disc, 4,square") == ["disc", 4, "square"]
    assert resolve_seen(parse_seen_option("disc,4"), SHAPES) == {1, 4}
    with pytest.raises(ConfigError, match="names no category"):
        parse_seen_option(" , ")


def test_unknown_category_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown seen category 'hexagon'.*1:disc, 2:square"):
        resolve_seen(["disc", "hexagon"], SHAPES)
    with pytest.raises(ConfigError, match=r"unknown seen category id 9.*4:star"):
        resolve_seen([9], SHAPES)
    with pytest.raises(ConfigError, match="name or id"):
        resolve_seen([True], SHAPES)


def test_builtin_split_on_a_dataset_without_coco_names_is_refused():
    with pytest.raises(ConfigError, match=r"lacks airplane, bicycle.*known: 1:disc"):
        resolve_seen("coco-voc", SHAPES)
    with pytest.raises(ConfigError, match="lacks"):
        resolve_seen("coco-nonvoc", SHAPES)


def test_split_that_leaves_nothing_seen_is_refused():
    with pytest.raises(ConfigError, match="leaves no category seen"):
        resolve_seen([], SHAPES)
    only_voc = [c for c in COCO if c["name"] in VOC_COCO_NAMES]
    with pytest.raises(ConfigError, match="leaves no category seen"):
        resolve_seen("coco-nonvoc", only_voc)
    with pytest.raises(ConfigError, match="no categories"):
        resolve_seen("all", [])
