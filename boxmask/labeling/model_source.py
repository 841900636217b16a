"""`--model NAME|DIR`: an exported model directory, or a model bundled with the package.

Bundled models (`boxmask.runtime.contract.bundled_models`) are the sub-folders of
boxmask/assets/models/ holding a card; a name matches a sub-folder's name or its card's
``name`` (as the server lists them). Without ``--model``, the first bundled model by card name
is used, as the server's default.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from boxmask.config import ConfigError
from boxmask.runtime.contract import CARD_NAME, HOW_TO_GET_A_MODEL, bundled_models, is_model_dir


def resolve_model_dir(model: str | Path | None) -> Path:
    """The directory of `model`: a path to an exported model directory, or a bundled name."""
    bundled = bundled_models()
    if model is None:
        if not bundled:
            raise ConfigError(f"no model is bundled with this installation: {HOW_TO_GET_A_MODEL}")
        return next(iter(bundled.values()))
    spec = str(model)
    path = Path(spec).expanduser()
    if is_model_dir(path):
        return path
    if spec in bundled:
        return bundled[spec]
    by_folder = {d.name: d for d in bundled.values()}
    if spec in by_folder:
        return by_folder[spec]
    raise ConfigError(
        f"model {spec!r} is neither an exported model directory (a folder with {CARD_NAME}) nor a "
        f"bundled model (bundled: {', '.join(bundled) if bundled else 'none'}); "
        f"{HOW_TO_GET_A_MODEL}")


def model_version(model_dir: Path) -> str:
    """First 12 hex digits of the sha256 of the card: it names the graphs' checksums, so it
    changes whenever the model does."""
    return hashlib.sha256((Path(model_dir) / CARD_NAME).read_bytes()).hexdigest()[:12]
