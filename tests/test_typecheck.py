"""The packages that serve and label type-check: mypy, the version pinned in the dev extra, over
the files that pyproject.toml's [tool.mypy] names (runtime, server, labeling, integrations,
config, files, journal), with its settings.

Incremental: the cache in .mypy_cache makes a run after the first about a second; a first run
(CI's fresh clone) reads the libraries' types once, some 20-30 s on two cores.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from tests.peers import peer_missing

REPO = Path(__file__).resolve().parents[1]


def _pinned_mypy() -> str:
    text = (REPO / "pyproject.toml").read_text()
    pin = next(line for line in text.splitlines() if line.strip().startswith('"mypy=='))
    return pin.strip().strip('",').split("==")[1]


def test_mypy_is_clean() -> None:
    try:
        installed = metadata.version("mypy")
    except metadata.PackageNotFoundError:
        peer_missing("mypy is not installed: pip install -e '.[dev]'")
        return
    if installed != _pinned_mypy():
        # Another mypy infers otherwise: its verdict is not this project's.
        pytest.skip(f"mypy {installed} is installed, the project pins {_pinned_mypy()}")
    result = subprocess.run([sys.executable, "-m", "mypy"], check=False, cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (
        f"mypy found problems (fix them with types; pyproject.toml's [tool.mypy] says what "
        f"is checked):\n{result.stdout}{result.stderr}")
