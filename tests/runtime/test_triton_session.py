"""TritonSession against a real Triton Inference Server (HTTP and gRPC).

The server binary comes from the registry package nvidia-pytriton (0.7.0 ships tritonserver
2.51 with the Python backend): `make test-tools` installs it with
`pip install --no-deps --target .triton nvidia-pytriton==0.7.0`; BOXMASK_TRITONSERVER may point
at another `tritonserver`. Without one the tests are skipped with that reason locally and FAIL
in CI (CI=true, tests/peers.py). The model repository is the exporter's own
(`write_triton_repository`, CPU instance groups), loaded by the real server; this build has no
ONNX Runtime backend, so each config's `backend: "onnxruntime"` becomes `backend: "python"` and
tests/runtime/triton_python_model.py runs the exporter's `model.onnx` beside it. Everything
else in the configs (tensor names, types, dims, batching) is the exporter's, and Triton checks
every request against it.
"""

from __future__ import annotations

import contextlib
import filecmp
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from boxmask.export.triton import write_triton_repository
from boxmask.runtime import BackendUnavailable, Predictor
from boxmask.runtime.contract import TRITON_MODEL_NAMES
from boxmask.runtime.sessions.triton_client import TritonSession
from tests.peers import peer_missing
from tests.processes import free_port, stop_process

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.triton


def _find_tritonserver() -> Path | None:
    candidates = [
        os.environ.get("BOXMASK_TRITONSERVER"),
        REPO / ".triton/pytriton/tritonserver/bin/tritonserver",
    ]
    which = shutil.which("tritonserver")
    candidates.append(which)
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    return None


def _python_backend(server: Path) -> Path:
    """The server's backends dir, with the Python stub of this interpreter's version in place
    (nvidia-pytriton ships one stub per Python version and copies it there when it starts)."""
    root = server.parent.parent
    backends = root / "backends"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    target = backends / "python" / "triton_python_backend_stub"
    if stub.is_file() and not (target.is_file() and filecmp.cmp(stub, target, shallow=False)):
        shutil.copy2(stub, target)
    if not target.is_file():
        peer_missing(f"no Triton Python backend stub for Python {version} under {root}")
    return backends


def _libpython_dir() -> str:
    """The directory of this interpreter's shared libpython.

    The stub links `libpython3.X.so.1.0`; found in the system's directory it is Debian's
    3.11.2, which fails on the stdlib of this 3.11.7 (`'_thread.RLock' object has no attribute
    '_recursion_count'`). Putting our own libpython first makes library and stdlib match.
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    name = sysconfig.get_config_var("INSTSONAME")
    if not (
        sysconfig.get_config_var("Py_ENABLE_SHARED")
        and libdir
        and name
        and (Path(libdir) / name).exists()
    ):
        peer_missing("this Python has no shared libpython for Triton's Python backend stub")
    return libdir


def _served_by_python_backend(config: str, site_packages: str) -> str:
    """The exporter's config.pbtxt with the one change this tritonserver forces: it has no
    ONNX Runtime backend, so tests/runtime/triton_python_model.py runs the same `model.onnx`
    in the Python backend. Everything else (names, types, dims, batching) stays the exporter's."""
    assert config.count('backend: "onnxruntime"') == 1, config
    return (config.replace('backend: "onnxruntime"', 'backend: "python"')
            + f'parameters {{ key: "site_packages" value: {{ string_value: "{site_packages}" }} }}\n')


