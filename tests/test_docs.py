"""What the docs show can be used as shown: YAML that parses to what it looks like, and the
Label Studio token named precisely."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FUNCTIONS = sorted((REPO / "deploy" / "cvat").glob("*/function.yaml"))


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys of a mapping without a word; this refuses them."""

    def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (lines {seen[key]} and "
                    f"{key_node.start_mark.line + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load_unique(text: str) -> object:
    return yaml.load(text, Loader=_UniqueKeyLoader)


def yaml_blocks(path: Path) -> list[str]:
    return re.findall(r"^```ya?ml\n(.*?)^```", path.read_text(), flags=re.DOTALL | re.MULTILINE)


def test_the_duplicate_key_check_catches_two_spec_keys() -> None:
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key 'spec'"):
        load_unique("metadata:\n  name: x\nspec: |\n  []\nspec:\n  runtime: python\n")


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_yaml_block_in_the_docs_parses_without_duplicate_keys(path: Path) -> None:
    for block in yaml_blocks(path):
        load_unique(block)


@pytest.mark.parametrize("path", FUNCTIONS, ids=lambda p: p.parent.name)
def test_cvat_function_yaml_has_no_duplicate_keys(path: Path) -> None:
    doc = load_unique(path.read_text())
    assert "spec" in doc["metadata"]["annotations"] and "runtime" in doc["spec"]


def test_the_readme_says_which_spec_key_of_function_yaml_takes_the_labels() -> None:
    readme = (REPO / "README.md").read_text()
    cvat = readme.split("\n## CVAT", 1)[1]
    assert "paste into function.yaml's `spec`" not in cvat  # function.yaml has two `spec` keys
    assert "metadata.annotations.spec" in cvat
    shown = [load_unique(b) for b in yaml_blocks(REPO / "README.md") if "annotations" in b]
    assert shown and all(isinstance(d["metadata"]["annotations"]["spec"], str) for d in shown)


def test_the_label_studio_docs_say_which_token_and_where_to_find_it() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Label Studio", 1)[1].split("\n## ", 1)[0]
    for said in ("LABEL_STUDIO_API_KEY", "legacy token", "Account & Settings", "Legacy Token",
                 "personal access token", "API Tokens Settings", "docs/labelstudio.md"):
        assert said in section, said
    page = (REPO / "docs" / "labelstudio.md").read_text()
    for said in ("Authorization: Token <token>", "Authorization: Bearer", "/api/token/refresh/",
                 "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN", "/user/account/legacy-token",
                 "/api/current-user/token", "/api/jwt/settings", "1.23.2",
                 "tests/integrations/test_labelstudio_tokens.py"):
        assert said in page, said
