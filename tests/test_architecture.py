"""The import rules of docs/architecture.md, read from that page and held to the code.

Two views of one rule set:
- static: the page's table of parts and its list of allowed arrows, parsed here, against every
  ``import`` of the repository (inside functions too, read with ``ast``), so an arrow that only
  a rarely taken branch would follow is still caught, and an arrow the page lists but nothing
  follows is a stale line;
- dynamic: the torch-free parts imported in a fresh interpreter with torch made unimportable,
  as on a serving machine.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "boxmask"
ARCHITECTURE = REPO / "docs" / "architecture.md"
HEAVY = ("torch", "torchvision")
# The folders beside the package whose Python is held to the arrows (each is one part).
FOLDERS = ("benchmarks", "scripts", "deploy", "tests")


def _section(title: str) -> str:
    text = ARCHITECTURE.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def _documented_parts() -> dict[str, str]:
    """Part -> its "needs torch" cell, from the table under "The parts" (a folder's name
    without its slash)."""
    parts = {}
    for line in _section("The parts").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            for name in re.findall(r"`([\w/]+)`", cells[0]):
                parts[name.rstrip("/")] = cells[2]
    return parts


PARTS = _documented_parts()
PACKAGE_PARTS = sorted(p for p in PARTS if p not in FOLDERS)
TORCH_FREE = tuple(p for p, torch in PARTS.items() if torch == "no")


def _documented_arrows() -> tuple[dict[str, set[str]], set[str]]:
    """Source part -> the parts it may import, from the list under "Allowed arrows" (notes in
    parentheses left out), and the sources written "──> every part" (every part of the
    package, not all of them used)."""
    block = _section("Allowed arrows").split("```")[1]
    arrows: dict[str, set[str]] = {}
    every_part: set[str] = set()
    for line in block.splitlines():
        if "──>" not in line:
            continue
        source, targets = (side.strip() for side in line.split("──>"))
        while re.search(r"\([^()]*\)", targets):
            targets = re.sub(r"\([^()]*\)", "", targets)
        names = {t.strip() for t in re.split(r",| and ", targets) if t.strip()}
        if "every part" in names:
            every_part.add(source)
            names = (names - {"every part"}) | set(PACKAGE_PARTS)
        arrows[source] = names
    return arrows, every_part


ARROWS, EVERY_PART = _documented_arrows()


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _part(module: str) -> str | None:
    """``boxmask.server.app`` -> ``server``; ``boxmask.cli`` and ``boxmask.__main__`` ->
    ``cli`` (``python -m boxmask`` is the CLI); ``tests.conftest`` -> ``tests``; None for the
    package's own ``__init__`` and for anything outside the repository."""
    parts = module.split(".")
    if parts[0] == "boxmask":
        if len(parts) == 1:
            return None
        return "cli" if parts[1] == "__main__" else parts[1]
    return parts[0] if parts[0] in FOLDERS else None


def _python_files() -> list[Path]:
    return sorted([*PACKAGE.rglob("*.py"), *(f for folder in FOLDERS
                                            for f in (REPO / folder).rglob("*.py"))])


def _imports() -> list[tuple[str | None, str, str]]:
    """``(part, file:line, imported module)`` for every import in the repository's Python."""
    found = []
    for path in _python_files():
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


def test_every_part_of_the_code_is_in_the_table_and_every_row_is_in_the_code() -> None:
    in_code = {p.stem if p.suffix else p.name for p in PACKAGE.iterdir()
               if (p.suffix == ".py" or (p / "__init__.py").is_file())
               and p.name not in ("__init__.py", "__main__.py")}
    in_code |= {f for f in FOLDERS if any((REPO / f).rglob("*.py"))}
    beside = {p.name for p in REPO.iterdir() if p.is_dir() and not p.name.startswith(".")
              and p.name not in ("runs", "data", "build", "dist") and any(p.rglob("*.py"))}
    assert beside - {"boxmask"} <= set(FOLDERS), f"folders with Python not on the page: {beside}"
    assert in_code == set(PARTS), (f"in the code, not in the table: {in_code - set(PARTS)}; "
                                   f"in the table, not in the code: {set(PARTS) - in_code}")


def test_the_arrow_list_names_only_parts_of_the_table() -> None:
    named = set(ARROWS) | {t for targets in ARROWS.values() for t in targets}
    assert named <= set(PARTS), f"not parts: {named - set(PARTS)}"


