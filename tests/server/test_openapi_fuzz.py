"""Property-based fuzzing of the live server from its own OpenAPI schema: no input gives a 5xx.

Every operation the served schema lists is fuzzed, the Label Studio routes included (their
bodies are the pydantic schemas of `integrations.labelstudio.protocol`), with bodies that fit
the schema (positive) and bodies that break it (negative: wrong types, missing fields). Label
Studio bodies are also pushed past the first checks: a fuzzed `/predict` gets a real labelling
config, rectangle regions and an image some of the time, so the fuzzed tasks and regions reach
the backend's translation instead of stopping at an unparsable config. Hand-made hostile inputs
come on top: deep nesting, non-JSON bodies, odd auth headers, tasks that point at local addresses.

Bounded: a fixed number of derandomized examples per operation and mode, so a run takes a
minute at most and tries the same inputs each time. Hypothesis is driven directly over
schemathesis' per-operation strategies (schemathesis' own pytest plugin does not load under
pytest 9).
"""

from __future__ import annotations

import base64
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.server.conftest import LiveServer, png_bytes

EXAMPLES_PER_OPERATION = 20
#: Every operation of the served schema; a new route must be added here (and is then fuzzed).
OPERATIONS = {"GET /healthz", "GET /readyz", "GET /metrics", "GET /v1/models",
              "GET /v1/models/{name}/samples/{filename}", "POST /v1/images", "POST /v1/segment",
              "POST /v1/detect", "GET /labelstudio/", "GET /labelstudio/health",
              "POST /labelstudio/setup", "POST /labelstudio/predict", "POST /labelstudio/webhook",
              "GET /labelstudio/jobs", "POST /labelstudio/rollback"}
WITH_INPUTS = {op for op in OPERATIONS if op.startswith("POST")} | {
    "GET /v1/models/{name}/samples/{filename}"}

LABEL_CONFIG = """<View><Image name="pic" value="$image"/>
  <RectangleLabels name="box" toName="pic" smart="true"><Label value="disc"/><Label value="ring"/>
  </RectangleLabels>
  <BrushLabels name="mask" toName="pic"><Label value="disc"/><Label value="ring"/></BrushLabels>
</View>"""
IMAGE = "data:image/png;base64," + base64.b64encode(png_bytes(seed=2)).decode()


def label_studio_shaped(body: Any, real: bool) -> Any:
    """A fuzzed `/predict` body given what Label Studio would always give (`real`): its config,
    an image for each task, and region items typed as the rectangles boxmask reads, whatever
    their (fuzzed) values. Other bodies are left as generated."""
    if not real or not isinstance(body, dict):
        return body
    body = {**body, "label_config": LABEL_CONFIG}
    # A negative case may make any of these a scalar (`"annotations": true`): only lists are
    # walked, the rest is sent as generated.
    tasks = body.get("tasks")
    for task in tasks if isinstance(tasks, list) else ():
        if isinstance(task, dict) and isinstance(task.get("data"), dict):
            task["data"]["image"] = IMAGE
            for key in ("annotations", "predictions"):
                items = task.get(key)
                for item in items if isinstance(items, list) else ():
                    if isinstance(item, dict):
                        _rectangles(item.get("result"))
    params = body.get("params")
    if isinstance(params, dict) and isinstance(params.get("context"), dict):
        _rectangles(params["context"].get("result"))
    return body


def _rectangles(results: Any) -> None:
    for region in results if isinstance(results, list) else ():
        if isinstance(region, dict):
            region.update(type="rectanglelabels", from_name="box", to_name="pic")


def test_no_generated_request_gets_a_server_error(live_server: LiveServer) -> None:
    schema = schemathesis.openapi.from_url(f"{live_server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} == OPERATIONS
    calls: dict[str, int] = {}
    for operation in operations:
        # Negative cases need an input to break.
        modes = list(GenerationMode) if operation.label in WITH_INPUTS else [GenerationMode.POSITIVE]
        for mode in modes:
            cases = operation.as_strategy(generation_mode=mode)
            if operation.label == "POST /labelstudio/predict":
                cases = st.tuples(cases, st.booleans()).map(_shaped_case)

            @given(case=cases)
            @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
                      database=None, suppress_health_check=list(HealthCheck))
            def fuzz(case) -> None:  # schemathesis.Case
                response = case.call(base_url=live_server.url, timeout=30)
                calls[operation.label] = calls.get(operation.label, 0) + 1
                case.validate_response(response, checks=[not_a_server_error])

            fuzz()
    # Operations without inputs run once per mode (Hypothesis stops when nothing varies); the
    # others get the full budget.
    assert set(calls) == OPERATIONS, calls
    assert all(calls[op] >= 10 for op in WITH_INPUTS), calls
    assert live_server.process.poll() is None


def _shaped_case(pair: tuple[Any, bool]) -> Any:
    case, real = pair
    case.body = label_studio_shaped(case.body, real)
    return case


HOSTILE_BODIES = [
    (b"[" * 100_000 + b"]" * 100_000, "application/json"),
    (b'{"a":' * 5_000 + b"1" + b"}" * 5_000, "application/json"),
    (b'{"tasks": []}', "text/plain"),
    (b'{"tasks": []}', "application/x-www-form-urlencoded"),
    (b"\xff\xfe\x00", "application/json"),
    (b"", "application/json"),
    (b"null", "application/json"),
    (b'{"tasks": [{"data": {"image": "http://127.0.0.1:1/x.png"}}], "label_config": "<View/>"}',
     "application/json"),
    (b'{"tasks": [{"data": {"image": "/data/local-files/?d=../../etc/hostname"}}]}',
     "application/json"),
    ((b'{"tasks": [{"id": 1, "data": {"image": "data:image/png;base64,AAAA"}}], '
     b'"label_config": "<!DOCTYPE x [<!ENTITY a \\"aaaa\\">]><View>&a;</View>"}'),
     "application/json"),
]
HOSTILE_HEADERS = [{}, {"Authorization": b"Basic \xff\xfe"}, {"Authorization": "Basic !!!"},
                   {"Authorization": "Bearer"}, {"X-Request-ID": b"\xff" * 300}]


def test_hostile_label_studio_inputs_get_4xx_never_5xx(live_server: LiveServer) -> None:
    import httpx

    with httpx.Client(base_url=live_server.url, timeout=60) as http:
        for path in ("/labelstudio/setup", "/labelstudio/predict", "/labelstudio/webhook"):
            for body, content_type in HOSTILE_BODIES:
                for extra in HOSTILE_HEADERS:
                    response = http.post(path, content=body,
                                         headers={"Content-Type": content_type, **extra})
                    assert response.status_code < 500, (path, body[:60], extra, response.text)
    assert live_server.process.poll() is None
