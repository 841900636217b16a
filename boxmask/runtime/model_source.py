"""Naming a model on the command line: one resolver for every command that takes one.

A model is named by a folder (an exported model directory, the one ``boxmask export`` writes,
or for the server a folder of them) or by the name of a model bundled with the package
(``synthetic-demo``: a sub-folder of boxmask/assets/models/, by its folder name or its card's
``name``, as the server lists it). ``boxmask label --model``, ``boxmask serve --model-dir``,
``boxmask labelstudio config --model-dir`` and ``boxmask cvat ... --model-dir`` all resolve
through here, so one spelling works everywhere and every failure reads the same: one line that
says what was found and what to run (a checkpoint where a model was expected names the
``boxmask export`` command that turns it into one).
"""

from __future__ import annotations

from pathlib import Path

from boxmask.runtime.contract import (
    CARD_NAME,
    HOW_TO_GET_A_MODEL,
    bundled_models,
    find_model_dirs,
    is_model_dir,
)
from boxmask.runtime.errors import ModelNotFound

#: Files `boxmask train` and `boxmask import` write: a model, but not yet an exported one.
CHECKPOINT_SUFFIXES = (".pt", ".pth")


def resolve_model_dir(model: str | Path | None) -> Path:
    """The exported model directory ``model`` names: a folder holding a card, or a bundled
    model's name; None: the first bundled model by card name (the server's default).

    Raises `ModelNotFound` (one line: what was found, what to do).
    """
    bundled = bundled_models()
    if model is None:
        if not bundled:
            raise ModelNotFound(f"no model is bundled with this installation: {HOW_TO_GET_A_MODEL}")
        return next(iter(bundled.values()))
    path = Path(str(model)).expanduser()
    if is_model_dir(path):
        return path
    found = _bundled(str(model), bundled)
    if found is not None:
        return found
    if path.is_dir():
        inside = find_model_dirs(path)
        if inside:
            raise ModelNotFound(
                f"{path} holds {len(inside)} exported models ({', '.join(p.name for p in inside)}),"
                f" not one: pass one of them, e.g. {inside[0]}")
    raise ModelNotFound(_not_a_model(str(model), path, bundled))


def resolve_model_root(model: str | Path | None) -> Path:
    """What ``boxmask serve --model-dir`` serves: an exported model directory, a folder of
    them, or a bundled model's name; None: the folder of bundled models. It must hold at least
    one model: a server started on an empty folder would only answer 503.

    Raises `ModelNotFound` (one line: what was found, what to do).
    """
    bundled = bundled_models()
    if model is None:
        if not bundled:
            raise ModelNotFound(f"no model is bundled with this installation: {HOW_TO_GET_A_MODEL}")
        return next(iter(bundled.values())).parent
    path = Path(str(model)).expanduser()
    if find_model_dirs(path):
        return path
    found = _bundled(str(model), bundled)
    if found is not None:
        return found
    raise ModelNotFound(_not_a_model(str(model), path, bundled))


def _bundled(name: str, bundled: dict[str, Path]) -> Path | None:
    if name in bundled:
        return bundled[name]
    return {d.name: d for d in bundled.values()}.get(name)


def _checkpoints(path: Path) -> list[Path]:
    if path.is_file():
        return [path] if path.suffix in CHECKPOINT_SUFFIXES else []
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in CHECKPOINT_SUFFIXES and p.is_file())
    return []


def _not_a_model(spec: str, path: Path, bundled: dict[str, Path]) -> str:
    """Why ``spec`` names no model, and the one thing to do about it."""
    checkpoints = _checkpoints(path)
    if checkpoints:
        ckpt = next((p for p in checkpoints if p.name == "checkpoint_last.pt"), checkpoints[0])
        where = "is a checkpoint" if path.is_file() else f"holds a checkpoint ({ckpt.name})"
        return (f"{spec} {where}, not an exported model: export it first with "
                f"`boxmask export {ckpt} --out MODEL_DIR` and pass MODEL_DIR")
    names = ", ".join(bundled) if bundled else "none"
    if path.is_dir():
        return (f"{spec} holds no exported model (no {CARD_NAME} in it or its sub-folders); "
                f"bundled models: {names}; {HOW_TO_GET_A_MODEL}")
    if path.exists():
        return f"{spec} is a file, not an exported model directory; bundled models: {names}"
    return (f"model {spec!r} is neither a folder nor a bundled model (bundled: {names}); "
            f"{HOW_TO_GET_A_MODEL}")
