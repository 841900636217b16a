"""The HTTP service: FastAPI over ``boxmask.runtime`` (no torch). Start it with ``boxmask serve``.

Only the CLI imports it (docs/architecture.md).

    from boxmask.server import create_app, ServerSettings
    app = create_app(ServerSettings(model_dir="exported/"))
"""

from boxmask.server.app import create_app
from boxmask.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]
