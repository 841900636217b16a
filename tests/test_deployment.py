"""The shipped deployment files bind to what the README says: loopback, unless given a token."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_compose_publishes_every_port_on_loopback_only() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    published = [(name, str(port)) for name, service in compose["services"].items()
                 for port in service.get("ports", [])]
    assert published
    for name, port in published:
        assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_the_readme_says_to_set_a_token_before_exposing_the_server() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Exposing the server", 1)[1].split("\n## ", 1)[0]
    assert "127.0.0.1" in section and "BOXMASK_API_TOKEN" in section
    assert re.search(r"set a token", section, re.IGNORECASE)
    assert "-p 127.0.0.1:8000:8000" in section
