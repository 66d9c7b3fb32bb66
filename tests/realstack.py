"""Start real stack processes (daphne, Celery worker and beat) for end-to-end tests.

Each stack gets its own SQLite file and its own Redis key prefix on the Redis
that REDIS_URL names, so stacks never see each other's leases, seqs or queues.
"""

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

from tickerproject.stack import free_port, wait_for_port

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
            **env_overrides,
        }
        self.procs: dict[str, subprocess.Popen] = {}

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

    def prepare_database(self) -> None:
        self.manage("migrate", "--noinput")
        self.manage("seed_symbols")

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

    def start_web(self) -> subprocess.Popen:
        """The ASGI server ASGI_SERVER names (uvicorn by default), as `make run` starts it."""
        proc = self._spawn(
            "web",
            [sys.executable, "-m", "tickerproject.serve"],
            extra_env={"HOST": "127.0.0.1", "PORT": str(self.port)},
        )
        wait_for_port(self.port, timeout=20)
        return proc

    def start_worker(self, name: str = "worker") -> subprocess.Popen:
        return self._spawn(
            name,
            [str(BIN / "celery"), "-A", "tickerproject", "worker", "--pool", "threads",
             "--concurrency", "4", "-n", f"{name}-{self.prefix}@%h", "--loglevel", "INFO"],
        )  # fmt: skip

    def start_beat(self) -> subprocess.Popen:
        return self._spawn(
            "beat",
            [str(BIN / "celery"), "-A", "tickerproject", "beat", "--loglevel", "INFO",
             "--schedule", str(self.workdir / "celerybeat-schedule")],
        )  # fmt: skip

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
        proc._log.close()  # type: ignore[attr-defined]

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


@contextmanager
def real_stack(workdir: Path, *, workers: int = 1, **env: str) -> Iterator[RealStack]:
    """Database, daphne, ``workers`` Celery workers and beat; all stopped on exit."""
    stack = RealStack(workdir, **env)
    stack.prepare_database()
    try:
        stack.start_web()
        for i in range(workers):
            stack.start_worker(f"worker{i + 1}")
        stack.start_beat()
        yield stack
    finally:
        stack.stop_all()
