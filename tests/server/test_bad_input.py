"""Every bad input of the issue gets a clear 4xx in the one error shape, never a 5xx or a hang."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from boxmask.server import create_app
from tests.server.conftest import IMAGE_H, IMAGE_W, assert_error, make_settings, png_bytes

BOX = [10.0, 10.0, 50.0, 50.0]


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming ``width x height`` with a token IDAT: the shape
    of a decompression bomb (a tiny file that would inflate to gigabytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def segment(client: TestClient, **body: object):
    return client.post("/v1/segment", json=body)


@pytest.mark.parametrize("data", [b"definitely not an image", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"])
def test_bytes_that_are_no_image_get_bad_image(client: TestClient, data: bytes) -> None:
    assert_error(client.post("/v1/images", content=data, headers={"content-type": "image/png"}),
                 422, "bad_image")
    assert_error(segment(client, image=base64.b64encode(data).decode(), boxes=[BOX]),
                 422, "bad_image")


def test_a_truncated_image_gets_bad_image(client: TestClient) -> None:
    data = png_bytes(seed=11)
    err = assert_error(client.post("/v1/images", content=data[: len(data) // 2],
                                   headers={"content-type": "image/png"}), 422, "bad_image")
    assert "truncated" in err["message"] or "decoded" in err["message"]


def test_invalid_base64_and_empty_uploads_get_bad_image(client: TestClient) -> None:
    assert_error(segment(client, image="@@not base64@@", boxes=[BOX]), 422, "bad_image")
    assert_error(client.post("/v1/images", content=b"", headers={"content-type": "image/png"}),
                 422, "bad_image")


@pytest.mark.parametrize("width,height", [(8000, 8000), (100_000, 100_000)])
def test_decompression_bombs_are_refused_from_the_header(client: TestClient, width: int,
                                                        height: int) -> None:
    bomb = png_header_only(width, height)
    assert len(bomb) < 200
    err = assert_error(client.post("/v1/images", content=bomb, headers={"content-type": "image/png"}),
                       413, "image_too_large")
    assert "pixels" in err["message"]


@pytest.mark.parametrize("box,words", [
    ([10, 10, 10, 50], "empty"),
    ([50, 10, 10, 50], "inverted"),
    ([IMAGE_W + 5, 0, IMAGE_W + 50, 20], "outside"),
    ([-50, -50, -1, -1], "outside"),
])
def test_empty_inverted_and_outside_boxes_are_refused_naming_the_box(
        client: TestClient, image_id: str, box: list[float], words: str) -> None:
    err = assert_error(segment(client, image_id=image_id, boxes=[BOX, box]), 422, "bad_boxes")
    assert "box 1" in err["message"] and words in err["message"]


def test_boxes_sticking_out_are_clipped_by_default_and_refused_without_clipping(
        client: TestClient, image_id: str) -> None:
    box = [-20.0, 30.0, IMAGE_W + 20.0, IMAGE_H + 5.0]
    clipped = segment(client, image_id=image_id, boxes=[box])
    assert clipped.status_code == 200, clipped.text
    assert clipped.json()["instances"][0]["box"] == [0.0, 30.0, IMAGE_W, IMAGE_H]
    err = assert_error(segment(client, image_id=image_id, boxes=[box], clip_boxes=False),
                       422, "bad_boxes")
    assert "sticks out" in err["message"]


@pytest.mark.parametrize("edge,box", [
    ("left", [-3.0, 10.0, 40.0, 50.0]),
    ("top", [10.0, -3.0, 40.0, 50.0]),
    ("right", [10.0, 10.0, IMAGE_W + 3.0, 50.0]),
    ("bottom", [10.0, 10.0, 40.0, IMAGE_H + 3.0]),
])
def test_without_clipping_a_box_past_any_single_edge_is_refused(
        client: TestClient, image_id: str, edge: str, box: list[float]) -> None:
    """Each box sticks out past one edge only, so every one of the four checks is needed."""
    err = assert_error(segment(client, image_id=image_id, boxes=[BOX, box], clip_boxes=False),
                       422, "bad_boxes")
    assert "box 1" in err["message"] and "sticks out" in err["message"], edge
    assert err["details"]["box_index"] == 1
    # The same box is fine when clipped: only the one coordinate moves to the edge.
    clipped = segment(client, image_id=image_id, boxes=[box])
    assert clipped.status_code == 200, clipped.text
    expected = [min(max(v, 0.0), lim) for v, lim in zip(box, [IMAGE_W, IMAGE_H] * 2, strict=True)]
    assert clipped.json()["instances"][0]["box"] == expected


def test_without_clipping_a_box_touching_the_edges_is_accepted(client: TestClient,
                                                                image_id: str) -> None:
    r = segment(client, image_id=image_id, boxes=[[0.0, 0.0, IMAGE_W, IMAGE_H]], clip_boxes=False)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_coordinates_are_refused(client: TestClient, image_id: str, token: str) -> None:
    body = f'{{"image_id": "{image_id}", "boxes": [[1, 2, {token}, 40]]}}'
    r = client.post("/v1/segment", content=body, headers={"content-type": "application/json"})
    err = assert_error(r, 422, "invalid_request")
    assert "boxes.0.2" in err["message"] and "finite" in err["message"]


def test_a_box_of_three_numbers_and_xywh_with_negative_size_are_refused(
        client: TestClient, image_id: str) -> None:
    err = assert_error(segment(client, image_id=image_id, boxes=[[1, 2, 3]]), 422, "invalid_request")
    assert "boxes.0" in err["message"]
    err = assert_error(segment(client, image_id=image_id, boxes=[[10, 10, -5, 20]],
                               box_format="xywh"), 422, "bad_boxes")
    assert "width" in err["message"]


def test_unknown_labels_list_the_known_ones(client: TestClient, image_id: str) -> None:
    cats = client.get("/v1/models").json()["models"][0]["card"]["categories"]
    for label in ("no-such-category", max(c["id"] for c in cats) + 1, 0, -1):
        err = assert_error(segment(client, image_id=image_id, boxes=[BOX], labels=[label]),
                           422, "unknown_label")
        assert err["details"]["known_names"] == [c["name"] for c in cats]
        assert err["details"]["known_ids"] == [c["id"] for c in cats]
        assert cats[0]["name"] in err["message"]


def test_labels_must_match_the_boxes_one_to_one(client: TestClient, image_id: str) -> None:
    err = assert_error(segment(client, image_id=image_id, boxes=[BOX, BOX], labels=["disc"]),
                       422, "invalid_request")
    assert "one label" in err["message"]


def test_an_unknown_image_id_says_to_upload_again(client: TestClient) -> None:
    err = assert_error(segment(client, image_id="0" * 64, boxes=[BOX]), 404, "unknown_image")
    assert "POST /v1/images" in err["message"]
    assert_error(client.post("/v1/detect", json={"image_id": "f" * 64}), 404, "unknown_image")


def test_exactly_one_of_image_and_image_id(client: TestClient, image_id: str) -> None:
    assert_error(segment(client, boxes=[BOX]), 422, "invalid_request")
    data = base64.b64encode(png_bytes()).decode()
    assert_error(segment(client, image=data, image_id=image_id, boxes=[BOX]), 422, "invalid_request")


def test_unknown_fields_and_missing_boxes_are_refused(client: TestClient, image_id: str) -> None:
    err = assert_error(segment(client, image_id=image_id, boxes=[BOX], boxs=[BOX]),
                       422, "invalid_request")
    assert "boxs" in err["message"]
    assert_error(segment(client, image_id=image_id, boxes=[]), 422, "invalid_request")


def test_too_many_boxes(client: TestClient, image_id: str) -> None:
    err = assert_error(segment(client, image_id=image_id, boxes=[BOX] * 21), 422, "too_many_boxes")
    assert err["details"] == {"boxes": 21, "max_boxes": 20}


@pytest.mark.parametrize("body", [b"{not json", b"", b"[1, 2", b'"just a string"'])
def test_malformed_json(client: TestClient, body: bytes) -> None:
    r = client.post("/v1/segment", content=body, headers={"content-type": "application/json"})
    assert_error(r, r.status_code, "malformed_json" if r.status_code == 400 else "invalid_request")


def test_wrong_content_types(client: TestClient, image_id: str) -> None:
    payload = json.dumps({"image_id": image_id, "boxes": [BOX]})
    for path in ("/v1/segment", "/v1/detect"):
        err = assert_error(client.post(path, content=payload, headers={"content-type": "text/plain"}),
                           415, "unsupported_media_type")
        assert "application/json" in err["message"]
    assert_error(client.post("/v1/images", content=b"{}", headers={"content-type": "application/json"}),
                 415, "unsupported_media_type")


def test_multipart_without_an_image_or_with_bad_fields(client: TestClient) -> None:
    assert_error(client.post("/v1/segment", data={"boxes": "[[1, 2, 30, 40]]"},
                             files={"other": ("x.txt", b"x", "text/plain")}), 422, "invalid_request")
    assert_error(client.post("/v1/segment", files={"image": ("x.png", png_bytes(), "image/png")},
                             data={"boxes": "[[1, 2, 30"}), 400, "malformed_json")
    assert_error(client.post("/v1/images", files={"file": ("x.png", png_bytes(), "image/png")}),
                 422, "invalid_request")
    r = client.post("/v1/segment", content=b"--xyz\r\nnonsense",
                    headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert 400 <= r.status_code < 500, r.text


@pytest.mark.parametrize("field", ["boxes", "labels"])
@pytest.mark.parametrize("depth", [40, 5_000])
def test_multipart_json_fields_nested_deep_get_400(client: TestClient, field: str, depth: int) -> None:
    fields = {"boxes": "[[1, 2, 30, 40]]", field: "[" * depth + "]" * depth}
    r = client.post("/v1/segment", files={"image": ("x.png", png_bytes(), "image/png")}, data=fields)
    assert "nests deeper" in assert_error(r, 400, "malformed_json")["message"]


def test_unknown_model_and_routes_and_methods(client: TestClient, image_id: str) -> None:
    err = assert_error(segment(client, image_id=image_id, boxes=[BOX], model="nope"),
                       404, "unknown_model")
    assert err["details"]["known_models"]
    assert_error(client.get("/v1/nothing-here"), 404, "not_found")
    assert_error(client.get("/v1/segment"), 405, "method_not_allowed")


def test_bodies_over_the_limit_get_413_with_or_without_content_length(model_dir: Path) -> None:
    app = create_app(make_settings(model_dir, max_body_bytes=4096))
    big = base64.b64encode(b"\0" * 8000).decode()
    with TestClient(app) as client:
        assert_error(segment(client, image=big, boxes=[BOX]), 413, "payload_too_large")

        def chunks():  # no Content-Length: the limit must count the streamed bytes
            for _ in range(10):
                yield b"x" * 1000

        r = client.post("/v1/images", content=chunks(), headers={"content-type": "image/png"})
        assert_error(r, 413, "payload_too_large")
        assert client.get("/healthz").status_code == 200
