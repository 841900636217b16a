"""What the server's public answers must not carry: the machine's local file paths.

A model card records where training read its data (`provenance.config.data.*`), load errors
name model directories, and readiness names the model folder: useful in the server's own log,
but a map of the host for anyone who can call `/v1/models` or `/readyz`. Answers go through
here; the log keeps the full text.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

# An absolute POSIX path (not the path part of a URL: that follows "host" or "//"), a
# home-relative one, or a Windows drive path.
_PATH = re.compile(r"(?<![\w.:/-])(?:~?/(?:[\w.@+-]+/)*[\w.@+-]+|[A-Za-z]:\\[^\s'\"]*)")


def redact_paths(text: str) -> str:
    """`text` with each local path replaced by its last component (``/srv/data/a.json`` ->
    ``a.json``): what the path named stays readable, where it lives does not."""
    def last(match: re.Match[str]) -> str:
        path = match.group(0)
        name = (PureWindowsPath(path) if "\\" in path else PurePosixPath(path)).name
        return name or "<path>"

    return _PATH.sub(last, text)


def public_card(value: Any) -> Any:
    """A model card (any JSON value) with every string's local paths redacted."""
    if isinstance(value, str):
        return redact_paths(value)
    if isinstance(value, dict):
        return {k: public_card(v) for k, v in value.items()}
    if isinstance(value, list):
        return [public_card(v) for v in value]
    return value
