"""The package import rules of docs/architecture.md, read from the code and checked by importing.

Two views of one rule set:
- static: every ``import`` in ``boxmask/`` (inside functions too) read with ``ast``, so an
  arrow that only a rarely taken branch would follow is still caught;
- dynamic: the torch-free parts imported in a fresh interpreter with torch made unimportable,
  as on a serving machine.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "boxmask"
TORCH_FREE = ("server", "runtime", "labeling", "integrations")
HEAVY = ("torch", "torchvision")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _part(module: str) -> str | None:
    """``boxmask.server.app`` -> ``server``; ``boxmask.cli`` -> ``cli``; None outside boxmask."""
    parts = module.split(".")
    return parts[1] if parts[0] == "boxmask" and len(parts) > 1 else None


def _imports() -> list[tuple[str, str, str]]:
    """``(part, file:line, imported module)`` for every import in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".")
                    base = base[: len(base) - node.level + (1 if is_package else 0)]
                    names = [".".join(base + ([node.module] if node.module else []))]
                else:
                    names = [node.module] if node.module else []
            else:
                continue
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            found += [(_part(module), where, name) for name in names]
    return found


IMPORTS = _imports()


@pytest.mark.parametrize("part", TORCH_FREE)
def test_serving_parts_never_import_torch_the_model_or_training(part: str) -> None:
    bad = [f"{where} imports {name}" for src, where, name in IMPORTS if src == part
           and (name.split(".")[0] in HEAVY or _part(name) in ("model", "training"))]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("part", ["export", "evaluation"])
def test_export_and_evaluation_load_checkpoints_through_the_model_not_training(part: str) -> None:
    bad = [f"{where} imports {name}" for src, where, name in IMPORTS
           if src == part and _part(name) == "training"]
    assert not bad, "\n".join(bad)


def test_nothing_but_the_cli_and_the_server_itself_imports_the_server() -> None:
    bad = [f"{where} ({src}) imports {name}" for src, where, name in IMPORTS
           if _part(name) == "server" and src not in ("server", "cli")]
    assert not bad, "\n".join(bad)


def test_no_import_cycle_between_parts() -> None:
    edges: dict[str, set[str]] = defaultdict(set)
    for src, _, name in IMPORTS:
        target = _part(name)
        if src and target and src != target and src != "cli":
            edges[src].add(target)
    # Depth-first search for a back edge; the cycle is reported as a path.
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if not state.get(nxt):
                found = visit(nxt, path + [node])
                if found:
                    return found
        state[node] = 2
        return None

    for node in sorted(edges):
        if not state.get(node):
            cycle = visit(node, [])
            assert cycle is None, "package cycle: " + " -> ".join(cycle[cycle.index(cycle[-1]):])


def test_the_rules_are_written_down_where_the_docstrings_point() -> None:
    doc = (REPO / "docs" / "architecture.md").read_text()
    for part in (*TORCH_FREE, "model", "training", "export", "evaluation", "data", "cli"):
        assert f"`{part}" in doc, part
    # Docstrings point into the repository, not to design notes that are not in it.
    outside = [str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py")
               if "design.md" in p.read_text() or "findings.md" in p.read_text()]
    assert not outside, outside


def test_serving_labeling_and_integrations_import_with_torch_unimportable() -> None:
    script = textwrap.dedent(
        """
        import sys

        class NoTorch:
            # A finder, not `sys.modules["torch"] = None`: SciPy (under Label Studio's SDK)
            # looks torch up in sys.modules and would trip over a None entry.
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "torchvision"):
                    raise ImportError(f"{name} is blocked in this test")
                return None

        sys.meta_path.insert(0, NoTorch())
        import boxmask.server.app, boxmask.server.routers.labelstudio
        import boxmask.labeling.job, boxmask.labeling.engines
        import boxmask.integrations.labelstudio.backend
        import boxmask.integrations.cvat.boxes_to_masks, boxmask.integrations.cvat.serverless
        import boxmask.integrations.cvat.auto_annotation
        import boxmask.runtime.contract, boxmask.journal
        app = boxmask.server.app.create_app
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
        loaded += sorted(m for m in sys.modules if m.startswith(("boxmask.model", "boxmask.training")))
        assert not loaded, loaded
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], check=False, cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
