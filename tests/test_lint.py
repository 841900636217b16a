"""The whole tree stays clean of ruff's findings: the version pinned in the dev extra, with the
rule set that pyproject.toml's [tool.ruff.lint] chooses (ruff's default plus whole families:
pycodestyle, pyflakes, import order, bugbear, pyupgrade, simplify, ruff's own)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.peers import require_pinned_dev_tool

REPO = Path(__file__).resolve().parents[1]


def test_ruff_is_clean() -> None:
    require_pinned_dev_tool("ruff")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache",
                             "--output-format", "concise", "."],
                            check=False, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (
        f"ruff check found problems (fix them, or `ruff check --fix .`):\n{result.stdout}"
        f"{result.stderr}")
