"""The API's description: ``/openapi.json``, ``/docs`` (Swagger UI) and ``/redoc``.

FastAPI serves these itself and to anyone; here they are the app's own routes, behind the token
when the server has one, like every route but the probes. They answer a Basic challenge, so a
browser opening ``/docs`` asks for the token (any user name, the token as password) and sends it
again for the schema and, from the docs page, for the API's routes.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from boxmask.server.auth import require_token_or_basic

OPENAPI_URL = "/openapi.json"

router = APIRouter(include_in_schema=False, dependencies=[Depends(require_token_or_basic)])


@router.get(OPENAPI_URL)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url=OPENAPI_URL, title=f"{request.app.title} - Swagger UI")


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(openapi_url=OPENAPI_URL, title=f"{request.app.title} - ReDoc")
