"""The one error type of `boxmask export`, shared by every export step."""

from __future__ import annotations


class ExportError(RuntimeError):
    """An export that cannot be done as asked; the message says why and what to do."""
