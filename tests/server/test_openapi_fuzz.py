"""Property-based fuzzing of the live server from its own OpenAPI schema: no input gives a 5xx.

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
    assert {op.path for op in operations} >= {"/v1/images", "/v1/segment", "/v1/detect"}
    calls: dict[str, int] = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
                  database=None, suppress_health_check=list(HealthCheck))
        def fuzz(case) -> None:  # noqa: ANN001 - schemathesis.Case
            response = case.call(base_url=live_server.url, timeout=30)
            calls[operation.label] = calls.get(operation.label, 0) + 1
            case.validate_response(response, checks=[not_a_server_error])

        fuzz()
    # Operations without inputs run once (Hypothesis stops when nothing varies); the API's
    # operations get the full budget.
    api = {op: calls.get(op, 0) for op in ("POST /v1/images", "POST /v1/segment", "POST /v1/detect")}
    assert all(n >= 10 for n in api.values()), calls
    assert live_server.process.poll() is None
