"""Missing, unreadable, truncated and mis-sized images are skipped and reported, not fatal."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from boxmask.labeling.image_reader import ImageSkip, prefetch, read_image
from tests.labeling.conftest import label


def test_bad_images_are_skipped_reported_and_their_annotations_kept(dataset, model_dir):
    coco = json.loads(dataset["boxes"].read_text())
    images = coco["images"]
    missing, garbage, truncated, resized = (images[i]["file_name"] for i in range(4))
    (dataset["images"] / missing).unlink()
    (dataset["images"] / garbage).write_bytes(b"this is not a PNG file at all")
    data = (dataset["images"] / truncated).read_bytes()
    (dataset["images"] / truncated).write_bytes(data[: len(data) // 2])
    Image.new("RGB", (50, 40)).save(dataset["images"] / resized)

    report = label(dataset, model_dir)

    reasons = {s["file_name"]: s["reason"] for s in report["skipped_images"]}
    assert reasons == {missing: "missing", garbage: "unreadable", truncated: "truncated",
                       resized: "size_mismatch"}
    assert report["summary"]["images_skipped"] == {"missing": 1, "size_mismatch": 1,
                                                   "truncated": 1, "unreadable": 1}
    assert report["summary"]["images_labeled"] == len(images) - 4
    bad_ids = {im["id"] for im in images[:4]}
    out = json.loads(dataset["out"].read_text())
    for a_in, a_out in zip(coco["annotations"], out["annotations"], strict=True):
        if a_in["image_id"] in bad_ids:
            # Untouched but for the marker that says it got no mask, and why.
            marker = a_out.pop("boxmask")
            assert a_out == a_in
            assert marker["status"] == "not_masked"
            assert marker["reason"] in ("image_skipped", "unknown_category", "unmapped")
    skipped_anns = {i for i, a in enumerate(coco["annotations"]) if a["image_id"] in bad_ids}
    # Each is reported: under image_skipped, or (unknown category) under its own reason.
    reported = {e["index"] for entries in report["not_masked"].values() for e in entries}
    assert skipped_anns <= reported
    assert {e["index"] for e in report["not_masked"]["image_skipped"]} <= skipped_anns
    assert report["not_masked"]["image_skipped"]
    assert any(a["boxmask"]["status"] == "masked" for a in out["annotations"]
               if a["image_id"] not in bad_ids)


def test_read_image_checks_the_size_the_annotations_expect(tmp_path):
    path = tmp_path / "a.png"
    Image.new("L", (30, 20), color=7).save(path)
    image = read_image(str(path), height=20, width=30)
    assert image.shape == (20, 30, 3) and image.dtype.name == "uint8"
    skip = read_image(str(path), height=30, width=20)
    assert isinstance(skip, ImageSkip) and skip.reason == "size_mismatch"


def test_corrupt_data_and_a_cut_off_file_get_different_reasons(tmp_path):
    import numpy as np

    path = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    cut = tmp_path / "cut.png"
    cut.write_bytes(bytes(data[: len(data) // 2]))
    idat = data.index(b"IDAT") + 4
    data[idat + 10: idat + 400] = bytes(390)  # full length, garbage inside the compressed stream
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(bytes(data))
    assert read_image(str(cut)).reason == "truncated"
    skip = read_image(str(corrupt))
    assert skip.reason == "unreadable" and "corrupt" in skip.detail


def test_prefetch_keeps_input_order_and_reads_ahead():
    import threading
    import time

    started: list[int] = []
    lock = threading.Lock()

    def load(i: int) -> int:
        with lock:
            started.append(i)
        time.sleep(0.01 * (5 - i % 5))  # later items finish first
        return i * i

    seen = []
    for item, value in prefetch(range(12), load, workers=3, depth=4):
        if item == 0:
            time.sleep(0.05)
            assert len(started) >= 4  # the next images were being read while 0 was used
        seen.append((item, value))
    assert seen == [(i, i * i) for i in range(12)]


def test_file_names_outside_images_are_not_read(dataset, model_dir, tmp_path):
    secret = tmp_path / "secret.png"
    Image.new("RGB", (50, 40), (255, 0, 0)).save(secret)
    coco = json.loads(dataset["boxes"].read_text())
    images = coco["images"]
    images[0]["file_name"] = str(secret)  # absolute
    images[1]["file_name"] = "../secret.png"  # climbs out of --images
    images[0]["width"] = images[1]["width"] = 50
    images[0]["height"] = images[1]["height"] = 40
    dataset["boxes"].write_text(json.dumps(coco))
    report = label(dataset, model_dir)
    reasons = {s["index"]: s["reason"] for s in report["skipped_images"]}
    assert reasons[0] == reasons[1] == "outside_images"
    out = json.loads(dataset["out"].read_text())
    for ann in out["annotations"]:
        if ann["image_id"] in (images[0]["id"], images[1]["id"]):
            assert "segmentation" not in ann
            assert ann["boxmask"]["status"] == "not_masked"


def test_every_input_annotation_says_whether_it_was_masked(dataset, model_dir):
    coco = json.loads(dataset["boxes"].read_text())
    coco["annotations"][0]["iscrowd"] = 1
    del coco["annotations"][1]["bbox"]
    coco["annotations"].append(dict(coco["annotations"][2]))  # a duplicate id
    dataset["boxes"].write_text(json.dumps(coco))
    report = label(dataset, model_dir)
    out = json.loads(dataset["out"].read_text())
    assert len(out["annotations"]) == len(coco["annotations"])
    statuses = [a["boxmask"]["status"] for a in out["annotations"]]
    assert set(statuses) <= {"masked", "not_masked"}
    for a in out["annotations"]:
        assert ("segmentation" in a) == (a["boxmask"]["status"] == "masked")
    assert out["annotations"][0]["boxmask"]["reason"] == "crowd"
    assert out["annotations"][1]["boxmask"]["reason"] == "no_box"
    crowd = report["not_masked"]["crowd"]
    assert crowd == [{"index": 0, "id": coco["annotations"][0]["id"],
                      "image_id": coco["annotations"][0]["image_id"]}]


def test_a_fifo_or_a_folder_named_as_an_image_is_skipped_not_waited_on(dataset, model_dir):
    import os
    import threading

    coco = json.loads(dataset["boxes"].read_text())
    fifo_name, folder_name = (coco["images"][i]["file_name"] for i in range(2))
    fifo, folder = dataset["images"] / fifo_name, dataset["images"] / folder_name
    fifo.unlink()
    os.mkfifo(fifo)  # opening it to read would wait for a writer that never comes
    folder.unlink()
    folder.mkdir()

    outcome: dict = {}
    job = threading.Thread(target=lambda: outcome.update(report=label(dataset, model_dir)),
                           daemon=True)
    job.start()
    job.join(timeout=120)
    if job.is_alive():
        # Let the stuck reader go (a writer that opens and closes: end of file), then fail.
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        job.join(timeout=60)
        pytest.fail("the job waited on a FIFO named as an image")
    reasons = {s["file_name"]: s["reason"] for s in outcome["report"]["skipped_images"]}
    assert reasons == {fifo_name: "not_a_file", folder_name: "not_a_file"}
    details = {s["file_name"]: s["detail"] for s in outcome["report"]["skipped_images"]}
    assert "FIFO" in details[fifo_name] and "folder" in details[folder_name]
    assert outcome["report"]["summary"]["images_labeled"] == len(coco["images"]) - 2


def test_only_regular_files_are_read_and_reading_has_a_deadline(tmp_path):
    import numpy as np

    assert read_image("/dev/null").reason == "not_a_file"  # a device, even an empty one
    path = tmp_path / "big.png"
    noise = np.random.default_rng(0).integers(0, 256, (800, 800, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)  # over 1 MiB: read in more than one chunk
    assert read_image(str(path)).shape == (800, 800, 3)
    skip = read_image(str(path), deadline_s=0.0)
    assert isinstance(skip, ImageSkip) and skip.reason == "timeout"
    assert "longer than 0 s" in skip.detail
