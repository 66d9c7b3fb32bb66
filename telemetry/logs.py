"""Structured logs: LOG_FORMAT=json gives one JSON object per line.

Each object has ``timestamp`` (UTC, ISO 8601 with ms), ``level``, ``logger``,
``process``, ``message``, and where there is one ``connection`` (the WebSocket it is
about) and ``task`` (the Celery task id). Both come from context variables, so every
line logged while a connection or a task runs carries them without being passed.
"""

import contextvars
import json
import logging
import re
from datetime import UTC, datetime

# Set by streaming.consumer for the life of a connection, by the Celery wiring per task.
connection_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "connection_id", default=None
)
task_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("task_id", default=None)

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class ContextFilter(logging.Filter):
    """Adds ``connection`` and ``task`` to each record (the plain format shows them too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.connection = connection_id.get()
        record.task = task_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "timestamp": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "message": record.getMessage(),
        }
        conn = getattr(record, "connection", None) or connection_id.get()
        if conn:
            out["connection"] = conn
        task = getattr(record, "task", None) or task_id.get()
        if task:
            out["task"] = task
        for key, value in vars(record).items():
            if key not in _RESERVED and key not in out and key not in ("connection", "task"):
                plain = isinstance(value, (str, int, float, bool, type(None)))
                out[key] = value if plain else repr(value)
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False)


class PlainFormatter(logging.Formatter):
    """The default: a readable line, with the connection or task id when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        tags = [f"{k}={v}" for k in ("connection", "task") if (v := getattr(record, k, None))]
        return f"{line} [{' '.join(tags)}]" if tags else line


# uvicorn logs three INFO lines per WebSocket to "uvicorn.error"; ours (connect, close
# with its code, in streaming.consumer) say more, so these are dropped.
_UVICORN_WS = re.compile(r'"WebSocket |^connection (open|closed)$')


class DropWebSocketChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        msg = record.msg if isinstance(record.msg, str) else ""
        return not _UVICORN_WS.search(msg)


def logging_config(*, fmt: str, level: str) -> dict:
    """Django's LOGGING for LOG_FORMAT ``fmt`` ("plain" or "json")."""
    if fmt not in ("plain", "json"):
        raise ValueError(f"LOG_FORMAT={fmt!r}: use 'plain' or 'json'")
    handler = {
        "class": "logging.StreamHandler",
        "formatter": fmt,
        "filters": ["context"],
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "context": {"()": ContextFilter},
            "uvicorn_ws": {"()": DropWebSocketChatter},
        },
        "formatters": {
            "plain": {
                "()": PlainFormatter,
                "format": "%(asctime)s %(levelname)s %(name)s: %(message)s",
            },
            "json": {"()": JsonFormatter},
        },
        "handlers": {"console": handler},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "daphne": {"level": "WARNING"},
            "django.channels.server": {"level": "WARNING"},
            # uvicorn configures these before Django starts; take them over so they
            # share the format, and drop the per-WebSocket lines.
            "uvicorn": {"handlers": ["console"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO", "filters": ["uvicorn_ws"]},
            "uvicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
        },
    }
