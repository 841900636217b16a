"""BOXMASK_MASK_REFINE: the server's choice of the runtime's CRF over the model card's."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from boxmask.server import create_app
from boxmask.server.settings import ServerSettings
from tests.server.conftest import make_settings, png_bytes

BOXES = [[10, 12, 60, 70], [40, 20, 120, 90]]


def test_the_setting_reaches_every_predictor_and_refuses_what_it_does_not_know(
        monkeypatch) -> None:
    assert ServerSettings().predictor_options().mask_refine == "auto"
    monkeypatch.setenv("BOXMASK_MASK_REFINE", "crf")
    assert ServerSettings().predictor_options().mask_refine == "crf"
    monkeypatch.setenv("BOXMASK_MASK_REFINE", "crf_wide")
    assert ServerSettings().predictor_options().mask_refine == "crf_wide"
    monkeypatch.setenv("BOXMASK_MASK_REFINE", "dense")
    with pytest.raises(ValidationError):
        ServerSettings()


def test_segment_serves_the_refined_masks_when_told(model_dir: Path) -> None:
    data = png_bytes()
    answers = {}
    for refine in ("none", "crf", "crf_wide"):
        with TestClient(create_app(make_settings(model_dir, mask_refine=refine))) as client:
            r = client.post("/v1/segment", files={"image": ("x.png", data, "image/png")},
                            data={"boxes": str(BOXES)})
            assert r.status_code == 200, r.text
            answers[refine] = r.json()["instances"]
            listed = client.get("/v1/models").json()["models"]
            assert {m["mask_refine"] for m in listed} == {refine}
    assert [i["box"] for i in answers["none"]] == [i["box"] for i in answers["crf"]] == BOXES
    assert ([(i["mask"], i["quality"]) for i in answers["none"]]
            != [(i["mask"], i["quality"]) for i in answers["crf"]])
    # The wide kernel refines the same decoder masks otherwise; the review score reads the
    # served mask's colours, so it follows the kernel (tests/runtime/test_mask_quality.py
    # checks the terms).
    assert [i["mask"] for i in answers["crf_wide"]] != [i["mask"] for i in answers["crf"]]
    assert ([i["quality"] for i in answers["crf_wide"]]
            != [i["quality"] for i in answers["crf"]])
