"""The integrations are translators between a tool's JSON and the runtime: their tests compare
the tool-side masks with the runtime's own, pixel for pixel. That needs masks that are not all
empty on arbitrary test images, including detector masks; the barely trained tiny model of
tests/conftest.py gives empty detector masks on noise, the contract model's random heads do
not. The trained, exported path is covered by tests/export and tests/runtime."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def model_dir(contract_model_dir: Path) -> Path:
    return contract_model_dir
