"""A run killed at any moment resumes to exactly the output of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from boxmask.data.synthetic import generate
from boxmask.labeling import JournalError
from boxmask.labeling.journal import LabelJournal as Journal
from boxmask.labeling.journal import read_journal
from boxmask.labeling.report import journal_path
from tests.labeling.conftest import label, strip_masks

REPO = Path(__file__).resolve().parents[2]
JOB = {"input_sha256": "ab" * 32, "settings": {"mask_format": "rle"}}


def _record(i: int) -> dict:
    return {"index": i, "image_id": i + 1, "status": "ok", "masks": [], "dropped": [], "detections": []}


def test_torn_last_line_is_dropped_and_appending_continues_after_it(tmp_path):
    path = tmp_path / "j.jsonl"
    with Journal.start(path, JOB) as journal:
        journal.append(_record(0))
        journal.append(_record(1))
    whole = path.read_bytes()
    path.write_bytes(whole + json.dumps(_record(2)).encode()[:17])  # killed mid-write

    journal, done = Journal.resume(path, JOB)
    with journal:
        assert sorted(done) == [0, 1]
        assert path.read_bytes() == whole  # the torn tail is gone before anything is appended
        journal.append(_record(2))
    header, records, _ = read_journal(path)
    assert header == Journal.header(JOB) and sorted(records) == [0, 1, 2]


def test_a_torn_header_starts_a_fresh_journal(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_bytes(b'{"kind": "boxmask-lab')
    journal, done = Journal.resume(path, JOB)
    journal.close()
    assert done == {} and read_journal(path)[0] == Journal.header(JOB)


def test_damage_before_the_last_line_is_refused(tmp_path):
    path = tmp_path / "j.jsonl"
    with Journal.start(path, JOB) as journal:
        journal.append(_record(0))
        journal.append(_record(1))
    lines = path.read_bytes().split(b"\n")
    lines[1] = lines[1][:5]
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(JournalError, match="line 2"):
        Journal.resume(path, JOB)


def test_resume_refuses_the_journal_of_another_job(tmp_path):
    path = tmp_path / "j.jsonl"
    Journal.start(path, JOB).close()
    other = {**JOB, "settings": {"mask_format": "polygon"}}
    with pytest.raises(JournalError, match="settings"):
        Journal.resume(path, other)


def test_a_run_without_resume_does_not_overwrite_an_unfinished_journal(dataset, model_dir):
    dataset["out"].parent.mkdir(parents=True)
    jpath = journal_path(dataset["out"])
    jpath.write_text('{"kind": "boxmask-label-journal"}\n')
    with pytest.raises(JournalError, match="--resume"):
        label(dataset, model_dir)
    with pytest.raises(JournalError, match="different job"):
        label(dataset, model_dir, resume=True)
    assert jpath.read_text() == '{"kind": "boxmask-label-journal"}\n'


@pytest.fixture(scope="module")
def many_images(tmp_path_factory) -> dict[str, Path]:
    """Enough images that a run can be killed in the middle."""
    root = tmp_path_factory.mktemp("kill")
    generate(root / "ds", seed=11, num_train=1, num_val=48, image_size=160)
    boxes = root / "boxes.json"
    truth = json.loads((root / "ds" / "annotations" / "instances_val.json").read_text())
    boxes.write_text(json.dumps(strip_masks(truth)))
    return {"images": root / "ds" / "images" / "val", "boxes": boxes, "root": root}


def _cli(data: dict[str, Path], model_dir: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "boxmask", "label", "--coco", str(data["boxes"]),
            "--images", str(data["images"]), "--out", str(out), "--model", str(model_dir),
            "--no-progress", "--workers", "2", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def test_sigkilled_run_resumes_to_the_same_bytes_as_a_clean_run(many_images, model_dir):
    clean = many_images["root"] / "clean" / "labels.json"
    clean.parent.mkdir()
    subprocess.run(_cli(many_images, model_dir, clean), env=_env(), cwd=REPO, check=True,
                   capture_output=True, timeout=300)

    out = many_images["root"] / "killed" / "labels.json"
    out.parent.mkdir()
    jpath = journal_path(out)
    proc = subprocess.Popen(_cli(many_images, model_dir, out), env=_env(), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        # Kill it once a few images are journaled, in whatever it is doing at that instant.
        while time.monotonic() < deadline and proc.poll() is None:
            if jpath.exists() and jpath.read_bytes().count(b"\n") >= 4:
                break
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not out.exists()
    _, done, _ = read_journal(jpath)
    assert 3 <= len(done) < 48
    # A kill in the middle of a journal write leaves half a line: add one to be sure.
    with open(jpath, "ab") as f:
        f.write(b'{"index": 47, "image_id": 48, "status": "ok", "ma')

    resumed = subprocess.run(_cli(many_images, model_dir, out, "--resume"), check=False, env=_env(), cwd=REPO,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert out.read_bytes() == clean.read_bytes()
    report = json.loads(out.with_name("labels.report.json").read_text())
    assert report["summary"]["images_from_journal"] == len(done)
    assert not jpath.exists()
    assert "resuming" in resumed.stderr


def test_two_clean_runs_write_the_same_bytes(dataset, model_dir):
    label(dataset, model_dir)
    again = dataset["out"].with_name("again.json")
    label(dataset, model_dir, out=again, workers=1)
    assert again.read_bytes() == dataset["out"].read_bytes()


def test_a_broken_model_fails_before_any_journal_exists(dataset, model_dir, tmp_path):
    import shutil

    from boxmask.runtime.errors import ModelDirError

    broken = tmp_path / "broken_model"
    shutil.copytree(model_dir, broken)
    with open(broken / "decoder.onnx", "ab") as f:
        f.write(b"\0")
    dataset["out"].parent.mkdir(parents=True)
    with pytest.raises(ModelDirError, match="checksum"):
        label(dataset, broken)
    with pytest.raises(ModelDirError, match="checksum"):
        label(dataset, broken, engine="ray")
    assert not journal_path(dataset["out"]).exists()
    label(dataset, model_dir)  # and nothing stands in the way of the next run


def test_a_record_with_a_lone_surrogate_is_journaled_and_resumes(tmp_path):
    # UTF-8 cannot hold half a surrogate pair (a \ud800 escape in the input): the line is
    # written with JSON escapes instead of failing and leaving a journal that fails again.
    path = tmp_path / "j.jsonl"
    record = {**_record(0), "status": "skipped", "reason": "missing", "detail": "no such file: \ud800é"}
    with Journal.start(path, JOB) as journal:
        journal.append(record)
        journal.append(_record(1))
    journal, done = Journal.resume(path, JOB)
    journal.close()
    assert done == {0: record, 1: _record(1)}
