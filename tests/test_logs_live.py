"""LOG_FORMAT=json: every line every process writes, on stdout and stderr, is one JSON object.

One real stack, started as the Procfile starts it: `release` first, then the web server
(uvicorn with WEB_CONCURRENCY=2, so its supervisor, which never loads Django, logs too),
a second web server with ASGI_SERVER=daphne, a Celery worker and beat. It is driven to log
from each source: startup, a 404 (django.request), requests (both servers' access logs),
a WebSocket, the worker's tasks, a SIGUSR1 stack dump and the shutdown lines Celery's
signal handlers write themselves; then every line of every process's output must parse.

Apart, in a plain subprocess: a Python warning, an exception that ends a thread, one that
Python can only ignore and one that ends the process, all through the same log; and the
launcher failing on its settings (no SECRET_KEY) says so in a record too.
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.realstack import BASE_DIR, RealStack
from tickerproject.stack import free_port, wait_for_port

pytestmark = [pytest.mark.e2e]

KEYS = {"timestamp", "level", "logger", "process", "message"}


def records(text: str, where: str) -> list[dict]:
    """Each line of ``text`` as a JSON object; the test fails on the first that is not."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        assert isinstance(record, dict), f"{where}, line {n} is not a JSON object: {line!r}"
        assert KEYS <= set(record), f"{where}, line {n}: {record}"
        out.append(record)
    return out


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def wait_for_log(stack: RealStack, name: str, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in stack.log(name):
        assert time.monotonic() < deadline, f"{name} never logged {text!r}:\n{stack.log(name)}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def json_logs(tmp_path_factory) -> dict[str, list[dict]]:
    """Every process's output as records, after the stack was driven and stopped."""
    stack = RealStack(tmp_path_factory.mktemp("jsonlogs"), LOG_FORMAT="json")
    release = subprocess.run(
        stack.procfile_argv("release"), env=stack.env, cwd=BASE_DIR, capture_output=True,
        text=True, check=True,
    )  # fmt: skip
    logs = {"release": records(release.stdout, "release stdout")}
    logs["release"] += records(release.stderr, "release stderr")
    daphne_port = free_port()
    try:
        stack._spawn(
            "web",
            stack.procfile_argv("web"),
            {"HOST": "127.0.0.1", "PORT": str(stack.port), "WEB_CONCURRENCY": "2"},
        )
        stack._spawn(
            "daphne",
            stack.procfile_argv("web"),
            {"HOST": "127.0.0.1", "PORT": str(daphne_port), "ASGI_SERVER": "daphne"},
        )
        stack.start_worker()
        stack.start_beat()
        wait_for_port(stack.port, timeout=60)
        wait_for_port(daphne_port, timeout=60)
        for base in (stack.http_url, f"http://127.0.0.1:{daphne_port}"):
            assert get(f"{base}/some-missing-page/") == 404
            assert get(f"{base}/api/symbols/") == 200
        with connect(stack.ws_url, origin=stack.origin, open_timeout=10) as ws:
            ws.send(json.dumps({"action": "ping", "id": 1}))
            ws.recv(timeout=10)
        # A task run to its end (beat sends the feed's supervision every second).
        wait_for_log(stack, "worker", "succeeded in")
        # Celery's stack dump: its signal handler writes it itself, as the shutdown line.
        stack.procs["worker"].send_signal(signal.SIGUSR1)
        wait_for_log(stack, "worker", "MainThread")
    finally:
        stack.stop_all()
    for name in ("web", "daphne", "worker", "beat"):
        logs[name] = records(stack.log(name), name)
    return logs


def messages(logs: dict, name: str, logger: str) -> list[str]:
    return [r["message"] for r in logs[name] if r["logger"] == logger]


def test_every_line_of_every_process_is_a_json_object(json_logs):
    # records() has parsed every line; here, that each process said something at all.
    for name in ("release", "web", "daphne", "worker", "beat"):
        assert json_logs[name], name


def test_django_uvicorn_and_daphne_lines_are_records(json_logs):
    web, daphne = json_logs["web"], json_logs["daphne"]
    # The 404 once per server, through the root's handler alone (Django's defaults gave
    # it a plain-text handler of its own as well).
    for logs in (web, daphne):
        not_found = [r for r in logs if r["message"] == "Not Found: /some-missing-page/"]
        assert len(not_found) == 1 and not_found[0]["level"] == "WARNING", not_found
    assert any("GET /api/symbols/" in m for m in messages(json_logs, "web", "uvicorn.access"))
    assert any("GET /api/symbols/" in m for m in messages(json_logs, "daphne", "daphne.access"))
    # uvicorn's supervisor (WEB_CONCURRENCY=2) never loads Django: --log-config told it.
    supervisor = messages(json_logs, "web", "uvicorn.error")
    assert any(m.startswith("Started parent process") for m in supervisor), supervisor
    assert any(m.startswith("Stopping parent process") for m in supervisor), supervisor
    # uvicorn's copy of a message with colour codes is not carried along.
    assert not any("color_message" in r for r in web)
    opened = [r for r in web if r["message"].startswith("websocket open")]
    assert opened and all(r.get("connection") for r in opened), opened


def test_celery_lines_are_records(json_logs):
    worker = json_logs["worker"]
    assert any(r["message"].endswith(" ready.") for r in worker)
    # The banners' facts, once each (the launcher starts both with --quiet).
    started = messages(json_logs, "worker", "tickerproject.celery")
    assert len(started) == 1 and ", tasks " in started[0], started
    assert "feeds.tasks.run_feed" in started[0].split(", tasks ", 1)[1], started
    assert any(
        m.startswith("beat: broker") for m in messages(json_logs, "beat", "tickerproject.celery")
    )
    # A task's lines carry its id.
    succeeded = [r for r in worker if "succeeded in" in r["message"]]
    assert succeeded and all(r.get("task") for r in succeeded), succeeded
    # What Celery's signal handlers write themselves.
    said = messages(json_logs, "worker", "celery.apps.worker")
    assert any("MainThread" in m for m in said), said
    assert "worker: Warm shutdown (MainProcess)" in said, said


def test_release_output_is_records(json_logs):
    release = messages(json_logs, "release", "tickerproject.release")
    assert any(m.startswith("seed_symbols:") for m in release), release
    assert any("Apply all migrations" in m for m in release), release


def json_env(**overrides: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tickerproject.settings",
        "LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
        **overrides,
    }


HOOKS = """
import threading, warnings, django
django.setup()
warnings.warn("a warning of the test's", UserWarning)
thread = threading.Thread(target=lambda: 1 / 0, name="doomed")
thread.start()
thread.join()
class Ignored:
    def __del__(self):
        raise ValueError("raised in __del__")
Ignored()
raise RuntimeError("ends the process")
"""


def test_warnings_and_uncaught_exceptions_are_records():
    done = subprocess.run(
        [sys.executable, "-c", HOOKS], env=json_env(), cwd=BASE_DIR, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert records(done.stdout, "stdout") == []
    logs = records(done.stderr, "stderr")
    by_level = {(r["level"], r["message"].split(":")[0]): r for r in logs}
    warning = [r for r in logs if r["logger"] == "py.warnings"]
    assert len(warning) == 1 and "a warning of the test's" in warning[0]["message"], logs
    thread = by_level[("CRITICAL", "uncaught ZeroDivisionError in thread doomed")]
    assert "ZeroDivisionError: division by zero" in thread["exc_info"]
    ignored = [r for r in logs if r["level"] == "ERROR" and "raised in __del__" in r["exc_info"]]
    assert len(ignored) == 1, logs
    final = by_level[("CRITICAL", "uncaught RuntimeError")]
    assert "ends the process" in final["exc_info"]


def test_the_launcher_logs_its_own_failure_as_a_record(tmp_path):
    """No SECRET_KEY: the settings refuse to load, before any server or Celery starts."""
    done = subprocess.run(
        [sys.executable, "-m", "tickerproject.serve", "worker"],
        env=json_env(DEBUG="0", SECRET_KEY="", TICKER_ENV_FILE=str(Path(tmp_path, "none"))),
        cwd=BASE_DIR, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    logs = records(done.stdout, "stdout") + records(done.stderr, "stderr")
    (failure,) = [r for r in logs if r["level"] == "CRITICAL"]
    assert "SECRET_KEY must be set" in failure["exc_info"], failure
