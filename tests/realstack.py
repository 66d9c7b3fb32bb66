"""Start real stack processes (web server, Celery worker and beat) for end-to-end tests.

Each stack gets its own SQLite file and its own Redis key prefix on the Redis
that REDIS_URL names, so stacks never see each other's leases, seqs or queues.
Every process runs its Procfile command (tickerproject.stack.procfile), as `make run`
and docker-compose.yml start them.
"""

import atexit
import contextlib
import json
import os
import select
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

from tickerproject.stack import free_port, procfile, wait_for_port

BASE_DIR = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


class RealStack:
    """A set of stack processes sharing one environment; stop() ends only those."""

    def __init__(self, workdir: Path, **env_overrides: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.prefix = f"{os.environ.get('REDIS_PREFIX', 'ticker-test')}-{uuid.uuid4().hex[:6]}"
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "DJANGO_SETTINGS_MODULE": "tickerproject.settings",
            "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
            "REDIS_URL": settings.REDIS_URL,
            "REDIS_PREFIX": self.prefix,
            "PYTHONUNBUFFERED": "1",
            "FEED_SUPERVISE_SECONDS": "1",
            "FEED_LEASE_SECONDS": "3",
            # Two book updates a second per simulated symbol, not one per tick: at the
            # tests' 10-20 ticks/s the books cost a worker as much as the ticks do, for
            # tests that do not look at books (issue 19). The book tests ask for "0".
            "SIM_BOOK_RATE": "2",
            **env_overrides,
        }
        self.procs: dict[str, subprocess.Popen] = {}
        self._shell_lock = threading.Lock()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/prices/"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def origin(self) -> str:
        return self.http_url

    def manage(self, *args: str) -> None:
        subprocess.run(
            [sys.executable, "manage.py", *args],
            env=self.env,
            cwd=BASE_DIR,
            check=True,
            capture_output=True,
        )

    def shell(self, code: str, timeout: float = 120.0) -> str:
        """Run ``code`` in the stack's Django, as `manage.py shell -c` would; what it printed.

        The snippets run one after the other in one process (tests/stack_shell.py,
        process "shell"), started on first use with the stack's environment at that
        time and stopped with the others. A `manage.py shell -c` costs about 3 s of CPU
        to start Django; this does once per stack. A snippet that raises fails the
        calling test with its traceback. ``timeout`` is a deadline for a hung snippet,
        not an expected time.
        """
        with self._shell_lock:
            proc = self.procs.get("shell")
            if proc is None or proc.poll() is not None:
                self.stop("shell")
                log = open(self.workdir / "shell.log", "ab")  # closed in stop()
                proc = subprocess.Popen(
                    [sys.executable, "-m", "tests.stack_shell"],
                    env=self.env,
                    cwd=BASE_DIR,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                )
                proc._log = log  # type: ignore[attr-defined]
                self.procs["shell"] = proc
            try:
                proc.stdin.write(json.dumps({"code": code}).encode() + b"\n")
                proc.stdin.flush()
                reply = _read_line(proc.stdout.fileno(), time.monotonic() + timeout)
            except (OSError, EOFError, TimeoutError) as exc:
                # Dead or hung: it goes, and the next snippet starts a new one.
                self.stop("shell", timeout=0.0)
                raise AssertionError(
                    f"stack shell failed ({exc!r}):\n{self.log('shell')[-3000:]}"
                ) from None
        answer = json.loads(reply)
        if answer["error"] is not None:
            raise AssertionError(
                f"snippet raised:\n{answer['error']}\n{answer['out']}\nsnippet:\n{code}"
            )
        return answer["out"]

    def call_command(self, *args: str) -> str:
        """`manage.py ARGS` run by Django's call_command in the stack's shell; its stdout.

        The command's own code with none of a new process's start-up (about 3 s of CPU).
        A test of a command's process (its exit status, what it writes to stderr) runs
        `manage.py` itself (manage()); one that only needs what a command makes, a token
        say, uses this.
        """
        return self.shell(
            "import io\n"
            "from django.core.management import call_command\n"
            "out = io.StringIO()\n"
            f"call_command(*{list(args)!r}, stdout=out, stderr=io.StringIO())\n"
            "print(out.getvalue(), end='')"
        )

    def prepare_database(self) -> None:
        """The Procfile's `release` (migrate, seed symbols), as `make run` does first.

        `release` really runs once per test process; every later stack on its own SQLite
        file gets a copy of that first result (release depends on the code alone, not on a
        stack's settings). A migrate costs about 3 s of CPU, and the suite starts about
        thirty stacks. A stack given another DATABASE_URL always runs `release` itself.
        """
        own = self.env["DATABASE_URL"] == f"sqlite:///{self.workdir / 'db.sqlite3'}"
        template = _released_template()
        if own and template is not None:
            _copy_sqlite(template, self.workdir / "db.sqlite3")
            return
        subprocess.run(
            self.procfile_argv("release"),
            env=self.env,
            cwd=BASE_DIR,
            check=True,
            capture_output=True,
        )
        if own:
            _keep_as_template(self.workdir / "db.sqlite3")

    def _spawn(
        self, name: str, args: list[str], extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")  # closed in stop()
        proc = subprocess.Popen(
            args,
            env={**self.env, **(extra_env or {})},
            cwd=BASE_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        proc._log = log  # type: ignore[attr-defined]
        self.procs[name] = proc
        return proc

    def procfile_argv(self, entry: str) -> list[str]:
        """The Procfile's command for ``entry`` (found on this virtualenv's PATH)."""
        return shlex.split(procfile()[entry])

    def start_web(
        self, name: str = "web", port: int | None = None, *, wait: bool = True, **env: str
    ) -> subprocess.Popen:
        """The ASGI server ASGI_SERVER names (uvicorn by default), as `make run` starts it.

        A second web server of the same stack takes another ``name`` and ``port``, and
        ``env`` on top of the stack's (ASGI_SERVER="daphne", say). With ``wait=False``
        it returns at once; wait_for_web() then waits for it to listen.
        """
        port = self.port if port is None else port
        proc = self._spawn(
            name,
            self.procfile_argv("web"),
            extra_env={**env, "HOST": "127.0.0.1", "PORT": str(port)},
        )
        if wait:
            self.wait_for_web(name, port)
        return proc

    def wait_for_web(self, name: str = "web", port: int | None = None) -> None:
        """Block until web server ``name`` listens; fail at once, with its log, if it exits."""
        port = self.port if port is None else port
        # A deadline, not an expected time: under load a start-up's imports take seconds.
        deadline = time.monotonic() + 60
        while True:
            try:
                wait_for_port(port, timeout=1)
                return
            except TimeoutError:
                proc = self.procs.get(name)
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited ({proc.returncode}):\n{self.log(name)[-3000:]}"
                    ) from None
                if time.monotonic() > deadline:
                    raise

    def start_worker(self, name: str = "worker") -> subprocess.Popen:
        return self._spawn(
            name, self.procfile_argv("worker"), extra_env={"WORKER_NAME": f"{name}-{self.prefix}"}
        )

    def start_beat(self) -> subprocess.Popen:
        return self._spawn(
            "beat", self.procfile_argv("beat"), {"TICKER_VAR_DIR": str(self.workdir)}
        )

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
        proc._log.close()  # type: ignore[attr-defined]

    def stop_all(self, timeout: float = 15.0) -> None:
        """SIGTERM to every process at once, then wait for them together.

        One by one, each stop waited out the one before: a worker's warm shutdown alone
        takes seconds, and the suite stops about thirty stacks.
        """
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name in list(self.procs):
            proc = self.procs[name]
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            self.stop(name, timeout=0.0)  # kills whatever is still running


def _read_line(fd: int, deadline: float) -> bytes:
    """One line from pipe ``fd``: EOFError if its writer is gone, TimeoutError at deadline."""
    # poll, not select: a test process with many sockets may have descriptors past 1024.
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    data = b""
    while not data.endswith(b"\n"):
        if not poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
            raise TimeoutError("no reply before the deadline")
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            raise EOFError("the process ended")
        data += chunk
    return data


_template: Path | None = None


def _released_template() -> Path | None:
    """This process's copy of a database `release` made, once it has one."""
    return _template if _template is not None and _template.exists() else None


def _keep_as_template(database: Path) -> None:
    global _template
    if _released_template() is not None:
        return
    folder = Path(tempfile.mkdtemp(prefix="ticker-release-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    _copy_sqlite(database, folder / "db.sqlite3")
    _template = folder / "db.sqlite3"


def _copy_sqlite(source: Path, target: Path) -> None:
    # SQLite's online backup, not a file copy: the database runs in WAL mode, and a page
    # may still sit in its -wal file.
    with contextlib.closing(sqlite3.connect(source)) as src:
        with contextlib.closing(sqlite3.connect(target)) as dst:
            src.backup(dst)


@contextmanager
def real_stack(
    workdir: Path, *, workers: int = 1, daphne: bool = False, **env: str
) -> Iterator[RealStack]:
    """Database, the web server, ``workers`` Celery workers and beat; all stopped on exit.

    With ``daphne``, also a daphne web server (process "daphne") on ``stack.daphne_port``,
    beside the ASGI_SERVER one on ``stack.port``: one stack serves tests of both.
    """
    stack = RealStack(workdir, **env)
    stack.prepare_database()
    try:
        # Every process starts at once and the web servers are waited for last: their
        # start-ups are mostly imports, which overlap on a machine with more than one core.
        stack.start_web(wait=False)
        if daphne:
            stack.daphne_port = free_port()
            stack.start_web("daphne", stack.daphne_port, wait=False, ASGI_SERVER="daphne")
        for i in range(workers):
            stack.start_worker(f"worker{i + 1}")
        stack.start_beat()
        stack.wait_for_web()
        if daphne:
            stack.wait_for_web("daphne", stack.daphne_port)
        yield stack
    finally:
        stack.stop_all()
