"""What one idle WebSocket connection holds in the web process, by type and by source line.

    python benchmarks/conn_memory.py [--connections 2000] [--no-tracemalloc] [--top 30]

benchmarks/fanout.py ``idle`` measures the cost (RSS per connection, against the bare
``websockets`` reference); this script says where it goes. It starts a private
redis-server, migrates a scratch SQLite database, and runs the web server the way
``python -m tickerproject.serve`` does (uvicorn, uvloop, httptools, our websockets
protocol, the same ASGI application and frame limit), but in a process of its own
making, ``conn_memory.py serve``, which takes a snapshot of itself on SIGUSR1:

- every object the garbage collector tracks, counted per type (``gc.get_objects()``,
  after a collection), with ``sys.getsizeof`` bytes;
- the asyncio tasks, per coroutine;
- with tracemalloc (on unless ``--no-tracemalloc``), every live allocation by source
  line, and by package;
- its RSS.

The script opens and closes a few connections first (so that what a process makes
once, with its first connection, exists in both snapshots), snapshots, opens
``--connections`` that subscribe to nothing, snapshots again, and prints the
difference divided by the number of connections. tracemalloc's own bookkeeping
inflates RSS: read the RSS line of a ``--no-tracemalloc`` run, or fanout.py's.
Everything listens on 127.0.0.1; every process started here is stopped here, by PID.
"""

import argparse
import asyncio
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from tickerproject.stack import free_port, redis_server_command, wait_for_port  # noqa: E402

PYTHON = sys.executable


# --- the server side: `conn_memory.py serve`


def serve(args: argparse.Namespace) -> None:
    """Run the web server with tickerproject.serve's own command line; snapshot on SIGUSR1."""
    import tracemalloc

    if args.tracemalloc:
        tracemalloc.start(args.frames)
    import uvicorn
    from uvicorn.main import main as uvicorn_main

    from tickerproject.serve import role_argv

    argv = role_argv("web")  # HOST and PORT from the environment, as in the Procfile
    if argv[0] != "uvicorn":
        raise SystemExit(f"conn_memory.py measures uvicorn; the web role runs {argv[0]}")
    out = Path(args.result_dir)
    taken = [0]

    def snapshot() -> None:
        """Called on SIGUSR1, in the loop: everything the process holds, to files."""
        taken[0] += 1
        base = out / f"snap{taken[0]}"
        started = time.monotonic()
        gc.collect()
        counts: Counter = Counter()
        sizes: Counter = Counter()
        for obj in gc.get_objects():
            t = type(obj)
            name = f"{t.__module__}.{t.__qualname__}"
            counts[name] += 1
            sizes[name] += sys.getsizeof(obj)
        tasks: Counter = Counter()
        for task in asyncio.all_tasks():
            coro = task.get_coro()
            tasks[getattr(coro, "__qualname__", type(coro).__name__)] += 1
        import psutil

        info = {
            "rss": psutil.Process().memory_info().rss,
            "counts": counts,
            "sizes": sizes,
            "tasks": tasks,
            "handles": len(getattr(asyncio.get_running_loop(), "_scheduled", ())),
        }
        spent = time.monotonic() - started
        print(f"snapshot {taken[0]}: objects counted in {spent:.1f} s", flush=True)
        if tracemalloc.is_tracing():
            snap = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)]
            )
            snap.dump(str(base) + ".tracemalloc")
            info["traced"] = tracemalloc.get_traced_memory()[0]
            spent = time.monotonic() - started
            print(f"snapshot {taken[0]}: traces dumped after {spent:.1f} s", flush=True)
        tmp = Path(str(base) + ".json.tmp")
        tmp.write_text(json.dumps(info))
        tmp.rename(str(base) + ".json")  # whole, or not there

    serve_once = uvicorn.Server.serve

    async def serve_with_snapshots(self, *a, **kw):
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, snapshot)
        return await serve_once(self, *a, **kw)

    uvicorn.Server.serve = serve_with_snapshots
    print("uvicorn " + " ".join(argv[1:]), flush=True)
    uvicorn_main(argv[1:])


# --- the driver


def log(message: str) -> None:
    print(f"[conn_memory {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Clients:
    """Idle WebSocket clients in this process, opened in waves."""

    def __init__(self, url: str, origin: str, *, compression: bool) -> None:
        self.url = url
        self.origin = origin
        # The harness (loadtest.client) offers no extension; browsers offer
        # permessage-deflate, which uvicorn accepts.
        self.compression = "deflate" if compression else None
        self.conns: list = []

    async def open(self, n: int, wave: int = 100) -> None:
        from websockets.asyncio.client import connect

        async def one():
            return await connect(
                self.url, origin=self.origin, open_timeout=60, compression=self.compression
            )

        for start in range(0, n, wave):
            self.conns += await asyncio.gather(*(one() for _ in range(min(wave, n - start))))

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.conns), return_exceptions=True)
        self.conns = []