@pytest.fixture(scope="module")
def triton(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with _serving(model_dir, tmp_path_factory) as urls:
        yield urls


@pytest.fixture(scope="module")
def triton_with_quality(quality_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
                        ) -> Iterator[dict[str, str]]:
    """The exporter's repository of a model with the mask-quality head, served."""
    with _serving(quality_model_dir, tmp_path_factory) as urls:
        yield urls


@contextlib.contextmanager
def _serving(model_dir: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[dict[str, str]]:
    """A tritonserver over the exporter's repository of ``model_dir``: its HTTP and gRPC
    addresses."""
    server = _find_tritonserver()
    if server is None:
        peer_missing(
            "no tritonserver: `make test-tools` installs it (pip install --no-deps --target .triton "
            "nvidia-pytriton==0.7.0)"
        )
    backends = _python_backend(server)
    import onnxruntime

    site_packages = str(Path(onnxruntime.__file__).resolve().parents[1])
    # The exporter's own repository (CPU instance groups: this server has no GPU).
    # The exporter names the models from runtime.contract, as the session asks for them: the
    # folders below exist only if the two agree.
    repo = write_triton_repository(model_dir, tmp_path_factory.mktemp("triton") / "repository",
                                   gpu=False)
    for name in TRITON_MODEL_NAMES.values():
        config = repo / name / "config.pbtxt"
        if not config.is_file():
            continue  # a graph this model directory does not have (the labelled decoder)
        config.write_text(_served_by_python_backend(config.read_text(), site_packages))
        shutil.copy(Path(__file__).with_name("triton_python_model.py"), repo / name / "1" / "model.py")

    http, grpc, metrics = free_port(), free_port(), free_port()
    env = dict(
        os.environ,
        LD_LIBRARY_PATH=os.pathsep.join(
            filter(None, [_libpython_dir(), os.environ.get("LD_LIBRARY_PATH")])
        ),
    )
    log = open(repo / "tritonserver.log", "wb")  # noqa: SIM115 - closed in teardown
    process = subprocess.Popen(
        [
            str(server),
            f"--model-repository={repo}",
            f"--backend-directory={backends}",
            f"--http-port={http}",
            f"--grpc-port={grpc}",
            f"--metrics-port={metrics}",
            "--allow-metrics=false",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"tritonserver exited with {process.returncode}:\n{(repo / 'tritonserver.log').read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{http}/v2/health/ready", timeout=1
                ) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"tritonserver not ready in 90 s:\n{(repo / 'tritonserver.log').read_text()[-3000:]}"
                )
            time.sleep(0.3)
        yield {"http": f"127.0.0.1:{http}", "grpc": f"127.0.0.1:{grpc}"}
    finally:
        stop_process(process, timeout=30)
        log.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_triton_predictor_gives_the_same_masks_as_onnxruntime(
    triton: dict[str, str], model_dir: Path, protocol: str
) -> None:
    local = Predictor.from_dir(model_dir, intra_op_threads=1)
    remote = Predictor.from_dir(
        model_dir, backend="triton", triton_url=triton[protocol], triton_protocol=protocol
    )
    assert "triton" in remote.describe()["encoder"]
    image = np.random.default_rng(3).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    boxes = [[5, 5, 40, 30], [20, 10, 85, 65], [0, 0, 90, 70]]
    labels = ["square", None, 7]
    expected = local.predict(boxes, labels, key=local.set_image(image))
    got = remote.predict(boxes, labels, key=remote.set_image(image))
    np.testing.assert_allclose(got.mask_probs, expected.mask_probs, atol=1e-6)
    np.testing.assert_allclose(got.scores, expected.scores, atol=1e-6)
    assert np.array_equal(got.labels, expected.labels) and np.array_equal(got.masks, expected.masks)
    assert len(remote.predict([], key=got.key)) == 0
    detected = remote.detect(key=got.key, score_threshold=0.0)
    reference = local.detect(key=expected.key, score_threshold=0.0)
    np.testing.assert_allclose(detected.boxes, reference.boxes, atol=1e-4)
    assert np.array_equal(detected.masks, reference.masks)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_triton_serves_the_mask_quality_of_both_decoders_and_the_detections(
    triton_with_quality: dict[str, str], quality_model_dir: Path, tiny_dataset: Path,
    protocol: str
) -> None:
    """The repository's decoders have the `quality` output (their configs are read from the
    ONNX files) and the Triton session asks for it as ONNX Runtime's does."""
    from PIL import Image

    local = Predictor.from_dir(quality_model_dir, intra_op_threads=1)
    remote = Predictor.from_dir(quality_model_dir, backend="triton",
                                triton_url=triton_with_quality[protocol], triton_protocol=protocol)
    assert "labelled_decoder" in remote.describe()
    path = min((tiny_dataset / "images" / "val").glob("*.png"))
    image = np.asarray(Image.open(path).convert("RGB"))
    boxes = [[2, 2, 40, 30], [10, 8, 60, 58]]
    for labels, class_scores in (([1, None], True), ([1, 2], False)):
        expected = local.predict(boxes, labels, key=local.set_image(image),
                                 class_scores=class_scores)
        got = remote.predict(boxes, labels, key=remote.set_image(image),
                             class_scores=class_scores)
        assert got.has_quality
        np.testing.assert_allclose(got.quality, expected.quality, atol=1e-6)
    detected = remote.detect(key=got.key, score_threshold=0.0)
    reference = local.detect(key=expected.key, score_threshold=0.0)
    assert detected.has_quality
    np.testing.assert_allclose(detected.quality, reference.quality, atol=1e-5)


def test_scheme_in_the_url_picks_the_protocol(triton: dict[str, str]) -> None:
    session = TritonSession(f"grpc://{triton['grpc']}", "boxmask_decoder")
    assert session.protocol == "grpc"
    assert session.input_names == ["p2", "p3", "p4", "p5", "boxes", "labels", "image_size"]
    assert session.output_names == ["mask_logits", "class_scores", "labels_out"]


def test_a_model_the_server_lacks_is_backend_unavailable(triton: dict[str, str]) -> None:
    with pytest.raises(BackendUnavailable, match="no ready model 'boxmask_missing'"):
        TritonSession(triton["http"], "boxmask_missing")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_no_server_is_backend_unavailable(protocol: str) -> None:
    with pytest.raises(BackendUnavailable, match="unavailable"):
        TritonSession(
            f"127.0.0.1:{free_port()}", "boxmask_encoder", protocol=protocol, timeout_s=2
        )  # type: ignore[arg-type]
