"""Load a benchmark or helper script (not a package) as a module, for tests of its functions."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_script(path: Path, name: str) -> ModuleType:
    """Execute ``path`` as module ``name``, registered in ``sys.modules`` first (dataclasses
    resolve their annotations through it); the caller pops it when done.

    As ``python path`` would, the script's folder comes first on the import path while the
    script runs, so its imports of sibling modules (benchmarks/harness.py) resolve; it is
    removed again afterwards."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    return module
