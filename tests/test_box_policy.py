"""The box policy has one home, `boxmask/runtime/boxes.py`, and every entry point meets it once:
the same bad box gets the same words from the HTTP API, Label Studio (a drawn box and a stored
one), CVAT (the interactor and the converter), a library caller of the predictor and
`boxmask label`. Predictors are built from one `PredictorOptions` value by every caller."""

from __future__ import annotations

import ast
import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from boxmask.runtime import BadBoxes, Predictor, check_boxes

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "boxmask"
POLICY = PACKAGE / "runtime" / "boxes.py"
W, H = 80, 60
# Percent of the image, as Label Studio sends a region: exact in pixels on an 80x60 image.
BAD_BOXES = {
    "inverted": (50.0, 0.0, -25.0, 25.0),  # [40, 0, 20, 15]
    "outside": (150.0, 0.0, 25.0, 25.0),  # [120, 0, 140, 15]
}


def _pixels(x: float, y: float, w: float, h: float) -> list[float]:
    x1, y1 = x / 100 * W, y / 100 * H
    return [x1, y1, x1 + w / 100 * W, y1 + h / 100 * H]


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (H, W, 3), dtype=np.uint8)
                    ).save(buf, "PNG")
    return buf.getvalue()


def _region(x: float, y: float, w: float, h: float) -> dict:
    return {"id": "r1", "type": "rectanglelabels", "from_name": "boxes", "to_name": "pic",
            "original_width": W, "original_height": H, "image_rotation": 0,
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0,
                      "rectanglelabels": ["disc"]}}


CONFIG = """<View>
  <Image name="pic" value="$photo"/>
  <RectangleLabels name="boxes" toName="pic" smart="true"><Label value="disc"/></RectangleLabels>
  <BrushLabels name="masks" toName="pic"><Label value="disc"/></BrushLabels>
</View>"""


@pytest.fixture(scope="module")
def predictor(contract_model_dir: Path) -> Predictor:
    return Predictor.from_dir(contract_model_dir, intra_op_threads=1)


@pytest.fixture(scope="module")
def client(contract_model_dir: Path):
    from boxmask.server.app import create_app
    from boxmask.server.settings import LabelStudioSettings, ServerSettings

    settings = ServerSettings(model_dir=contract_model_dir, demo=False, log_json=False,
                              api_token=None, triton_url=None)
    with TestClient(create_app(settings, LabelStudioSettings())) as c:
        yield c


@pytest.mark.parametrize("kind", sorted(BAD_BOXES))
def test_every_entry_point_answers_a_bad_box_in_the_policys_words(
        kind: str, predictor: Predictor, client: TestClient) -> None:
    from boxmask.integrations.cvat.boxes_to_masks import Frame, convert_task
    from boxmask.integrations.cvat.serverless import interact_reply

    percent = BAD_BOXES[kind]
    box = _pixels(*percent)
    image = _png()
    with pytest.raises(BadBoxes) as policy:
        check_boxes([box], ["disc"], card=predictor.card, image_size=(H, W))
    words = str(policy.value)
    assert words.startswith("box 0 ") and ("inverted" in words or "outside" in words)

    # A library caller of the predictor.
    with pytest.raises(BadBoxes, match=re.escape(words)):
        predictor.predict([box], labels=["disc"], key=predictor.set_image(image))
    # The HTTP API, JSON and multipart.
    inline = base64.b64encode(image).decode()
    for response in (
            client.post("/v1/segment", json={"image": inline, "boxes": [box], "labels": ["disc"]}),
            client.post("/v1/segment", files={"image": ("a.png", image, "image/png")},
                        data={"boxes": f"[{box}]", "labels": '["disc"]'})):
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert (error["code"], error["message"], error["details"]) == (
            "bad_boxes", words, {"box_index": 0})
    # Label Studio: a box just drawn, and a stored one in a batch.
    task = {"id": 7, "data": {"photo": "data:image/png;base64," + inline}, "annotations": []}
    drawn = client.post("/labelstudio/predict", json={
        "tasks": [task], "project": "3.1", "label_config": CONFIG,
        "params": {"context": {"result": [_region(*percent)]}}})
    assert drawn.status_code == 422, drawn.text
    assert (drawn.json()["error"]["code"], drawn.json()["error"]["message"]) == ("bad_boxes", words)
    stored = {**task, "annotations": [{"id": 1, "result": [_region(*percent)]}]}
    batch = client.post("/labelstudio/predict", json={"tasks": [stored], "project": "3.1",
                                                      "label_config": CONFIG})
    assert batch.status_code == 200 and batch.json()["results"][0]["error"] == f"task 7: {words}"
    # CVAT: the interactor's drawn box, and a task's rectangle in the converter.
    with pytest.raises(BadBoxes, match=re.escape(words)):
        interact_reply(predictor, {"image": inline, "obj_bbox": [box[:2], box[2:]]})

    class OneFrame:
        def labels(self):
            from cvat_sdk import models
            return [models.Label(id=5, name="disc", type="any", attributes=[], sublabels=[])]

        def frames(self):
            return [Frame(0, "a.png", W, H)]

        def shapes(self):
            from cvat_sdk import models
            return [models.LabeledShape(id=1, frame=0, label_id=5, type="rectangle", points=box,
                                        group=0, z_order=0, source="manual", occluded=False,
                                        outside=False, rotation=0.0, attributes=[], elements=[])]

        def frame_image(self, index: int) -> bytes:
            return image

    with pytest.raises(BadBoxes, match=re.escape(words)):
        convert_task(OneFrame(), predictor, dry_run=True)  # type: ignore[arg-type]


