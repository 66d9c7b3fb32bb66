"""The one launcher: ``python -m tickerproject.serve [web|worker|beat|release]`` (the Procfile).

The Procfile names these three commands, and everything that starts ticker runs them from
there: ``make run`` (tickerproject/stack.py), the tests (tests/realstack.py), the Docker
image and docker-compose.yml (tests/test_compose.py checks that its commands are the
Procfile's).

- ``web`` (the default): runs uvicorn or daphne in this process, as
  ASGI_SERVER names, bound to HOST:PORT, with WEB_CONCURRENCY processes where the server
  supports it (uvicorn).
- ``worker``: runs a Celery worker in this process (threads pool, WORKER_CONCURRENCY
  threads, node name ``$WORKER_NAME@<host>``, ``worker-<pid>`` unless set). A worker that
  stops on an "Unrecoverable error" of Celery's, not on a signal, after it had run for
  RESTART_AFTER_SECONDS, is started again in a fresh image of this process (same pid).
- ``beat``: runs Celery beat in this process, its schedule file in TICKER_VAR_DIR (the
  system's temporary directory unless set), or at CELERY_BEAT_SCHEDULE.
- ``release``: what runs once before the others start (Heroku's ``release`` process type;
  compose's ``migrate`` service): applies migrations and seeds the default symbols, then
  exits.

It loads the Django settings first, so a misconfiguration (no SECRET_KEY with DEBUG
off, say) stops it before any server starts, and it hands the server the one frame
limit, settings.WS_MAX_MESSAGE_BYTES: uvicorn and daphne refuse a bigger frame or
message with close 1009 from its header, before its payload is read. A server that cannot
do that is not offered: granian was removed for it (README, "Frame size"). It hands both
the keepalive too (WS_PING_INTERVAL, WS_PING_TIMEOUT). The request-body limit
(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) is an ASGI middleware (tickerproject/bodylimit.py),
which uvicorn reaches before it reads a body; daphne, which reads a body before the
application, is given requests that refuse one themselves (tickerproject/daphne_body.py).

Logging is set up before anything else (LOG_FORMAT, LOG_LEVEL), and every server and
Celery is handed the same configuration, so with LOG_FORMAT=json every line of every
process is one JSON object (docs/operations.md, "Logs"): uvicorn through --log-config,
daphne's access log as records, Celery's banners off (--quiet).
"""

import hashlib
import json
import logging
import os
import sys
import tempfile
import time

from telemetry import logs
from tickerproject.env import env_int, env_str, load_env_file

logger = logging.getLogger(__name__)

APP = "tickerproject.asgi:application"
WS_PROTOCOL = "tickerproject.uvicorn_ws:PacedWebSocketsProtocol"
# uvicorn's own, which ours subclasses: served when ours does not know the installed releases.
FALLBACK_WS_PROTOCOL = "websockets-sansio"
# Only servers that refuse an over-size frame from its header. Granian was offered too
# until issue 19 removed it: it reads frames of up to 16 MiB whole before the app sees
# them, with no option to lower that (tungstenite's defaults, granian 2.8).
SERVERS = ("uvicorn", "daphne")
ROLES = ("web", "worker", "beat", "release")
# A worker that ran at least this long before Celery stopped it on an error of its own is
# started again; one that failed sooner failed to start, and its exit status stands.
RESTART_AFTER_SECONDS = 10.0


def server_argv(
    *,
    server: str,
    host: str,
    port: int,
    workers: int,
    max_message_bytes: int,
    ping_interval: int = 20,
    ping_timeout: int = 20,
) -> list[str]:
    if server == "daphne":
        if workers != 1:
            raise SystemExit("daphne runs one process; use uvicorn for WEB_CONCURRENCY>1")
        # Autobahn checks both against the frame header (daphne >= 4.2.2 passes them on).
        return [
            "daphne", "-b", host, "-p", str(port), "--proxy-headers",
            "--websocket-max-message-size", str(max_message_bytes),
            "--websocket-max-frame-size", str(max_message_bytes),
            "--ping-interval", str(ping_interval), "--ping-timeout", str(ping_timeout),
            APP,
        ]  # fmt: skip
    if server == "uvicorn":
        # websockets' parser checks the length in the frame header (and the inflated size
        # of a compressed message) against --ws-max-size. The protocol is uvicorn's
        # websockets-sansio, parsing a flooding client no faster than the app reads it
        # (tickerproject.uvicorn_ws), on the uvicorn and websockets releases it knows.
        return [
            "uvicorn", APP, "--host", host, "--port", str(port), "--workers", str(workers),
            "--loop", "uvloop", "--ws", ws_protocol(), "--http", "httptools",
            "--ws-max-size", str(max_message_bytes),
            "--ws-ping-interval", str(ping_interval), "--ws-ping-timeout", str(ping_timeout),
            "--proxy-headers", "--lifespan", "off",
        ]  # fmt: skip
    removed = (
        " (granian was removed: it cannot refuse an over-size WebSocket frame; README, "
        "'Frame size')"
        if server == "granian"
        else ""
    )
    raise SystemExit(f"ASGI_SERVER={server!r}: use one of {', '.join(SERVERS)}{removed}")