def test_every_import_across_parts_follows_an_allowed_arrow() -> None:
    bad = [f"{where} ({src}) imports {name}: {src} ──> {_part(name)} is not in "
           "docs/architecture.md's allowed arrows"
           for src, where, name in IMPORTS
           if src and _part(name) and _part(name) != src and _part(name) not in ARROWS.get(src, ())]
    assert not bad, "\n".join(bad)


def test_every_listed_arrow_is_followed_by_some_import() -> None:
    used = {(src, _part(name)) for src, _, name in IMPORTS}
    stale = [f"{src} ──> {target}" for src, targets in ARROWS.items() if src not in EVERY_PART
             for target in sorted(targets) if (src, target) not in used]
    assert not stale, "arrows no import follows (remove them from the page): " + ", ".join(stale)


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


def test_nothing_but_the_cli_the_server_itself_and_tests_import_the_server() -> None:
    # ...and the one benchmark that times the app's layers from inside.
    bad = [f"{where} ({src}) imports {name}" for src, where, name in IMPORTS
           if _part(name) == "server" and src not in ("server", "cli", "tests")
           and where.split(":")[0] != "benchmarks/server_layers.py"]
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
                return [*path, node, nxt]
            if not state.get(nxt):
                found = visit(nxt, [*path, node])
                if found:
                    return found
        state[node] = 2
        return None

    for node in sorted(edges):
        if not state.get(node):
            cycle = visit(node, [])
            assert cycle is None, "package cycle: " + " -> ".join(cycle[cycle.index(cycle[-1]):])


def _contract_names() -> set[str]:
    """Every name ``runtime/contract.py`` gives: the card's file name, the graphs' names, their
    file names per variant, their tensor names and the Triton model names."""
    from boxmask.runtime import contract

    names = {contract.CARD_NAME, *contract.GRAPHS, *contract.TRITON_MODEL_NAMES.values()}
    names |= {contract.graph_file(g, v) for g in contract.GRAPHS
              for v in (None, "fp16", "int8", "trt")}
    for value in vars(contract).values():
        if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
            names |= set(value)
    return names | {contract.ENCODER_INPUT, contract.PIXEL_MAP, contract.QUALITY}


def _string_literals(path: Path) -> list[tuple[int, str]]:
    """``(line, value)`` of every string constant of ``path`` but its docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                       ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings]


# Plain words the runtime's own API uses too (`Predictor.predict(boxes, labels)`, `Prediction.
# scores`, an `image` argument): in the runtime they are not the graphs' names.
API_WORDS = {"image", "boxes", "labels", "scores", "quality"}
# The model's detection dict has torchvision's keys, which the detector graph unpacks.
MODEL_KEYS = {("boxmask/export/graphs.py", key) for key in ("boxes", "labels", "scores")}


@pytest.mark.parametrize("part", ["export", "runtime"])
def test_export_and_the_runtime_spell_no_name_of_the_contract_themselves(part: str) -> None:
    """docs/architecture.md, "Facts written once": a name both sides must agree on is written in
    runtime/contract.py and nowhere else."""
    names = _contract_names() - (API_WORDS if part == "runtime" else set())
    spelled = [f"{path.relative_to(REPO)}:{line}: {value!r}"
               for path in sorted((PACKAGE / part).rglob("*.py")) if path.name != "contract.py"
               for line, value in _string_literals(path)
               if value in names and (str(path.relative_to(REPO)), value) not in MODEL_KEYS]
    assert not spelled, "\n".join(spelled)


# What points outside the repository: notes and paths of the machine it was written on, and the
# issue tracker (its numbers mean nothing to a reader of the code).
OUTSIDE = re.compile(r"\.\./shared|/work/|design\.md|findings\.md|\bissues? #?\d+", re.IGNORECASE)


def test_no_docstring_or_comment_of_the_package_points_outside_the_repository() -> None:
    outside = [f"{p.relative_to(REPO)}:{i}: {line.strip()}" for p in PACKAGE.rglob("*.py")
               for i, line in enumerate(p.read_text().splitlines(), 1) if OUTSIDE.search(line)]
    assert not outside, "\n".join(outside)


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
        import boxmask.runtime.contract, boxmask.runtime.prompted_masks
        import boxmask.config, boxmask.files, boxmask.journal
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
