"""A COCO file the labeler cannot use is refused up front, every bad record named, no traceback."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from boxmask.cli import app
from boxmask.config import ConfigError
from boxmask.labeling.coco_file import MAX_JSON_DEPTH, json_nesting_depth
from boxmask.labeling.report import journal_path, report_path
from tests.labeling.conftest import label


def _write_bad_records(path) -> dict:
    coco = json.loads(path.read_text())
    coco["images"][0]["id"] = float("nan")
    coco["images"][1]["id"] = 1e300  # becomes 1e400 below: out of float range, read as inf
    coco["images"][2]["id"] = [3]
    coco["images"][3]["file_name"] = "\ud800.png"  # half a surrogate pair
    coco["annotations"][12]["image_id"] = {"id": 1}
    coco["annotations"][13]["category_id"] = [2]
    coco["categories"][1]["id"] = {"id": 2}
    text = json.dumps(coco)  # NaN as NaN, the surrogate as the escape \ud800
    path.write_text(text.replace("1e+300", "1e400", 1))
    return coco


def _nothing_written(dataset) -> bool:
    out = dataset["out"]
    return not any(p.exists() for p in (out, report_path(out), journal_path(out)))


def test_every_bad_record_is_named_with_its_index_and_nothing_is_written(dataset, model_dir):
    _write_bad_records(dataset["boxes"])
    before = dataset["boxes"].read_bytes()
    dataset["out"].parent.mkdir(parents=True)
    args = ["label", "--coco", str(dataset["boxes"]), "--images", str(dataset["images"]),
            "--out", str(dataset["out"]), "--model", str(model_dir), "--no-progress"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200", "NO_COLOR": "1"})

    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # an exit, not a crash
    assert "Traceback" not in result.output
    assert sum(line.startswith("error:") for line in result.output.splitlines()) == 1
    for problem in ("images[0].id: must be an integer, got NaN",
                    "images[1].id: must be an integer, got an infinite number",
                    "images[2].id: must be an integer, got a list",
                    "images[3].file_name: is not valid Unicode",
                    "annotations[12].image_id: must be an integer, got an object",
                    "annotations[13].category_id: must be an integer, got a list",
                    "categories[1].id: must be an integer, got an object",
                    "7 problems"):
        assert problem in result.output, result.output
    assert _nothing_written(dataset)
    assert dataset["boxes"].read_bytes() == before


@pytest.mark.parametrize("bad", ["nan", "huge"])
def test_an_id_that_cannot_be_journaled_leaves_no_journal_and_resume_says_the_same(
        dataset, model_dir, bad):
    # Such an id used to reach the journal, fail there, and leave a journal whose --resume
    # failed again on the same record.
    coco = json.loads(dataset["boxes"].read_text())
    coco["images"][2]["id"] = float("nan") if bad == "nan" else 7e300
    dataset["boxes"].write_text(json.dumps(coco).replace("7e+300", "7e400"))
    dataset["out"].parent.mkdir(parents=True)
    for resume in (False, True):
        with pytest.raises(ConfigError, match=r"images\[2\]\.id: must be an integer"):
            label(dataset, model_dir, resume=resume)
        assert _nothing_written(dataset)


def test_deep_nesting_is_refused_before_the_parser_recurses(dataset, model_dir):
    deep = dataset["boxes"].with_name("deep.json")
    deep.write_text("[" * 100_000 + "]" * 100_000)
    dataset["out"].parent.mkdir(parents=True)
    with pytest.raises(ConfigError, match="100000 levels deep"):
        label(dataset, model_dir, coco=deep)
    assert _nothing_written(dataset)
    # Inside a field the labeler ignores, too: it is the parser that would recurse.
    coco = json.loads(dataset["boxes"].read_text())
    coco["info"] = "@"
    deep.write_text(json.dumps(coco).replace('"@"', "[" * 5000 + "]" * 5000))
    with pytest.raises(ConfigError, match="5001 levels deep"):
        label(dataset, model_dir, coco=deep)


def test_the_usual_coco_variations_are_still_accepted(dataset, model_dir):
    coco = json.loads(dataset["boxes"].read_text())
    coco["images"][0]["width"] = float(coco["images"][0]["width"])  # 96.0 from a float column
    coco["images"][1].pop("height")
    coco["annotations"][0]["id"] = "a-uuid"  # only echoed in the report
    del coco["annotations"][1]["category_id"]  # marked unknown_category, not refused
    coco["annotations"][2]["category_id"] = None
    coco["info"] = {"note": "[[[ not nesting: a string ]]]"}
    dataset["boxes"].write_text(json.dumps(coco))
    report = label(dataset, model_dir)
    assert report["summary"]["images_labeled"] == len(coco["images"])
    assert {e["index"] for e in report["not_masked"]["unknown_category"]} >= {1, 2}


def test_duplicate_image_ids_are_named():
    from boxmask.labeling.coco_file import check_coco

    coco = {"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"},
                       {"id": 1, "file_name": "c.png"}], "annotations": [], "categories": []}
    with pytest.raises(ConfigError, match=r"images\[2\]\.id: 1 is also the id of images\[0\]"):
        check_coco(coco, "x.json")


_json_values = st.recursive(
    st.none() | st.integers() | st.text(alphabet='[]{}"\\ab\u00e9,:', max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(alphabet='[]{}"\\a', max_size=4), inner, max_size=3),
    max_leaves=30)


def _depth(value) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(_json_values, st.booleans())
def test_the_nesting_scan_counts_brackets_outside_strings_only(value, ascii_only):
    text = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert json_nesting_depth(text) == _depth(value)
    assert _depth(value) <= MAX_JSON_DEPTH
