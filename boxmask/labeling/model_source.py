"""`--model NAME|DIR`: an exported model directory, or a model bundled with the package."""

from __future__ import annotations

import hashlib
from pathlib import Path

from boxmask.config import ConfigError

# The demo model the package ships (boxmask/assets/models/<name>/), used when --model is not given.
DEFAULT_MODEL = "synthetic-demo"
BUNDLED_MODELS_DIR = Path(__file__).resolve().parent.parent / "assets" / "models"


def bundled_models() -> list[str]:
    if not BUNDLED_MODELS_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_MODELS_DIR.iterdir() if (p / "model.json").is_file())


def resolve_model_dir(model: str | Path | None) -> Path:
    """The directory of `model`: a path to an exported model directory, or a bundled name."""
    spec = str(model) if model is not None else DEFAULT_MODEL
    path = Path(spec).expanduser()
    if (path / "model.json").is_file():
        return path
    bundled = BUNDLED_MODELS_DIR / spec
    if "/" not in spec and (bundled / "model.json").is_file():
        return bundled
    names = bundled_models()
    raise ConfigError(
        f"model {spec!r} is neither an exported model directory (a folder with model.json) nor a "
        f"bundled model; bundled models: {', '.join(names) if names else 'none installed'}")


def model_version(model_dir: Path) -> str:
    """First 12 hex digits of the sha256 of model.json: it names the graphs' checksums, so it
    changes whenever the model does."""
    return hashlib.sha256((Path(model_dir) / "model.json").read_bytes()).hexdigest()[:12]
