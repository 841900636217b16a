"""The requests the README and docs/server.md show, run as shown against a live server, with an
ordinary photo-sized JPEG (the README's first example once put its base64 on the command line,
which fails with "Argument list too long" for any image over about 96 KB)."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.server.conftest import LiveServer

REPO = Path(__file__).resolve().parents[2]
BOX = [10, 20, 90, 110]


def _block(path: Path, language: str, containing: str) -> str:
    blocks = re.findall(rf"^```{language}\n(.*?)^```", path.read_text(), flags=re.DOTALL | re.MULTILINE)
    found = [b for b in blocks if containing in b]
    assert found, f"no {language} block with {containing!r} in {path.name}"
    return found[0]


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    """photo.jpg as the examples name it: 874 KB or more, as a phone photo."""
    rng = np.random.default_rng(0)
    pixels = (rng.random((900, 1200, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    path = tmp_path / "photo.jpg"
    path.write_bytes(buf.getvalue())
    assert path.stat().st_size >= 874_000
    return path


def _run_shell(command: str, server: LiveServer, cwd: Path) -> dict:
    command = command.replace("localhost:8000", server.url.removeprefix("http://"))
    result = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _assert_one_ring_mask(body: dict) -> None:
    (instance,) = body["instances"]
    assert instance["label"] == "ring" and instance["box"] == BOX
    assert instance["mask"]["format"] == "rle" and instance["mask"]["size"] == [900, 1200]


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_the_readmes_first_request_works_as_written_with_a_photo(
        live_server: LiveServer, photo: Path) -> None:
    readme = REPO / "README.md"
    block = _block(readme, "bash", "/v1/segment")
    first = block.split("\n#", 1)[0]  # the command, up to the comment that shows the answer
    assert str(BOX) in first and "ring" in first
    _assert_one_ring_mask(_run_shell(first.replace("some.png", "photo.jpg"), live_server,
                                     photo.parent))


def test_the_readmes_python_example_works_as_written(live_server: LiveServer, photo: Path) -> None:
    snippet = _block(REPO / "README.md", "python", "httpx.post")
    snippet = snippet.replace("http://localhost:8000", live_server.url)
    result = subprocess.run([sys.executable, "-c", snippet], cwd=photo.parent, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("ring [900, 1200] ")


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_the_json_form_in_docs_server_md_streams_a_photo_through_a_pipe(
        live_server: LiveServer, photo: Path) -> None:
    block = _block(REPO / "docs" / "server.md", "bash", "base64 -w0 photo.jpg")
    _assert_one_ring_mask(_run_shell(block, live_server, photo.parent))