def take(proc: subprocess.Popen, result_dir: Path, n: int, timeout: float = 900) -> dict:
    """Ask the server for snapshot ``n`` and wait for it."""
    path = result_dir / f"snap{n}.json"
    proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"no snapshot {n} from the server (see its log)")
        time.sleep(0.2)
    return json.loads(path.read_text())


def package_of(filename: str) -> str:
    """A source file's package: 'uvicorn', 'websockets', 'asyncio', 'streaming', ..."""
    path = Path(filename)
    if "site-packages" in path.parts:
        return path.parts[path.parts.index("site-packages") + 1].removesuffix(".py")
    if path.is_relative_to(BASE_DIR):
        return path.relative_to(BASE_DIR).parts[0].removesuffix(".py")
    # The standard library: its package (asyncio) or module (_weakrefset).
    return path.parent.name if not path.parent.name.startswith("python3") else path.stem


def short(filename: str) -> str:
    parts = Path(filename).parts
    if "site-packages" in parts:
        return "/".join(parts[parts.index("site-packages") + 1 :])
    try:
        return str(Path(filename).relative_to(BASE_DIR))
    except ValueError:
        return "/".join(parts[-2:])


def report(before: dict, held: dict, n: int, result_dir: Path, top: int) -> dict:
    out: dict = {"connections": n}
    rss = (held["rss"] - before["rss"]) / n
    out["rss_bytes_per_connection"] = round(rss)
    print(
        f"\nRSS: {before['rss'] / 2**20:.1f} MB -> {held['rss'] / 2**20:.1f} MB, "
        f"{rss / 1024:.1f} KB per connection"
        + (" (tracemalloc on: inflated by its own bookkeeping)" if "traced" in held else "")
    )

    tasks = Counter(held["tasks"])
    tasks.subtract(before["tasks"])
    per_conn_tasks = {k: v / n for k, v in tasks.items() if v}
    out["tasks_per_connection"] = per_conn_tasks
    print(f"\nasyncio tasks per connection: {sum(per_conn_tasks.values()):.2f}")
    for name, v in sorted(per_conn_tasks.items(), key=lambda kv: -kv[1]):
        print(f"  {v:6.2f}  {name}")
    handles = (held["handles"] - before["handles"]) / n
    out["timer_handles_per_connection"] = handles
    print(f"timer handles per connection: {handles:.2f}")

    counts = Counter(held["counts"])
    counts.subtract(before["counts"])
    sizes = Counter(held["sizes"])
    sizes.subtract(before["sizes"])
    rows = sorted(
        ((name, counts[name] / n, sizes[name] / n) for name in counts if counts[name] >= n / 2),
        key=lambda r: -r[2],
    )
    out["gc_objects_per_connection"] = {name: [round(c, 2), round(b)] for name, c, b in rows}
    total_objs = sum(c for _, c, _ in rows)
    print(
        f"\ngc-tracked objects per connection (types with >= 0.5 per connection): "
        f"{total_objs:.1f} objects, {sum(b for *_, b in rows):,.0f} bytes by sys.getsizeof"
    )
    print(f"  {'objects':>8} {'bytes':>8}  type")
    for name, c, b in rows[:top]:
        print(f"  {c:8.2f} {b:8.0f}  {name}")

    a = result_dir / "snap1.tracemalloc"
    b = result_dir / "snap2.tracemalloc"
    if a.exists() and b.exists():
        import tracemalloc

        s1 = tracemalloc.Snapshot.load(str(a))
        s2 = tracemalloc.Snapshot.load(str(b))
        traced = (held["traced"] - before["traced"]) / n
        out["traced_bytes_per_connection"] = round(traced)
        print(
            f"\ntracemalloc: {traced:,.0f} bytes per connection traced "
            f"(Python's allocators, C extensions' included)"
        )
        diffs = s2.compare_to(s1, "lineno")
        by_pkg: Counter = Counter()
        by_pkg_blocks: Counter = Counter()
        for d in diffs:
            pkg = package_of(d.traceback[0].filename)
            by_pkg[pkg] += d.size_diff
            by_pkg_blocks[pkg] += d.count_diff
        out["traced_by_package"] = {k: round(v / n) for k, v in by_pkg.most_common()}
        print(f"  {'bytes':>8} {'blocks':>7}  package (the allocating line's file)")
        for pkg, size in by_pkg.most_common():
            if abs(size) >= n * 16:
                print(f"  {size / n:8.0f} {by_pkg_blocks[pkg] / n:7.1f}  {pkg}")
        print(f"\n  {'bytes':>8} {'blocks':>7}  allocating line")
        lines = []
        for d in diffs[:top]:
            frame = d.traceback[0]
            where = f"{short(frame.filename)}:{frame.lineno}"
            lines.append([where, round(d.size_diff / n), round(d.count_diff / n, 2)])
            print(f"  {d.size_diff / n:8.0f} {d.count_diff / n:7.1f}  {where}")
        out["traced_by_line"] = lines
        # The same, by the innermost frame in the project's own code (who caused it).
        by_ours: Counter = Counter()
        for stat in s2.compare_to(s1, "traceback"):
            where = "(no project frame)"
            for frame in stat.traceback:  # innermost first
                if not any(p in frame.filename for p in ("site-packages", "/lib/python")):
                    where = f"{short(frame.filename)}:{frame.lineno}"
                    break
            by_ours[where] += stat.size_diff
        print(f"\n  {'bytes':>8}  innermost project frame of the allocation (--frames deep)")
        for where, size in by_ours.most_common(top):
            print(f"  {size / n:8.0f}  {where}")
        out["traced_by_project_frame"] = {k: round(v / n) for k, v in by_ours.most_common(top)}
    return out


