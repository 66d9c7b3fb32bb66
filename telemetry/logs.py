"""Structured logs: LOG_FORMAT=json gives one JSON object per line.

Each object has ``timestamp`` (UTC, ISO 8601 with ms), ``level``, ``logger``,
``process``, ``message``, and where there is one ``connection`` (the WebSocket it is
about) and ``task`` (the Celery task id). Both come from context variables, so every
line logged while a connection or a task runs carries them without being passed.

Every line a process writes goes through this formatter, or nothing is promised: so
``configure`` (Django's LOGGING_CONFIG) also routes warnings and uncaught exceptions
(main thread, other threads, "exception ignored" ones) into the log, the configuration
takes over the loggers Django and uvicorn give handlers of their own, and the launcher
(tickerproject/serve.py) hands the same configuration to uvicorn's supervisor, daphne's
access log and Celery's own output.
"""

import contextvars
import io
import json
import logging
import logging.config
import os
import re
import sys
import threading
from datetime import UTC, datetime

# Set by streaming.consumer for the life of a connection, by the Celery wiring per task.
connection_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "connection_id", default=None
)
task_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("task_id", default=None)

logger = logging.getLogger(__name__)

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
# uvicorn's copy of the message with terminal colour codes: the message says it already.
_DROPPED_EXTRAS = {"color_message"}


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
            "message": _message(record),
        }
        conn = getattr(record, "connection", None) or connection_id.get()
        if conn:
            out["connection"] = conn
        task = getattr(record, "task", None) or task_id.get()
        if task:
            out["task"] = task
        for key, value in vars(record).items():
            if key in _RESERVED or key in _DROPPED_EXTRAS or key in ("connection", "task"):
                continue
            if key not in out:
                plain = isinstance(value, (str, int, float, bool, type(None)))
                out[key] = value if plain else repr(value)
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False)


def _message(record: logging.LogRecord) -> str:
    """The record's message; a call whose arguments do not fit its format still gives one
    line (logging would print a plain-text traceback of the mistake instead)."""
    try:
        return record.getMessage()
    except Exception as exc:
        return f"{record.msg!r} % {record.args!r} failed: {exc!r}"


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
    """Django's LOGGING for LOG_FORMAT ``fmt`` ("plain" or "json"), plain data only: the
    launcher writes it as JSON for uvicorn's --log-config (tickerproject/serve.py)."""
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
            "context": {"()": f"{__name__}.ContextFilter"},
            "uvicorn_ws": {"()": f"{__name__}.DropWebSocketChatter"},
        },
        "formatters": {
            "plain": {
                "()": f"{__name__}.PlainFormatter",
                "format": "%(asctime)s %(levelname)s %(name)s: %(message)s",
            },
            "json": {"()": f"{__name__}.JsonFormatter"},
        },
        "handlers": {"console": handler},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # Django's defaults (applied first) give "django" a plain console handler of
            # its own (DEBUG only) and "django.server" another: the 404 and 5xx lines of
            # django.request came out twice, once as plain text. No handlers here, so
            # both log through the root's alone, at its level.
            "django": {"handlers": [], "level": "NOTSET", "propagate": True},
            "django.server": {"handlers": [], "level": "NOTSET", "propagate": True},
            "daphne": {"level": "WARNING"},
            # One line per HTTP response, as uvicorn.access (AccessLog below).
            "daphne.access": {"level": "INFO"},
            "django.channels.server": {"level": "WARNING"},
            # uvicorn configures these before Django starts; take them over so they
            # share the format, and drop the per-WebSocket lines.
            "uvicorn": {"handlers": ["console"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO", "filters": ["uvicorn_ws"]},
            "uvicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
        },
    }


def configure(config: dict) -> None:
    """Django's LOGGING_CONFIG (settings.py): ``config`` applied, and what would otherwise
    print to stderr past it (warnings, uncaught exceptions) sent through it too."""
    logging.config.dictConfig(config)
    logging.captureWarnings(True)
    # Only where nobody (a test runner, a debugger) has put a hook of their own.
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _log_uncaught
    if threading.excepthook is threading.__excepthook__:
        threading.excepthook = _log_uncaught_in_thread
    if sys.unraisablehook is sys.__unraisablehook__:
        sys.unraisablehook = _log_unraisable


def _log_uncaught(exc_type, exc, tb) -> None:
    """Called by Python for an exception that ends the main thread."""
    logger.critical("uncaught %s", exc_type.__name__, exc_info=(exc_type, exc, tb))


def _log_uncaught_in_thread(args) -> None:
    """Called by threading for an exception that ends another thread."""
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    exc_info = (args.exc_type, args.exc_value, args.exc_traceback)
    logger.critical("uncaught %s in thread %s", args.exc_type.__name__, name, exc_info=exc_info)


def _log_unraisable(unraisable) -> None:
    """Called by Python for an exception it can only ignore (in __del__, say)."""
    exc_info = (unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback)
    logger.error(
        "%s: %r", unraisable.err_msg or "Exception ignored in", unraisable.object,
        exc_info=exc_info,
    )  # fmt: skip


def write_now(name: str, message: str, level: int = logging.INFO) -> None:
    """One record for logger ``name``, formatted by the root's handler and written with a
    single os.write to its stream, holding no lock and touching no buffer: safe from a
    signal handler, which may have interrupted that very handler mid-write."""
    handler = next((h for h in logging.getLogger().handlers if hasattr(h, "stream")), None)
    if handler is None:
        return
    record = logging.getLogger(name).makeRecord(name, level, __file__, 0, message, (), None)
    handler.filter(record)  # the context ids
    line = handler.format(record) + "\n"
    try:
        os.write(handler.stream.fileno(), line.encode("utf-8", "backslashreplace"))
    except (OSError, ValueError, AttributeError):
        pass  # a closed or unusual stream: a lost line, never a failed shutdown


class AccessLog:
    """daphne's action logger: one ``daphne.access`` record per HTTP response, in place of
    its own access log, which prints plain lines to stdout. Its WebSocket actions are not
    logged: ours (streaming.consumer) say more, as for uvicorn."""

    def __init__(self) -> None:
        self.logger = logging.getLogger("daphne.access")

    def __call__(self, protocol: str, action: str, details: dict) -> None:
        if protocol == "http" and action == "complete":
            self.logger.info(
                '%s - "%s %s" %s %s', details.get("client"), details.get("method"),
                details.get("path"), details.get("status"), details.get("size"),
            )  # fmt: skip


class LogWriter(io.TextIOBase):
    """A text stream whose every line is an INFO record of the logger ``name``: for output
    meant for a terminal (management commands' stdout in the release process)."""

    def __init__(self, name: str) -> None:
        self.logger = logging.getLogger(name)
        self.pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            if line.strip():
                self.logger.info(line.rstrip())
        return len(text)

    def flush(self) -> None:
        if self.pending.strip():
            self.logger.info(self.pending.rstrip())
        self.pending = ""
