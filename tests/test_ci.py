"""CI fails loudly: `.ci/run` runs the suite with CI=true (a missing real peer fails its tests,
tests/peers.py), and a run that collects no tests fails `make test` and `.ci/run`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.peers import in_ci, peer_missing

REPO = Path(__file__).resolve().parents[1]


def test_make_test_fails_when_pytest_collects_nothing() -> None:
    make = shutil.which("make")
    assert make
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    # A module without tests: pytest exits 5 ("no tests collected") at once. -o: set-up is done.
    env["PYTEST_ADDOPTS"] = "-p no:cacheprovider tests/peers.py"
    r = subprocess.run([make, "--no-print-directory", "-o", "setup", "-o", "test-tools", "test",
                        f"PY={sys.executable}"], check=False, cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=120)
    assert "no tests ran" in r.stdout, r.stdout + r.stderr
    assert r.returncode != 0


@pytest.mark.parametrize("make_exit", [0, 1, 5])
def test_ci_run_sets_ci_and_passes_on_make_tests_exit_code(tmp_path: Path, make_exit: int) -> None:
    """`.ci/run` with a stand-in `make` first on PATH that records its environment."""
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "make").write_text(f'#!/bin/sh\necho "CI=$CI args=$*" > "{tmp_path}/make.log"\nexit {make_exit}\n')
    (shim / "make").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}"}
    env.pop("CI", None)
    r = subprocess.run(["bash", str(REPO / ".ci" / "run")], check=False, env=env, capture_output=True,
                       text=True, timeout=60)
    assert (tmp_path / "make.log").read_text().strip() == "CI=true args=test"
    assert r.returncode == make_exit, r.stdout + r.stderr


def test_a_missing_peer_skips_locally_and_fails_in_ci(monkeypatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    assert not in_ci()
    with pytest.raises(pytest.skip.Exception):
        peer_missing("no such peer")
    monkeypatch.setenv("CI", "true")
    assert in_ci()
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        peer_missing("no such peer")