async def drive(args: argparse.Namespace, port: int, proc: subprocess.Popen, result_dir: Path):
    url = f"ws://127.0.0.1:{port}/ws/prices/"
    clients = Clients(url, f"http://127.0.0.1:{port}", compression=args.compression)
    # What the process makes once, with its first connections (the guard, the hub,
    # the metrics' children, the code paths' caches), exists in both snapshots.
    await clients.open(args.warmup)
    await clients.close()
    await asyncio.sleep(1)
    before = await asyncio.to_thread(take, proc, result_dir, 1)
    log(f"opening {args.connections} connections")
    await clients.open(args.connections)
    await asyncio.sleep(args.settle)
    held = await asyncio.to_thread(take, proc, result_dir, 2)
    await clients.close()
    return before, held


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="What an idle connection holds (see above).")
    parser.add_argument("mode", nargs="?", default="run", choices=("run", "serve"))
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before the snapshot")
    parser.add_argument("--no-tracemalloc", dest="tracemalloc", action="store_false")
    parser.add_argument(
        "--compression", action="store_true",
        help="clients offer permessage-deflate, as browsers do (the harness does not)",
    )  # fmt: skip
    parser.add_argument("--frames", type=int, default=8, help="tracemalloc's traceback depth")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", default=None, help="directory for snapshots and the report")
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--result-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode == "serve":
        serve(args)
        return 0

    from fanout import raise_open_files_limit  # benchmarks/ is on the path

    raise_open_files_limit()
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out = Path(args.out or BASE_DIR / "var" / "benchmarks" / f"conn-memory-{stamp}")
    out.mkdir(parents=True, exist_ok=True)
    redis_port, port = free_port(), free_port()
    data_dir = tempfile.mkdtemp(prefix="conn-memory-redis-")
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "tickerproject.settings",
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "REDIS_PREFIX": f"connmem-{uuid.uuid4().hex[:6]}",
            "DATABASE_URL": f"sqlite:///{out / 'db.sqlite3'}",
            "TICKER_VAR_DIR": str(out),
            # As fanout.py runs the stack: production settings, every client from one address.
            "DEBUG": "0",
            "SECRET_KEY": env.get("SECRET_KEY") or "benchmark-only-not-secret",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "LOG_LEVEL": "WARNING",
            "WS_MAX_CONNECTIONS_PER_IP": "1000000",
            "WS_MAX_CONNECTIONS": "1000000",
            "PYTHONUNBUFFERED": "1",
        }
    )
    procs: list[subprocess.Popen] = []
    server_log = open(out / "server.log", "ab")  # closed below
    try:
        redis = subprocess.Popen(
            redis_server_command(redis_port, data_dir), stdout=subprocess.DEVNULL, cwd=data_dir
        )
        procs.append(redis)
        wait_for_port(redis_port)
        subprocess.run(
            [PYTHON, "-m", "tickerproject.serve", "release"], env=env, cwd=BASE_DIR, check=True,
            stdout=server_log, stderr=subprocess.STDOUT, timeout=300,
        )  # fmt: skip
        cmd = [PYTHON, __file__, "serve", "--port", str(port), "--result-dir", str(out),
               "--frames", str(args.frames)]  # fmt: skip
        if not args.tracemalloc:
            cmd.append("--no-tracemalloc")
        server = subprocess.Popen(
            cmd, env=env, cwd=BASE_DIR, stdout=server_log, stderr=subprocess.STDOUT
        )
        procs.append(server)
        wait_for_port(port, 60)
        log(
            f"server pid {server.pid} on 127.0.0.1:{port}; tracemalloc "
            f"{'on, ' + str(args.frames) + ' frames' if args.tracemalloc else 'off'}; out {out}"
        )
        before, held = asyncio.run(drive(args, port, server, out))
        result = report(before, held, args.connections, out, args.top)
        result["loadavg"] = [round(x, 2) for x in os.getloadavg()]
        (out / "conn_memory.json").write_text(json.dumps(result, indent=2) + "\n")
        log(f"report in {out / 'conn_memory.json'}")
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        server_log.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