def run_daphne(args: list[str]) -> None:
    """daphne's own command line, in this process, with 1009 for an over-size frame and
    413 for an over-size request body (before either is read)."""
    from daphne.cli import CommandLineInterface
    from daphne.server import Server

    from tickerproject import daphne_body

    # daphne would read a whole request body before the application (and its body limit)
    # sees it; its requests refuse one over DATA_UPLOAD_MAX_MEMORY_SIZE as it arrives.
    daphne_body.install()

    class FrameLimitServer(Server):
        def __init__(self, *args, action_logger=None, **kwargs):
            # daphne's access log prints plain lines to stdout; ours logs a record each.
            action_logger = logs.AccessLog() if action_logger else None
            super().__init__(*args, action_logger=action_logger, **kwargs)

        def listen_success(self, port):
            # Autobahn's default, failByDrop, resets the TCP connection on an over-size
            # frame without a close frame; this sends 1009 first. run() has built the
            # WebSocket factory by now and the reactor has not accepted a connection yet.
            self.ws_factory.setProtocolOptions(failByDrop=False)
            super().listen_success(port)

    cli = CommandLineInterface()
    cli.server_class = FrameLimitServer
    cli.run(args)


def max_message_bytes() -> int:
    """settings.WS_MAX_MESSAGE_BYTES, from the settings module the server will load."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tickerproject.settings")
    from django.conf import settings

    return settings.WS_MAX_MESSAGE_BYTES


def keepalive() -> tuple[int, int]:
    """settings.WS_PING_INTERVAL and WS_PING_TIMEOUT, for the server's keepalive."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tickerproject.settings")
    from django.conf import settings

    return settings.WS_PING_INTERVAL, settings.WS_PING_TIMEOUT


def ws_protocol() -> str:
    """Our uvicorn WebSocket protocol, or uvicorn's own, with a warning, on releases of
    uvicorn or websockets it was not tested with (its subclass uses their private state)."""
    try:
        from tickerproject.uvicorn_ws import unknown_versions

        unknown = unknown_versions()
    except Exception as exc:  # the internals it imports have moved
        unknown = [f"{type(exc).__name__}: {exc}"]
    if not unknown:
        return WS_PROTOCOL
    logger.warning(
        "tickerproject.uvicorn_ws does not know %s: serving with uvicorn's own WebSocket "
        "protocol (no paced parsing, no immediate close; pyproject.toml pins the known ones)",
        ", ".join(unknown),
    )
    return FALLBACK_WS_PROTOCOL


def log_from_the_start() -> None:
    """The logging LOG_FORMAT and LOG_LEVEL ask for, before the settings load: an error in
    them (no SECRET_KEY, say) is a record too, not a bare traceback on stderr."""
    logs.configure(
        logs.logging_config(fmt=env_str("LOG_FORMAT", "plain"), level=env_str("LOG_LEVEL", "INFO"))
    )


