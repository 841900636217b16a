"""benchmarks/ as a newcomer meets it: experiments as data (configs/ablation/), scripts that share
benchmarks/harness.py by a plain import, tests that never import a benchmark script as a library,
and an index of every result folder."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from tests.benchmarks.ablation import VARIANT_FILES, variant_config

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"
SCRIPTS = {p.stem for p in BENCHMARKS.glob("*.py")}
# sys.path edits a test may make: running a script as ``python script.py`` would (load_script),
# and Triton's Python backend, which starts without the test's environment.
IMPORT_PATH_EDITS = {"tests/scripts.py", "tests/runtime/triton_python_model.py"}


def _trees(folder: Path):
    for path in sorted(folder.rglob("*.py")):
        yield path.relative_to(REPO).as_posix(), ast.parse(path.read_text(), str(path))


def _edits_import_path(tree: ast.AST) -> bool:
    return any(isinstance(node, ast.Attribute) and node.attr == "path"
               and isinstance(node.value, ast.Name) and node.value.id == "sys"
               for node in ast.walk(tree))


def _imported(tree: ast.AST) -> list[tuple[str, list[str]]]:
    """(top-level module, names) of every absolute import, inside functions too."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name.split(".")[0], []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module.split(".")[0], [alias.name for alias in node.names]))
    return out


def test_every_ablation_variant_loads_with_the_config_loader():
    files = sorted(VARIANT_FILES.glob("*.yaml"))
    assert len(files) >= 57
    for path in files:
        spec = yaml.safe_load(path.read_text())
        assert set(spec) <= {"base", "dataset", "overrides", "init_from_variant"}, path.name
        assert {"base", "dataset", "overrides"} <= set(spec), path.name
        cfg = variant_config(path, ["train.output_dir=x"])
        # A variant that names its data names its dataset's folder.
        assert cfg.data.train_images.parts[-3] == f"{spec['dataset']}128" or not any(
            o.startswith("data.train_images=") for o in spec["overrides"]), path.name
        if "init_from_variant" in spec:
            assert (VARIANT_FILES / f"{spec['init_from_variant']}.yaml").is_file(), path.name


def test_benchmark_scripts_import_their_siblings_plainly():
    """No sys.path edit (``python benchmarks/X.py`` puts the folder on the path) and no private
    name from a sibling: what scripts share is public, most of it in harness.py."""
    for name, tree in _trees(BENCHMARKS):
        assert not _edits_import_path(tree), name
        for module, names in _imported(tree):
            if module in SCRIPTS:
                assert not [n for n in names if n.startswith("_")], (name, module)


def test_tests_do_not_import_benchmark_scripts():
    """A test of a benchmark script loads that script (tests/scripts.py) or runs it; no test
    imports one as a library or puts benchmarks/ on the import path."""
    for name, tree in _trees(REPO / "tests"):
        assert not [m for m, _ in _imported(tree) if m in SCRIPTS], name
        assert name in IMPORT_PATH_EDITS or not _edits_import_path(tree), name


def test_every_result_folder_is_in_the_index():
    index = (BENCHMARKS / "results" / "README.md").read_text()
    for entry in sorted((BENCHMARKS / "results").iterdir()):
        if entry.name != "README.md":
            assert f"`{entry.name}" in index, entry.name
