"""Fetching a task's image the way Label Studio's own ML backends do, inside a fence.

URL resolution (uploads under `/data/upload/`, cloud storage `s3://` / `gs://` /
`azure-blob:` through Label Studio's presign endpoint, plain http(s) URLs) and the
`Authorization` header are the SDK's (`get_base64_content`). What the SDK lacks, and this
module adds, is what makes it safe to expose:

- **Origins**: every request, and every redirect hop (followed here, one at a time, at most
  `MAX_REDIRECTS`), goes only to an allowed origin: Label Studio's own (`LABEL_STUDIO_URL`, or a
  project's /setup hostname where the operator allows that) and the operator's allow-list
  (`BOXMASK_LABELSTUDIO_ALLOWED_ORIGINS`, e.g. an S3 bucket presigned URLs redirect to). A task
  cannot make the server fetch an address of its choosing.
- **The key** goes only to Label Studio's origin: the SDK adds it for that origin only, and a
  redirect to any other origin drops it.
- **Bounds**: a total deadline per image (not per read: a server sending a byte every few
  seconds is cut off), and a body of at most `max_bytes`.
- **Local Files** (`/data/local-files/?d=`, with `LOCAL_FILES_DOCUMENT_ROOT`): read here, not by
  the SDK: the real path must stay inside the root (a symlink out of it is refused), the file
  must be a regular file of at most `max_bytes`.
- **One error**: every failure is an `ImageFetchError` whose message is the same generic line
  (a caller cannot tell a closed port from a 404); the reason is in `detail`, for the log.

`data:` URIs are decoded locally.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import posixpath
import re
import socket
import stat
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import SplitResult, parse_qs, unquote_to_bytes, urljoin, urlsplit

import requests
from label_studio_sdk._extensions.label_studio_tools.core.utils import io as ls_io
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)
# Headers that carry a credential; none of them leaves Label Studio's origin.
_CREDENTIALS = frozenset({"authorization", "cookie", "proxy-authorization"})


class ImageFetchError(ValueError):
    """The task's image could not be fetched. `str()` is one generic line for the caller;
    `detail` says which URL and why, for the server's log."""

    GENERIC = "the task's image could not be fetched; the server log has the reason"

    def __init__(self, detail: str) -> None:
        super().__init__(self.GENERIC)
        self.detail = detail


# What a URL may hold before any parser reads it: printable ASCII without space, backslash or
# the characters no parser agrees on. urllib's urlsplit takes the host after the *last* "@",
# urllib3 (and so requests) ends the authority at a backslash: `http://A\\@B/x` is B to the
# fence and A to the connection. Refusing every such URL up front, and comparing what both
# parsers read in what is left, makes one reading decide both the fence and the connection.
_SAFE_URL = re.compile(r"[!#-\[\]-~]+")  # 0x21-0x7e without '"' and '\\'


