"""The integrations are translators between a tool's JSON and the runtime: their tests compare
the tool-side masks with the runtime's own, pixel for pixel. That needs masks that are not all
empty on arbitrary test images, including detector masks; the barely trained tiny model of
tests/conftest.py gives empty detector masks on noise, the contract model's random heads do
not. The trained, exported path is covered by tests/export and tests/runtime."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def model_dir(contract_model_dir: Path) -> Path:
    return contract_model_dir


@pytest.fixture()
def make_client(model_dir: Path) -> Iterator:
    """``make(server={...}, **label_studio_settings)``: a started TestClient of the app."""
    from fastapi.testclient import TestClient

    from boxmask.server.app import create_app
    from boxmask.server.settings import LabelStudioSettings, ServerSettings

    clients = []

    def make(server: dict | None = None, **ls_settings: object) -> TestClient:
        app = create_app(ServerSettings(model_dir=model_dir, demo=False, log_json=False,
                                        **(server or {})), LabelStudioSettings(**ls_settings))
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)
