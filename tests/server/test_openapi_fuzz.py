"""Property-based fuzzing of the live server from its own OpenAPI schema: no input gives a 5xx.

The Label Studio routes are in the schema too (their bodies described loosely), and get
hand-made hostile inputs on top: deep nesting, non-JSON bodies, odd auth headers, tasks that
point at local addresses.

Bounded: a fixed number of derandomized examples per operation, so a run takes seconds and tries
the same inputs each time. Hypothesis is driven directly over schemathesis' per-operation
strategies (schemathesis' own pytest plugin does not load under pytest 9).
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.server.conftest import LiveServer

EXAMPLES_PER_OPERATION = 25


def test_no_generated_request_gets_a_server_error(live_server: LiveServer) -> None:
    schema = schemathesis.openapi.from_url(f"{live_server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/images", "/v1/segment", "/v1/detect",
                                              "/labelstudio/setup", "/labelstudio/predict",
                                              "/labelstudio/webhook"}
    calls: dict[str, int] = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
                  database=None, suppress_health_check=list(HealthCheck))
        def fuzz(case) -> None:  # schemathesis.Case
            response = case.call(base_url=live_server.url, timeout=30)
            calls[operation.label] = calls.get(operation.label, 0) + 1
            case.validate_response(response, checks=[not_a_server_error])

        fuzz()
    # Operations without inputs run once (Hypothesis stops when nothing varies); the API's
    # operations get the full budget.
    api = {op: calls.get(op, 0) for op in ("POST /v1/images", "POST /v1/segment", "POST /v1/detect",
                                           "POST /labelstudio/setup", "POST /labelstudio/predict",
                                           "POST /labelstudio/webhook")}
    assert all(n >= 10 for n in api.values()), calls
    assert live_server.process.poll() is None


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
