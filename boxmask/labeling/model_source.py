"""`--model NAME|DIR`: an exported model directory, or a model bundled with the package.

Bundled models are the sub-folders of boxmask/assets/models/ holding a model.json; a name
matches a sub-folder's name or its card's ``name`` (as the server lists them). Without
``--model``, the first bundled model by card name is used, as the server's default.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from boxmask.config import ConfigError

BUNDLED_MODELS_DIR = Path(__file__).resolve().parent.parent / "assets" / "models"
HOW_TO_GET_A_MODEL = ("train and export one (`boxmask train CONFIG`, then `boxmask export "
                      "CHECKPOINT --out DIR`) and pass --model DIR")


def bundled_models() -> dict[str, Path]:
    """Card name -> directory of each bundled model, sorted by name."""
    if not BUNDLED_MODELS_DIR.is_dir():
        return {}
    found = {}
    for d in sorted(BUNDLED_MODELS_DIR.iterdir()):
        card = d / "model.json"
        if card.is_file():
            try:
                name = json.loads(card.read_text(encoding="utf-8"))["name"]
            except (ValueError, KeyError, TypeError):
                name = d.name
            found[str(name)] = d
    return dict(sorted(found.items()))


def resolve_model_dir(model: str | Path | None) -> Path:
    """The directory of `model`: a path to an exported model directory, or a bundled name."""
    bundled = bundled_models()
    if model is None:
        if not bundled:
            raise ConfigError(f"no model is bundled with this installation: {HOW_TO_GET_A_MODEL}")
        return next(iter(bundled.values()))
    spec = str(model)
    path = Path(spec).expanduser()
    if (path / "model.json").is_file():
        return path
    if spec in bundled:
        return bundled[spec]
    by_folder = {d.name: d for d in bundled.values()}
    if spec in by_folder:
        return by_folder[spec]
    raise ConfigError(
        f"model {spec!r} is neither an exported model directory (a folder with model.json) nor a "
        f"bundled model (bundled: {', '.join(bundled) if bundled else 'none'}); "
        f"{HOW_TO_GET_A_MODEL}")


def model_version(model_dir: Path) -> str:
    """First 12 hex digits of the sha256 of model.json: it names the graphs' checksums, so it
    changes whenever the model does."""
    return hashlib.sha256((Path(model_dir) / "model.json").read_bytes()).hexdigest()[:12]
