"""`boxmask data synth` and `boxmask data split` from the command line."""

import json

from typer.testing import CliRunner

from boxmask.cli import app

runner = CliRunner()


def _text(output: str) -> str:
    return " ".join(output.split())  # rich wraps long error lines


def test_data_synth_writes_a_dataset_and_refuses_to_overwrite_it(tmp_path):
    out = tmp_path / "ds"
    args = ["data", "synth", "--out", str(out), "--seed", "2", "--images", "2",
            "--val-images", "1", "--size", "32"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "stats.json").read_text())
    assert stats["splits"]["train"]["images"] == 2 and stats["seed"] == 2
    assert len(list((out / "images" / "train").glob("*.png"))) == 2

    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "not empty" in _text(again.output)
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0


def test_data_split_marks_seen_categories_and_explains_unknown_ones(tiny_synth):
    root, _ = tiny_synth
    ann = str(root / "annotations" / "instances_train.json")
    result = runner.invoke(app, ["data", "split", ann, "--seen", "disc,ring"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[1]: line.split()[2] for line in result.output.splitlines() if line.strip()}
    assert lines["disc"] == "seen" and lines["ring"] == "seen" and lines["star"] == "unseen"

    bad = runner.invoke(app, ["data", "split", ann, "--seen", "blob"])
    assert bad.exit_code == 2 and "unknown seen category" in _text(bad.output) and "disc" in bad.output
    voc = runner.invoke(app, ["data", "split", ann, "--seen", "coco-voc"])
    assert voc.exit_code == 2 and "lacks" in _text(voc.output)


def test_data_synth_builds_an_older_generator_version_on_request_and_refuses_an_unknown_one(tmp_path):
    base = ["data", "synth", "--seed", "2", "--images", "1", "--val-images", "0", "--size", "32"]
    newest = runner.invoke(app, [*base, "--out", str(tmp_path / "new")])
    old = runner.invoke(app, [*base, "--out", str(tmp_path / "old"), "--generator-version", "1"])
    assert newest.exit_code == 0 and old.exit_code == 0, (newest.output, old.output)
    assert json.loads((tmp_path / "new" / "stats.json").read_text())["generator_version"] == 2
    assert json.loads((tmp_path / "old" / "stats.json").read_text())["generator_version"] == 1
    bad = runner.invoke(app, [*base, "--out", str(tmp_path / "bad"), "--generator-version", "7"])
    assert bad.exit_code == 2 and "unknown generator version 7" in _text(bad.output)
    assert not (tmp_path / "bad").exists()


def test_data_synth_reuse_keeps_the_same_set_and_refuses_another(tmp_path):
    out = tmp_path / "ds"
    base = ["data", "synth", "--out", str(out), "--seed", "2", "--images", "1",
            "--val-images", "1", "--size", "32", "--reuse"]
    first = runner.invoke(app, base)
    assert first.exit_code == 0, first.output
    image = out / "images" / "train" / "000000.png"
    before = (image.stat().st_mtime_ns, (out / "stats.json").read_bytes())
    again = runner.invoke(app, base)  # the same recipe: kept as it is, not rewritten
    assert again.exit_code == 0, again.output
    assert (image.stat().st_mtime_ns, (out / "stats.json").read_bytes()) == before

    for change, named in ((["--seed", "3"], "seed 2 (wanted 3)"),
                          (["--generator-version", "1"], "generator version 2 (wanted 1)"),
                          (["--images", "2"], "training images 1 (wanted 2)"),
                          (["--scene", "clear"], "scene 'dense' (wanted 'clear')")):
        other = runner.invoke(app, base + change)
        assert other.exit_code == 2 and named in _text(other.output), (change, other.output)
        assert (image.stat().st_mtime_ns, (out / "stats.json").read_bytes()) == before
    both = runner.invoke(app, [*base, "--overwrite"])
    assert both.exit_code == 2 and "pass one of them" in _text(both.output)
