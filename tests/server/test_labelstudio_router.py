"""`routers/labelstudio.py` is routes only: the backends it serves are the app's
(`server/labelstudio_backends.py`), the JSON bodies are read by `payloads.json_object`."""

from __future__ import annotations

import ast
import inspect

from boxmask.server import labelstudio_backends, payloads
from boxmask.server.routers import labelstudio, labelstudio_training


def test_the_label_studio_router_defines_routes_and_nothing_else() -> None:
    tree = ast.parse(inspect.getsource(labelstudio))
    endpoints = {route.endpoint.__name__ for route in labelstudio.router.routes}  # type: ignore[attr-defined]
    defined = [node for node in tree.body
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    assert defined and all(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                           and node.name in endpoints for node in defined), \
        [node.name for node in defined if node.name not in endpoints]


def test_label_studio_bodies_are_read_by_one_dependency() -> None:
    for module in (labelstudio, labelstudio_training, labelstudio_backends):
        source = inspect.getsource(module)
        assert "json.loads" not in source and "request.body()" not in source, module.__name__
    assert "json_object" in inspect.getsource(labelstudio_training)
    assert payloads.json_object.__doc__
