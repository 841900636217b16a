"""`RequestRoute`: a route served without FastAPI's dependency solving refuses, when it is made,
what it would silently skip."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.testclient import TestClient

from boxmask.server.auth import require_token
from boxmask.server.routing import RequestRoute, json_response
from boxmask.server.schemas import Health


def test_a_request_route_refuses_dependencies_and_other_endpoint_signatures() -> None:
    guarded = APIRouter(route_class=RequestRoute, dependencies=[Depends(require_token)])
    with pytest.raises(TypeError, match="runs no dependencies"):
        @guarded.post("/a")
        async def a(request: Request) -> Response:
            return Response()

    plain = APIRouter(route_class=RequestRoute)
    with pytest.raises(TypeError, match="async def f"):
        @plain.post("/b")
        async def b(request: Request, n: int = 0) -> Response:
            return Response()
    with pytest.raises(TypeError, match="async def f"):
        @plain.post("/c")
        def c(request: Request) -> Response:
            return Response()


def test_a_request_route_answers_what_its_endpoint_returns() -> None:
    router = APIRouter(route_class=RequestRoute)

    @router.post("/echo", response_model=Health)
    async def echo(request: Request) -> Response:
        await request.body()
        return json_response(Health(), status_code=201)

    app = FastAPI()
    app.include_router(router)
    with TestClient(app) as client:
        r = client.post("/echo", content=b"{}")
        assert r.status_code == 201 and r.json() == Health().model_dump()
        assert r.headers["content-type"] == "application/json"
    # Documented as any route: its response model is in the schema.
    assert "Health" in app.openapi()["components"]["schemas"]
