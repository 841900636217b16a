"""Structured logs: one JSON object per line, carrying the id of the request being served.

The request id lives in a context variable, so a log call anywhere below a request (a router,
the runtime in a worker thread started with the request's context) is tagged with it.
"""

from __future__ import annotations

import json
import logging
import logging.config
import time
from contextvars import ContextVar
from typing import Any

request_id_var: ContextVar[str | None] = ContextVar("boxmask_request_id", default=None)

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is logged.
_SKIP = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "request_id", "color_message"}  # color_message: uvicorn's ANSI copy


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "request_id", **extra}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _SKIP and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def logging_config(level: str = "info", json_lines: bool = True) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for boxmask's and uvicorn's loggers, to stderr.

    Handed to uvicorn as ``log_config``, so each worker process applies it too. uvicorn's own
    access log is left off by ``boxmask serve``: ours has the request id, route and latency.
    """
    formatter = ({"()": f"{__name__}.JsonFormatter"} if json_lines
                 else {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"})
    handler = {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
    loggers = {name: {"handlers": ["default"], "level": level.upper(), "propagate": False}
               for name in ("boxmask", "uvicorn", "uvicorn.error", "uvicorn.access")}
    return {"version": 1, "disable_existing_loggers": False, "formatters": {"default": formatter},
            "handlers": {"default": handler}, "loggers": loggers}


def configure_logging(level: str = "info", json_lines: bool = True) -> None:
    logging.config.dictConfig(logging_config(level, json_lines))
