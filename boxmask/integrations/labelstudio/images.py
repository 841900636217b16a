"""Fetching a task's image the way Label Studio's own ML backends do, with limits.

URL resolution (uploads under `/data/upload/`, Local Files `/data/local-files/?d=`, cloud
storage `s3://` / `gs://` / `azure-blob:` through Label Studio's presign endpoint, plain http(s)
URLs) and the `Authorization` header are the SDK's (`get_base64_content`). What the SDK lacks
is bounded I/O: every download here goes through a session that sets a timeout and refuses a
body larger than `max_bytes`, so a bad URL cannot hang a worker or fill its memory.
`data:` URIs are decoded locally.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

import requests
from label_studio_sdk._extensions.label_studio_tools.core.utils import io as ls_io


class ImageFetchError(ValueError):
    """The task's image could not be fetched; the message says which URL and why."""


class _BoundedSession(requests.Session):
    """A requests session with a default timeout and a cap on the body it will read."""

    def __init__(self, timeout_s: float, max_bytes: int) -> None:
        super().__init__()
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes

    def request(self, method, url, *args, **kwargs):  # type: ignore[override]
        kwargs.setdefault("timeout", self.timeout_s)
        kwargs["stream"] = True
        response = super().request(method, url, *args, **kwargs)
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response.close()
            raise ImageFetchError(f"{url} is {declared} bytes, more than the limit of {self.max_bytes}")
        body = bytearray()
        for chunk in response.iter_content(1 << 16):
            body += chunk
            if len(body) > self.max_bytes:
                response.close()
                raise ImageFetchError(f"{url} is larger than the limit of {self.max_bytes} bytes")
        # The SDK reads `response.content`; a streamed response caches its body there.
        response._content = bytes(body)
        return response


@dataclass(frozen=True)
class LabelStudioAccess:
    """Where Label Studio is and the token to read its files (`None`: not known)."""

    url: str | None = None
    token: str | None = None


def decode_data_uri(uri: str) -> bytes:
    """The bytes of a `data:[<type>][;base64],<data>` URI."""
    header, sep, payload = uri.partition(",")
    if not sep:
        raise ImageFetchError("data: URI without a comma")
    try:
        if header.endswith(";base64"):
            return base64.b64decode(payload, validate=False)
        return unquote_to_bytes(payload)
    except (binascii.Error, ValueError) as exc:
        raise ImageFetchError(f"data: URI is not valid base64: {exc}") from exc


def fetch_image(url: str, access: LabelStudioAccess, task_id: int | None = None,
                timeout_s: float = 10.0, max_bytes: int = 32 << 20) -> bytes:
    """The encoded bytes of the image a task's data points to.

    access: Label Studio's URL and a token; needed for uploads, Local Files and cloud storage
    (Label Studio sends them in /setup; `LABEL_STUDIO_URL` / `LABEL_STUDIO_API_KEY` override).
    task_id: needed for cloud storage URIs, which Label Studio presigns per task.
    """
    if not isinstance(url, str) or not url:
        raise ImageFetchError(f"task data holds no image URL (got {url!r})")
    if url.startswith("data:"):
        data = decode_data_uri(url)
        if len(data) > max_bytes:
            raise ImageFetchError(f"data: URI image is {len(data)} bytes, more than {max_bytes}")
        return data
    session = _BoundedSession(timeout_s, max_bytes)
    try:
        with ls_io.http_session(session):
            encoded = ls_io.get_base64_content(url, hostname=access.url, access_token=access.token,
                                               task_id=task_id)
    except ImageFetchError:
        raise
    except requests.exceptions.Timeout as exc:
        raise ImageFetchError(f"fetching {url} timed out after {timeout_s} s") from exc
    except requests.exceptions.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        hint = (" (Label Studio refused the token: set LABEL_STUDIO_API_KEY, or reconnect the "
                "model so that /setup sends a fresh one)" if status in (401, 403) else "")
        raise ImageFetchError(f"fetching {url} failed with HTTP {status}{hint}") from exc
    except (requests.exceptions.RequestException, FileNotFoundError, ValueError) as exc:
        raise ImageFetchError(f"cannot fetch {url}: {exc}") from exc
    except Exception as exc:  # the SDK raises bare Exception, e.g. cloud URIs without a task id
        raise ImageFetchError(f"cannot fetch {url}: {exc}") from exc
    finally:
        session.close()
    return base64.b64decode(encoded)