def strict_split(url: str) -> SplitResult | None:
    """``urlsplit(url)`` for an http(s) URL every parser reads the same way; None otherwise.

    Refused: anything but printable ASCII (spaces, control characters, non-ASCII), backslashes,
    userinfo (``user:pass@``, an ``@`` anywhere in the authority), an empty or bad host or
    port, and any URL whose host or port urllib3 reads differently from urllib.
    """
    if not isinstance(url, str) or not _SAFE_URL.fullmatch(url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        return None
    try:
        other = parse_url(url)
    except LocationParseError:
        return None
    if (other.scheme or "").lower() != scheme or (other.host or "").lower().strip("[]") \
            != parts.hostname.lower() or other.port != port or other.auth:
        return None
    return parts


def origin(url: str | None) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an http(s) URL, ports made explicit; None for anything else,
    including every URL that :func:`strict_split` refuses."""
    if not url:
        return None
    parts = strict_split(url.strip())
    if parts is None or not parts.hostname:  # strict_split refuses a URL without a host
        return None
    scheme = parts.scheme.lower()
    return scheme, parts.hostname.lower(), parts.port or (443 if scheme == "https" else 80)


@dataclass(frozen=True)
class LabelStudioAccess:
    """Where Label Studio is, the token to read its files, and where else images may come from.

    url: Label Studio's base URL (its origin receives the token); None: not known.
    allowed_origins: further origins task images may be fetched from (no token is sent there).
    """

    url: str | None = None
    token: str | None = None
    allowed_origins: tuple[str, ...] = field(default_factory=tuple)

    def allows(self, url: str) -> bool:
        target = origin(url)
        return target is not None and target in self._origins()

    def _origins(self) -> set[tuple[str, str, int]]:
        return {o for u in (self.url, *self.allowed_origins) if (o := origin(u)) is not None}

    def is_label_studio(self, url: str) -> bool:
        return self.url is not None and origin(url) is not None and origin(url) == origin(self.url)


class _FencedSession(requests.Session):
    """A requests session that only talks to allowed origins, follows redirects itself (each
    hop checked, the token dropped off Label Studio's origin), and stops at a total deadline
    and a body size."""

    def __init__(self, access: LabelStudioAccess, deadline: float, read_timeout_s: float,
                 max_bytes: int) -> None:
        super().__init__()
        self.access = access
        self.deadline = deadline  # time.monotonic() by which the body must be in
        self.read_timeout_s = read_timeout_s
        self.max_bytes = max_bytes
        self.trust_env = False  # no proxies or .netrc credentials from the environment

    def _remaining(self, url: str) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise ImageFetchError(f"{url}: the fetch deadline passed")
        return left

    def request(self, method, url, *args, **kwargs):
        headers = dict(kwargs.pop("headers", None) or {})
        kwargs.pop("allow_redirects", None)
        kwargs.pop("timeout", None)
        kwargs.pop("stream", None)
        for _ in range(MAX_REDIRECTS + 1):
            if strict_split(url) is None:
                raise ImageFetchError(f"{url!r}: not a plain http(s) URL (userinfo, backslashes, "
                                      "spaces or control characters are refused)")
            if not self.access.allows(url):
                raise ImageFetchError(f"{url}: not an allowed origin (Label Studio's, or "
                                      "BOXMASK_LABELSTUDIO_ALLOWED_ORIGINS)")
            if not self.access.is_label_studio(url) or not self.access.token:
                # Off Label Studio's origin no credential goes anywhere, and once a redirect has
                # left that origin none comes back on later hops (the chain is no longer Label
                # Studio's to choose); without a token of this access, the header could only be
                # the SDK's fallback to LABEL_STUDIO_API_KEY.
                for name in [k for k in headers if str(k).lower() in _CREDENTIALS]:
                    del headers[name]
            left = self._remaining(url)
            response = super().request(method, url, *args, headers=headers, stream=True,
                                       allow_redirects=False,
                                       timeout=(min(left, self.read_timeout_s),
                                                min(left, self.read_timeout_s)), **kwargs)
            if response.status_code in _REDIRECTS and "Location" in response.headers:
                response.close()
                url = urljoin(url, response.headers["Location"])
                if response.status_code == 303:
                    method = "GET"
                continue
            self._read_body(response, url)
            return response
        raise ImageFetchError(f"{url}: more than {MAX_REDIRECTS} redirects")

    def _read_body(self, response: requests.Response, url: str) -> None:
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response.close()
            raise ImageFetchError(f"{url} is {declared} bytes, more than the limit of {self.max_bytes}")
        body = bytearray()
        # A read blocks until its chunk is full or the peer is silent for a whole read timeout;
        # a peer sending a byte now and then would hold it far past the deadline. At the
        # deadline a timer shuts the socket down, which ends the blocked read at once.
        watchdog = threading.Timer(max(self.deadline - time.monotonic(), 0.0), _shut, (response,))
        watchdog.daemon = True
        watchdog.start()
        try:
            for chunk in response.iter_content(1 << 16):
                body += chunk
                if len(body) > self.max_bytes:
                    response.close()
                    raise ImageFetchError(f"{url} is larger than the limit of {self.max_bytes} bytes")
        except ImageFetchError:
            raise
        except Exception as exc:
            if time.monotonic() >= self.deadline:
                raise ImageFetchError(f"{url}: the fetch deadline passed mid-body") from exc
            raise
        finally:
            watchdog.cancel()
        if time.monotonic() >= self.deadline:
            raise ImageFetchError(f"{url}: the fetch deadline passed mid-body")
        # The SDK reads `response.content`; a streamed response caches its body there.
        response._content = bytes(body)


def _shut(response: requests.Response) -> None:
    """Shut the response's socket down (from the watchdog thread): a blocked read returns."""
    # urllib3 hands the socket to http.client's response once the headers are read; it sits
    # under that response's buffered reader.
    reader = getattr(getattr(response.raw, "_fp", None), "fp", None)
    sock = getattr(getattr(reader, "raw", None), "_sock", None)
    if sock is None:
        sock = getattr(getattr(response.raw, "_connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


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


def read_local_file(url: str, root: str, max_bytes: int, timeout_s: float = 10.0) -> bytes:
    """A Local Files URL (`/data/local-files/?d=<path>`) read from under `root`.

    As Label Studio's own view: `d` is relative to the root. Unlike the SDK: the real path
    (symlinks resolved) must be inside the real root, and only a regular file of at most
    `max_bytes` is read, within `timeout_s`. A FIFO, socket, device or directory is refused
    before it is opened for reading (a FIFO would block the fetch thread until a writer came),
    and the open itself never blocks (O_NONBLOCK).
    """
    values = parse_qs(urlsplit(url).query, keep_blank_values=True).get("d")
    relative = posixpath.normpath(values[-1]).lstrip("/") if values and values[-1] else ""
    if not relative or relative == ".":
        raise ImageFetchError(f"{url}: Local Files URL without a file path")
    if "\0" in relative:
        raise ImageFetchError(f"{url}: Local Files path with a NUL byte")
    deadline = time.monotonic() + timeout_s
    real_root = os.path.realpath(root)
    path = os.path.realpath(os.path.join(real_root, relative))
    if os.path.commonpath([path, real_root]) != real_root:
        raise ImageFetchError(f"{url}: resolves to {path}, outside LOCAL_FILES_DOCUMENT_ROOT")
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ImageFetchError(f"{url}: {path} is not a regular file")
        # The path is already real: O_NOFOLLOW refuses a symlink swapped in since, O_NONBLOCK a
        # FIFO swapped in since the stat.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise ImageFetchError(f"{url}: cannot open {path}: {exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ImageFetchError(f"{url}: {path} is not a regular file")
        if info.st_size > max_bytes:
            raise ImageFetchError(f"{url}: {path} is {info.st_size} bytes, more than {max_bytes}")
        chunks, size = [], 0
        while True:
            if time.monotonic() > deadline:
                raise ImageFetchError(f"{url}: reading {path} took longer than {timeout_s} s")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise ImageFetchError(f"{url}: {path} is larger than {max_bytes} bytes")
            chunks.append(chunk)
    except OSError as exc:
        raise ImageFetchError(f"{url}: cannot read {path}: {exc}") from exc
    finally:
        os.close(fd)
    return b"".join(chunks)


def _is_local_files(url: str) -> bool:
    return url.startswith("/data/") and "?d=" in url


def fetch_image(url: str, access: LabelStudioAccess, task_id: int | None = None,
                timeout_s: float = 10.0, max_bytes: int = 32 << 20,
                local_files_root: str | None = None, read_timeout_s: float = 10.0) -> bytes:
    """The encoded bytes of the image a task's data points to.

    access: Label Studio's URL, its token and the other allowed origins.
    task_id: needed for cloud storage URIs, which Label Studio presigns per task.
    timeout_s: the total deadline of this image (connection, redirects and body).
    local_files_root: `LOCAL_FILES_DOCUMENT_ROOT`; None fetches Local Files from Label Studio.
    Raises `ImageFetchError` (a generic message; the reason in `.detail`).
    """
    if not isinstance(url, str) or not url:
        raise ImageFetchError(f"task data holds no image URL (got {url!r})")
    if url.startswith("data:"):
        data = decode_data_uri(url)
        if len(data) > max_bytes:
            raise ImageFetchError(f"data: URI image is {len(data)} bytes, more than {max_bytes}")
        return data
    if _is_local_files(url):
        if local_files_root:
            return read_local_file(url, local_files_root, max_bytes, timeout_s)
        # Fetched from Label Studio's own view, as a plain URL: the SDK would otherwise read
        # the disk itself under its LOCAL_FILES_DOCUMENT_ROOT, without our limits.
        if not access.url:
            raise ImageFetchError(f"{url}: a Local Files URL, and neither LABEL_STUDIO_URL nor "
                                  "LOCAL_FILES_DOCUMENT_ROOT is set")
        url = ls_io.concat_urls(access.url, url)
    session = _FencedSession(access, time.monotonic() + timeout_s, read_timeout_s, max_bytes)
    try:
        with ls_io.http_session(session):
            encoded = ls_io.get_base64_content(url, hostname=access.url or "",
                                               access_token=access.token or "", task_id=task_id)
    except ImageFetchError:
        raise
    except requests.exceptions.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        hint = (" (Label Studio refused the token: set LABEL_STUDIO_API_KEY, or reconnect the "
                "model so that /setup sends a fresh one)" if status in (401, 403) else "")
        raise ImageFetchError(f"fetching {url} failed with HTTP {status}{hint}") from exc
    except Exception as exc:  # the SDK raises bare Exception, requests many kinds
        raise ImageFetchError(f"cannot fetch {url}: {type(exc).__name__}: {exc}") from exc
    finally:
        session.close()
    return base64.b64decode(encoded)


def parse_origins(values: Iterable[str]) -> tuple[str, ...]:
    """Allowed origins as given (`https://bucket.s3.amazonaws.com`), each checked to be one."""
    out = []
    for value in values:
        if origin(value) is None:
            raise ValueError(f"{value!r} is not an http(s) origin like 'https://host:port'")
        out.append(value.strip())
    return tuple(out)
