"""`boxmask label --model NAME|DIR`: resolved by `boxmask.runtime.model_source`, the resolver
every command shares (re-exported here for the labeler's callers); and the model's version
that the journal and the output record.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from boxmask.runtime.contract import CARD_NAME
from boxmask.runtime.model_source import resolve_model_dir

__all__ = ["model_version", "resolve_model_dir"]


def model_version(model_dir: Path) -> str:
    """First 12 hex digits of the sha256 of the card: it names the graphs' checksums, so it
    changes whenever the model does."""
    return hashlib.sha256((Path(model_dir) / CARD_NAME).read_bytes()).hexdigest()[:12]
