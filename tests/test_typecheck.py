"""The packages that serve and label type-check: mypy, the version pinned in the dev extra, over
the files that pyproject.toml's [tool.mypy] names (runtime, server, labeling, integrations,
config, files, journal), with its settings.

Incremental: the cache in .mypy_cache makes a run after the first about a second; a first run
(CI's fresh clone) reads the libraries' types once, some 20-30 s on two cores.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.peers import require_pinned_dev_tool

REPO = Path(__file__).resolve().parents[1]


def test_mypy_is_clean() -> None:
    require_pinned_dev_tool("mypy")
    result = subprocess.run([sys.executable, "-m", "mypy"], check=False, cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (
        f"mypy found problems (fix them with types; pyproject.toml's [tool.mypy] says what "
        f"is checked):\n{result.stdout}{result.stderr}")
