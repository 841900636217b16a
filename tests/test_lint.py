"""The whole tree stays clean of ruff's findings: the version pinned in the dev extra, with the
rule set that pyproject.toml's [tool.ruff.lint] chooses (ruff's default plus whole families:
pycodestyle, pyflakes, import order, bugbear, pyupgrade, simplify, ruff's own)."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from tests.peers import peer_missing

REPO = Path(__file__).resolve().parents[1]


def _pinned_ruff() -> str:
    text = (REPO / "pyproject.toml").read_text()
    pin = next(line for line in text.splitlines() if line.strip().startswith('"ruff=='))
    return pin.strip().strip('",').split("==")[1]


def test_ruff_is_clean() -> None:
    try:
        installed = metadata.version("ruff")
    except metadata.PackageNotFoundError:
        peer_missing("ruff is not installed: pip install -e '.[dev]'")
        return
    if installed != _pinned_ruff():
        # Another ruff has another default rule set: its verdict is not this project's.
        pytest.skip(f"ruff {installed} is installed, the project pins {_pinned_ruff()}")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache",
                             "--output-format", "concise", "."],
                            check=False, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (
        f"ruff check found problems (fix them, or `ruff check --fix .`):\n{result.stdout}"
        f"{result.stderr}")
