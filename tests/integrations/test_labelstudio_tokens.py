"""Which Label Studio token boxmask can read task images with (docs/labelstudio.md), against a
real Label Studio 1.23.2 as it installs: a new organization, nothing switched on by hand.

boxmask fetches images through label-studio-sdk's `get_base64_content`, which sends a JWT as
`Bearer <token>` and anything else as `Token <token>`, unchanged. The documented answer: a
personal access token (a JWT refresh token) never works that way; the legacy token works once
legacy tokens are enabled in the organization, which they are not by default.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator

import httpx
import jwt
import pytest

from boxmask.integrations.labelstudio.images import ImageFetchError, LabelStudioAccess, fetch_image
from tests.integrations.test_labelstudio_live import LS_BIN, LS_VENV, image_bytes, wait_for
from tests.peers import peer_missing
from tests.processes import free_port, stop_process

pytestmark = pytest.mark.labelstudio

USER, PASSWORD = "tokens@boxmask.local", "boxmask-tokens-pass"


@pytest.fixture(scope="module")
def fresh_label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Label Studio 1.23.2 with its defaults: no LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN."""
    if not LS_BIN.exists():
        peer_missing(f"Label Studio is not installed in {LS_VENV}: run scripts/install_labelstudio.sh")
    data = tmp_path_factory.mktemp("label_studio_tokens") / "data"
    template = LS_VENV / "template-data"
    if (template / ".migrated").exists():
        shutil.copytree(template, data)
    else:
        data.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO", "DJANGO"))}
    env.update({"LABEL_STUDIO_USERNAME": USER, "LABEL_STUDIO_PASSWORD": PASSWORD,
                "LABEL_STUDIO_BASE_DATA_DIR": str(data), "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": ""})
    log = data / "label-studio.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(LS_BIN), "start", "--no-browser", "--internal-host",
                                 "127.0.0.1", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=data)
    try:
        wait_for(f"{url}/health", proc, log, timeout_s=480)
        yield url
    finally:
        stop_process(proc)


@contextlib.contextmanager
def _logged_in(url: str) -> Iterator[httpx.Client]:
    """The browser's session: what a user has before any token exists."""
    with httpx.Client(base_url=url, timeout=60, follow_redirects=True) as client:
        client.get("/user/login/")
        client.post("/user/login/", data={"email": USER, "password": PASSWORD,
                                          "csrfmiddlewaretoken": client.cookies["csrftoken"]},
                    headers={"Referer": f"{url}/user/login/"})
        client.headers.update({"X-CSRFToken": client.cookies["csrftoken"], "Referer": url})
        assert client.get("/api/current-user/whoami").status_code == 200
        yield client


def _fetch(url: str, image_url: str, token: str) -> bytes | str:
    """What boxmask gets for a task's image with `token` as LABEL_STUDIO_API_KEY."""
    try:
        return fetch_image(image_url, LabelStudioAccess(url=url, token=token))
    except ImageFetchError as exc:
        return exc.detail


def test_boxmask_reads_uploads_with_the_legacy_token_once_enabled_never_with_a_personal_token(
        fresh_label_studio: str) -> None:
    url = fresh_label_studio
    with _logged_in(url) as session:
        # Account & Settings -> Personal Access Token -> Create New Token; -> Legacy Token.
        personal = session.post("/api/token/").json()["token"]
        legacy = session.get("/api/current-user/token").json()["token"]
        project = session.post("/api/projects", json={"title": "tokens", "label_config": (
            '<View><Image name="image" value="$image"/><RectangleLabels name="box" '
            'toName="image"><Label value="disc"/></RectangleLabels></View>')}).json()["id"]
        image = image_bytes(3)
        assert session.post(f"/api/projects/{project}/import",
                            files={"file": ("a.png", image, "image/png")}).status_code == 201
        (task,) = session.get(f"/api/projects/{project}/tasks").json()
    upload = task["data"]["image"]
    assert upload.startswith("/data/upload/")

    # A personal access token is a refresh token; the access token it is exchanged for lasts
    # five minutes.
    access = httpx.post(f"{url}/api/token/refresh/", json={"refresh": personal}).json()["access"]
    assert jwt.decode(personal, options={"verify_signature": False})["token_type"] == "refresh"
    claims = jwt.decode(access, options={"verify_signature": False})
    assert claims["token_type"] == "access" and claims["exp"] - claims["iat"] == 300

    # A new organization: personal access tokens on, legacy tokens off.
    bearer = {"Authorization": f"Bearer {access}"}
    assert httpx.get(f"{url}/api/jwt/settings", headers=bearer).json() == {
        "api_tokens_enabled": True, "legacy_api_tokens_enabled": False}
    assert "HTTP 401" in _fetch(url, upload, personal)  # sent as "Bearer <refresh token>"
    assert "HTTP 401" in _fetch(url, upload, legacy)
    assert "legacy token authentication has been disabled" in httpx.get(
        f"{url}/api/current-user/whoami", headers={"Authorization": f"Token {legacy}"}).text

    # docs/labelstudio.md, step 1 by API: legacy tokens on.
    switched = httpx.post(f"{url}/api/jwt/settings", headers=bearer,
                          json={"api_tokens_enabled": True, "legacy_api_tokens_enabled": True})
    assert switched.status_code == 200, switched.text
    assert httpx.get(f"{url}/api/current-user/whoami",  # step 3's check
                     headers={"Authorization": f"Token {legacy}"}).json()["email"] == USER
    assert _fetch(url, upload, legacy) == image
    assert "HTTP 401" in _fetch(url, upload, personal)  # still not a personal access token
    assert _fetch(url, upload, access) == image  # for its five minutes