def log_config_file() -> str:
    """settings.LOGGING as a JSON file, for uvicorn's --log-config: its supervisor (with
    WEB_CONCURRENCY>1) never loads Django, and logs in uvicorn's own format unless told.

    Named by its content, in TICKER_VAR_DIR (the system's temporary directory unless set):
    launchers with the same configuration share one file, and none needs removing.
    """
    from django.conf import settings

    text = json.dumps(settings.LOGGING, indent=1, sort_keys=True)
    var_dir = env_str("TICKER_VAR_DIR", tempfile.gettempdir())
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = os.path.join(var_dir, f"ticker-logging-{digest}.json")
    if not os.path.exists(path):
        fd, tmp = tempfile.mkstemp(dir=var_dir, prefix=".ticker-logging-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)  # whole, so a launcher starting alongside reads no half file
    return path


# --quiet: no banner (terminal art, several lines); the worker and beat log its facts as
# one record instead (tickerproject/celery.py).
def worker_argv(*, name: str, concurrency: int, loglevel: str) -> list[str]:
    """A Celery worker; the threads pool lets a warm shutdown reach the feed loop."""
    return [
        "celery", "-A", "tickerproject", "--quiet", "worker", "--pool", "threads",
        "--concurrency", str(concurrency), "-n", f"{name}@%h", "--loglevel", loglevel,
    ]  # fmt: skip


def beat_argv(*, schedule: str, loglevel: str) -> list[str]:
    return [
        "celery", "-A", "tickerproject", "--quiet", "beat",
        "--loglevel", loglevel, "--schedule", schedule,
    ]  # fmt: skip


def role_argv(role: str) -> list[str]:
    """The command line ``role`` runs, from the environment (and the settings, for web)."""
    if role == "web":
        ping_interval, ping_timeout = keepalive()
        return server_argv(
            server=env_str("ASGI_SERVER", "uvicorn"),
            host=env_str("HOST", "127.0.0.1"),
            port=env_int("PORT", 8000),
            workers=env_int("WEB_CONCURRENCY", 1, minimum=1),
            max_message_bytes=max_message_bytes(),
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
        )
    loglevel = env_str("LOG_LEVEL", "INFO")
    if role == "worker":
        return worker_argv(
            name=env_str("WORKER_NAME", f"worker-{os.getpid()}"),
            concurrency=env_int("WORKER_CONCURRENCY", 4, minimum=1),
            loglevel=loglevel,
        )
    if role == "beat":
        var_dir = env_str("TICKER_VAR_DIR", tempfile.gettempdir())
        schedule = env_str("CELERY_BEAT_SCHEDULE", os.path.join(var_dir, "celerybeat-schedule"))
        return beat_argv(schedule=schedule, loglevel=loglevel)
    raise SystemExit(f"python -m tickerproject.serve {role}: use one of {', '.join(ROLES)}")


def release() -> None:
    """Migrate and seed the symbols (both idempotent), in this process."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tickerproject.settings")
    import django
    from django.core.management import call_command

    django.setup()
    # Their reports to the terminal, as log records (one JSON object each in JSON mode).
    out = logs.LogWriter("tickerproject.release")
    call_command("migrate", interactive=False, stdout=out)
    call_command("seed_symbols", stdout=out)
    out.flush()


def main(argv: list[str] | None = None) -> None:
    # The checkout's .env.dev, if any, before the role's variables are read: a server
    # started by hand agrees with the settings it loads (tickerproject/env.py).
    load_env_file()
    log_from_the_start()
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1:
        raise SystemExit(f"usage: python -m tickerproject.serve [{'|'.join(ROLES)}]")
    role = args[0] if args else "web"
    if role == "release":
        release()
        return
    argv = role_argv(role)
    if argv[0] == "uvicorn":
        argv += ["--log-config", log_config_file()]
    if role != "web":
        # Celery loads the same settings; loading them here first fails fast, and alike.
        max_message_bytes()
    if argv[0] == "daphne":
        run_daphne(argv[1:])
        return
    if role == "worker":
        run_worker(argv, again=[sys.executable, "-m", "tickerproject.serve", role])
        return
    run_in_process(argv)


def should_restart(exit_code: object, *, ran_seconds: float, signalled: bool) -> bool:
    """Whether a Celery worker that exited with ``exit_code`` is started again."""
    return exit_code not in (0, None) and not signalled and ran_seconds >= RESTART_AFTER_SECONDS


def run_worker(argv: list[str], *, again: list[str]) -> None:
    """The Celery worker, supervised: started again if Celery gave up on it.

    Celery stops a worker for good on an exception it did not expect ("Unrecoverable
    error"). Celery 5.7 does so when the broker connection is lost with a message not yet
    acknowledged: it collects the connection, then closes it, and closing the channel
    restores the message through a transport whose client is gone (AttributeError). A
    Redis restart at the wrong moment would leave no worker, so no feed, and nothing but
    the supervisor (compose's restart policy, if any) to notice. Stopped on a signal
    (SIGTERM, Ctrl-C), it is not started again: Celery tells of those with
    ``worker_shutting_down``.
    """
    from celery.signals import worker_shutting_down

    signals: list[str] = []
    worker_shutting_down.connect(lambda sig=None, **_: signals.append(str(sig)), weak=False)
    started = time.monotonic()
    try:
        run_in_process(argv)
    except SystemExit as exc:
        ran = time.monotonic() - started
        if should_restart(exc.code, ran_seconds=ran, signalled=bool(signals)):
            logger.error(
                "the Celery worker stopped on an error after %.0f s (exit %s); starting it "
                "again", ran, exc.code,
            )  # fmt: skip
            logging.shutdown()
            os.execv(again[0], again)
        raise


def run_in_process(argv: list[str]) -> None:
    """uvicorn's or Celery's own command line, in this process.

    Not an exec: the settings, Django and Celery this process has already imported are
    what the server would import again (about 1.2 s of CPU per process, and the tests
    start about forty stacks of three).
    """
    if argv[0] == "uvicorn":
        from uvicorn.main import main as uvicorn

        uvicorn.main(args=argv[1:], prog_name="uvicorn")
        return
    from celery.bin.celery import main as celery

    sys.argv = argv
    celery()


if __name__ == "__main__":
    main()