def test_boxmask_label_sets_a_box_outside_the_image_aside_by_the_same_rule(
        predictor: Predictor) -> None:
    from boxmask.labeling.image_labeler import label_image
    from boxmask.labeling.options import LabelSettings
    from boxmask.labeling.plan import ImageTask

    inside = [5.0, 5.0, 40.0, 30.0]
    task = ImageTask(index=0, image_id=1, file_name="a.png", path="a.png", height=H, width=W,
                     ann_indices=[3, 4], boxes=[_pixels(*BAD_BOXES["outside"]), inside],
                     category_ids=[1, 1])
    image = np.asarray(Image.open(io.BytesIO(_png())).convert("RGB"))
    result = label_image(predictor, image, task, LabelSettings(mask_format="rle"))
    assert result["dropped"][0] == [3, "outside_image"]
    assert [m["ann"] for m in result["masks"]] + [d[0] for d in result["dropped"][1:]] == [4]


# Words only the policy says, and the limits only it compares against.
POLICY_WORDS = ["empty or inverted", "NaN or infinite", "sticks out of the", "lies outside the",
                "boxes in one request", "mask pixels (boxes x image pixels)",
                "both must be positive", "labels for", "one entry (id, name or null)"]
LIMIT_COMPARISON = re.compile(r"(max_boxes|max_mask_pixels)\s*[<>]|[<>]=?\s*[\w.]*"
                              r"(max_boxes|max_mask_pixels)\b")


def _package_sources() -> dict[Path, str]:
    """The parts that take boxes from callers: the runtime and what serves it, and the CLI
    (training's datasets read their own boxes)."""
    paths = [PACKAGE / "cli.py", *(p for part in ("runtime", "server", "integrations", "labeling")
                                   for p in (PACKAGE / part).rglob("*.py"))]
    return {p: p.read_text() for p in sorted(paths)}


def _strings(text: str) -> str:
    """The string literals of a module's code (f-strings' text included), without its
    docstrings: what it can say to a caller, not its prose."""
    tree = ast.parse(text)
    docstrings = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)):
            docstrings.add(id(body[0].value))
    return "\n".join(node.value for node in ast.walk(tree)
                     if isinstance(node, ast.Constant) and isinstance(node.value, str)
                     and id(node) not in docstrings)


def test_the_box_policy_lives_in_one_module() -> None:
    sources = _package_sources()
    said = {path: _strings(text) for path, text in sources.items()}
    for words in POLICY_WORDS:
        homes = [p.relative_to(REPO) for p, text in said.items() if words in text]
        assert homes == [POLICY.relative_to(REPO)], (words, homes)
    comparing = [p.relative_to(REPO) for p, text in sources.items()
                 if LIMIT_COMPARISON.search(text)]
    assert comparing == [POLICY.relative_to(REPO)], comparing
    # Labels become the model's contiguous labels there only (`ModelCard.resolve` finds a
    # category; turning it into the graphs' label is the policy's).
    assert [p.relative_to(REPO) for p, text in sources.items()
            if re.search(r"\.resolve\([^)]*\)\.label\b", text)] == [POLICY.relative_to(REPO)]


def test_predictors_are_built_from_one_options_value() -> None:
    """Outside the runtime, `Predictor.from_dir` and `Predictor(...)` get a model and a
    `PredictorOptions`, never options one argument at a time."""
    loose = []
    for path, text in _package_sources().items():
        if path.parent.name == "runtime":
            continue
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            named = (isinstance(func, ast.Attribute) and func.attr == "from_dir"
                     and isinstance(func.value, ast.Name) and func.value.id == "Predictor")
            if named and (len(node.args) > 2 or node.keywords):
                loose.append(f"{path.relative_to(REPO)}:{node.lineno}")
            if isinstance(func, ast.Name) and func.id == "Predictor":
                loose.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert loose == []
