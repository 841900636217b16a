"""The recipe ablation's variants, configs/ablation/<name>.yaml, read as
benchmarks/recipe_ablation.py reads them (configs/ablation/README.md), for tests that compare
other configs with them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from boxmask.config import BoxMaskConfig, load_config

VARIANT_FILES = Path(__file__).resolve().parents[2] / "configs" / "ablation"


def variant_config(path: Path, extra: Sequence[str] = ()) -> BoxMaskConfig:
    """The training config of the variant in ``path``: its base with its overrides, then ``extra``."""
    spec = yaml.safe_load(path.read_text())
    return load_config(path.parent / spec["base"], [*spec["overrides"], *extra])
