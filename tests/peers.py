"""Real peers (Label Studio, tritonserver, Chromium) that some tests talk to.

Locally a missing peer skips its tests with the reason and the command that installs it. In CI
(`CI=true`, which `.ci/run` sets) a missing peer FAILS them: a green CI run must have talked to
every real peer, not skipped the tests that do.
"""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    """True when the environment says this is a CI run (`CI=true`, as GitHub Actions, GitLab
    and `.ci/run` set it)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def peer_missing(message: str) -> None:
    """Skip (locally) or fail (in CI) the current test because a real peer is not there.
    Call it from a test or a fixture, never at import time: a failure while collecting would
    stop the whole run instead of marking the tests that need the peer."""
    if in_ci():
        pytest.fail(f"{message} -- CI=true: a missing peer is a failure, not a skip", pytrace=False)
    pytest.skip(message)


def require_pinned_dev_tool(name: str) -> None:
    """Skip or fail (:func:`peer_missing`) unless the dev extra's tool ``name`` (ruff, mypy) is
    installed; skip when another version than pyproject.toml's pin is installed: another
    version has other rules, and its verdict is not this project's."""
    from importlib import metadata
    from pathlib import Path

    try:
        installed = metadata.version(name)
    except metadata.PackageNotFoundError:
        peer_missing(f"{name} is not installed: pip install -e '.[dev]'")
        return
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    pin = next(line for line in text.splitlines() if line.strip().startswith(f'"{name}=='))
    pinned = pin.strip().strip('",').split("==")[1]
    if installed != pinned:
        pytest.skip(f"{name} {installed} is installed, the project pins {pinned}")
