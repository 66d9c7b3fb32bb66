"""Fan-out benchmark: the real stack against the bare-Python ceiling, same load, same run.

    python benchmarks/fanout.py load [--clients 1000 --symbols-per-client 5 --symbols 20
                                      --tick-rate 10 --duration 30 --ramp 10 ...]
    python benchmarks/fanout.py idle [--connections 5000 --hold 30 ...]
    python benchmarks/fanout.py capacity [--capacity 100:100:1000 --duration 10 ...]

``load`` starts, one after the other, (1) the project's real stack exactly as
``make run`` does (``python -m tickerproject.stack run``: embedded redis-server on a
free port, the Procfile's web server, Celery worker and beat) and (2)
benchmarks/reference_server.py, a single asyncio process using ``websockets`` with
in-process ticks and ``websockets.broadcast``. Each gets the same load from the
harness (``python manage.py loadtest``); the script prints one row per server and
the ratios, and writes everything to --out.

``capacity`` runs ``manage.py loadtest --capacity START:STEP:MAX`` against each
server: the client count steps up, each step a short load test, and the largest
count whose step held p99 <= --capacity-p99-ms and delivered >= --capacity-min-delivered
is that server's capacity (docs/loadtest.md, "Capacity mode").

``idle`` opens N clients that subscribe to nothing, holds them, and reports the
server's resident memory per connection (psutil; for the stack, the web server
process tree only) and whether it stays flat while they are held.

Everything listens on 127.0.0.1 only; every process started here is stopped here,
by PID, and every wait is bounded.
"""

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import psutil

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from markets.universe import DEFAULT_UNIVERSE  # noqa: E402
from tickerproject.env import ensure_dev_env_file  # noqa: E402
from tickerproject.stack import find_redis_server, free_port, wait_for_port  # noqa: E402

PYTHON = sys.executable
PROGRESS_LINE = re.compile(r"^\s*(\d+)s (ramp|measure|closing)\s+open\s+([\d,]+)")


def log(message: str) -> None:
    print(f"[fanout {datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


def raise_open_files_limit() -> int:
    """Children inherit this: the servers and the harness each hold one fd per client."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 65536 if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def wait_for_live_tick(url: str, origin: str, symbol: str, timeout: float) -> None:
    """Block until a client subscribed to ``symbol`` receives a live tick."""
    import asyncio

    from websockets.asyncio.client import connect

    async def probe() -> None:
        async with connect(url, origin=origin, open_timeout=10) as ws:
            await ws.send(json.dumps({"action": "subscribe", "symbols": [symbol]}))
            while True:
                msg = json.loads(await ws.recv())
                if msg.get("type") in ("tick", "ticks"):
                    return

    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            asyncio.run(asyncio.wait_for(probe(), max(1.0, deadline - time.monotonic())))
            return
        except Exception as exc:  # the stack may still be starting
            last_error = exc
            time.sleep(1)
    raise TimeoutError(f"no live tick from {url} within {timeout:.0f}s: {last_error}")


class Server:
    """A server under test, started as a child process in its own session."""

    name = ""
    proc: subprocess.Popen | None = None

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.log_path = workdir / f"{self.name}.log"

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, env: dict[str, str], args: list[str]) -> None:
        self._log = open(self.log_path, "ab")  # closed in stop()
        # A session of its own: Ctrl-C reaches only this script, which stops it in order.
        self.proc = subprocess.Popen(
            args,
            env=env,
            cwd=BASE_DIR,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None:
            return
        try:
            # honcho puts each of its processes in a process group of its own, so
            # remember the whole tree now and end any survivor by PID afterwards.
            tree = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for p in tree:
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(tree, timeout=10)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        self._log.close()
        self.proc = None

    def processes(self) -> dict[str, list[psutil.Process]]:
        """The server's processes by role, for CPU and memory figures."""
        raise NotImplementedError


class RealStack(Server):
    name = "stack"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/prices/"

    def start_stack(self, *, tick_rate: float, extra_env: dict[str, str]) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("REDIS_URL", "DATABASE_URL", "REDIS_PREFIX", "VIRTUAL_ENV")
        }
        env.update(
            {
                "HOST": "127.0.0.1",
                "PORT": str(self.port),
                # No REDIS_URL: the launcher starts its own redis-server on a free port.
                "DATABASE_URL": f"sqlite:///{self.workdir / 'db.sqlite3'}",
                "TICKER_VAR_DIR": str(self.workdir),
                "REDIS_PREFIX": f"bench-{uuid.uuid4().hex[:6]}",
                "TICK_RATE": str(tick_rate),
                "DEBUG": env.get("DEBUG", "0"),
                "SECRET_KEY": env.get("SECRET_KEY", "benchmark-only-not-secret"),
                "LOG_LEVEL": env.get("LOG_LEVEL", "WARNING"),
                # Every harness client connects from 127.0.0.1 (streaming.limits).
                "WS_MAX_CONNECTIONS_PER_IP": env.get("WS_MAX_CONNECTIONS_PER_IP", "1000000"),
                "WS_MAX_CONNECTIONS": env.get("WS_MAX_CONNECTIONS", "1000000"),
                "PYTHONUNBUFFERED": "1",
                "PATH": f"{Path(PYTHON).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                **extra_env,
            }
        )
        self.env = env
        self.start(env, [PYTHON, "-m", "tickerproject.stack", "run"])

    def processes(self) -> dict[str, list[psutil.Process]]:
        roles: dict[str, list[psutil.Process]] = {"web": [], "worker": [], "beat": [], "redis": []}
        if self.proc is None:
            return roles
        try:
            tree = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return roles
        web_roots = []
        for p in tree:
            try:
                listening = any(
                    c.status == psutil.CONN_LISTEN and c.laddr.port == self.port
                    for c in p.net_connections(kind="tcp")
                )
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if listening:
                web_roots.append(p)
        web_pids: set[int] = set()
        for root in web_roots:
            # The topmost listening process and everything under it: a multi-process
            # server (several workers behind one port) counts as one web server.
            if root.pid in web_pids:
                continue
            web_pids.add(root.pid)
            try:
                web_pids.update(c.pid for c in root.children(recursive=True))
            except psutil.NoSuchProcess:
                pass
        for p in tree:
            try:
                cmd = " ".join(p.cmdline())
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if p.pid in web_pids:
                roles["web"].append(p)
            elif "redis-server" in cmd:
                roles["redis"].append(p)
            # Celery runs inside the Procfile's launcher (tickerproject.serve worker|beat).
            elif ("celery" in cmd or "tickerproject.serve" in cmd) and " beat" in cmd:
                roles["beat"].append(p)
            elif "celery" in cmd or "tickerproject.serve worker" in cmd:
                roles["worker"].append(p)
        return roles


class ReferenceServer(Server):
    name = "reference"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def start_reference(self, *, symbols: list[str], tick_rate: float) -> None:
        self.start(
            dict(os.environ),
            [PYTHON, str(BASE_DIR / "benchmarks" / "reference_server.py"),
             "--port", str(self.port), "--symbols", ",".join(symbols),
             "--tick-rate", str(tick_rate)],
        )  # fmt: skip

    def processes(self) -> dict[str, list[psutil.Process]]:
        if self.proc is None or self.proc.poll() is not None:
            return {"web": []}
        return {"web": [psutil.Process(self.proc.pid)]}


@dataclass
class Sample:
    t: float
    rss: dict[str, int]
    cpu: dict[str, float]  # cumulative user+system seconds per role


@dataclass
class Sampler:
    """Samples the server's RSS and CPU time by role while the harness runs."""

    server: Server
    interval: float = 0.5
    samples: list[Sample] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)  # phase -> first time seen
    open_at: list[tuple[float, int]] = field(default_factory=list)  # (time, open) per second

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._procs = self.server.processes()

    def sample(self) -> Sample:
        rss: dict[str, int] = {}
        cpu: dict[str, float] = {}
        for role, procs in self._procs.items():
            rss[role] = 0
            cpu[role] = 0.0
            for p in procs:
                try:
                    with p.oneshot():
                        rss[role] += p.memory_info().rss
                        times = p.cpu_times()
                        cpu[role] += times.user + times.system
                except psutil.NoSuchProcess:
                    pass
        return Sample(time.monotonic(), rss, cpu)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(self.sample())

    def start(self) -> None:
        self.samples.append(self.sample())
        self._thread.start()

    def mark(self, phase: str) -> None:
        """The harness entered ``phase``: remember when, with a sample taken right then,
        so a window that was seen to start always has a sample at its start."""
        if phase not in self.phases:
            self.samples.append(self.sample())
            self.phases[phase] = self.samples[-1].t

    def stop(self) -> None:
        """Stop sampling, with a last sample: an open window always has one at its end."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.samples.append(self.sample())
        self.samples.sort(key=lambda s: s.t)

    def process_counts(self) -> dict[str, int]:
        """How many server processes of each role the sampler found and followed."""
        return {role: len(procs) for role, procs in self._procs.items()}

    def window(self, start_phase: str, end_phase: str) -> list[Sample]:
        start = self.phases.get(start_phase)
        end = self.phases.get(end_phase, float("inf"))
        if start is None:
            return []
        return [s for s in self.samples if start <= s.t <= end]

    def cpu_share(self, start_phase: str, end_phase: str) -> dict[str, float]:
        """Per role, CPU seconds used per wall second inside the window (1.0 = a core)."""
        inside = self.window(start_phase, end_phase)
        if len(inside) < 2:
            return {}
        first, last = inside[0], inside[-1]
        wall = max(last.t - first.t, 1e-9)
        return {role: round((last.cpu[role] - first.cpu[role]) / wall, 2) for role in first.cpu}


def run_harness(
    *,
    server: Server,
    args: argparse.Namespace,
    out: Path,
    label: str,
    extra: list[str],
    timeout: float | None = None,
) -> tuple[dict, Sampler]:
    """Run ``manage.py loadtest`` against ``server``; returns its JSON report."""
    report_base = out / label
    cmd = [
        PYTHON, "manage.py", "loadtest",
        "--url", server.url, "--origin", server.origin,
        "--clients", str(args.clients),
        "--symbols-per-client", str(args.symbols_per_client),
        "--symbols", ",".join(args.symbol_list),
        "--tick-rate", str(args.tick_rate),
        "--duration", str(args.duration), "--ramp", str(args.ramp),
        "--processes", str(args.processes),
        "--report", str(report_base),
        *extra,
    ]  # fmt: skip
    if args.batch_ms is not None:
        cmd += ["--batch-ms", str(args.batch_ms)]
    if args.mode_sub != "all":
        cmd += ["--mode", args.mode_sub]
    if args.max_rate is not None:
        cmd += ["--max-rate", str(args.max_rate)]
    if args.snapshot is not None:
        cmd += ["--snapshot", str(args.snapshot)]
    # The harness is a client: the checkout's .env.dev (DEBUG, SECRET_KEY) lets it load
    # the settings wherever it runs.
    ensure_dev_env_file()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tickerproject.settings"}
    # The harness reads no database when given explicit symbols; keep it off the dev DB.
    env["DATABASE_URL"] = f"sqlite:///{out / 'harness.sqlite3'}"
    log("harness: " + " ".join(cmd[1:]))
    sampler = Sampler(server)
    sampler.start()
    (out / f"{label}.cmd").write_text(" ".join(cmd) + "\n")
    proc = subprocess.Popen(
        cmd, cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    budget = timeout or args.ramp + args.duration + 120
    timer = threading.Timer(budget, proc.kill)
    timer.start()
    profiler: subprocess.Popen | None = None
    try:
        with open(out / f"{label}.harness.log", "w") as transcript:
            for line in proc.stdout:
                transcript.write(line)
                print(f"  {label:>9} | {line}", end="", flush=True)
                match = PROGRESS_LINE.match(line)
                if match:
                    phase = match.group(2)
                    if phase not in sampler.phases and phase == "measure" and args.profile:
                        profiler = start_profiler(server, args, out / f"{label}.pyspy")
                    sampler.mark(phase)
                    sampler.open_at.append((time.monotonic(), int(match.group(3).replace(",", ""))))
        proc.wait()
    finally:
        timer.cancel()
        sampler.stop()
        if profiler is not None:
            try:
                profiler.wait(timeout=60)
            except subprocess.TimeoutExpired:
                profiler.kill()
                profiler.wait()
            summarize_profile(out / f"{label}.pyspy")
    json_path = report_base.with_name(report_base.name + ".json")
    if not json_path.exists():
        raise RuntimeError(f"the harness wrote no report (exit {proc.returncode}); see its log")
    return json.loads(json_path.read_text()), sampler


def start_profiler(server: Server, args: argparse.Namespace, base: Path) -> subprocess.Popen | None:
    """py-spy on the web server (and its worker processes) for the measurement window."""
    py_spy = shutil.which("py-spy", path=f"{Path(PYTHON).parent}{os.pathsep}{os.environ['PATH']}")
    web = server.processes().get("web") or []
    if py_spy is None or not web:
        log("profile: py-spy or the web process not found; not profiling")
        return None
    seconds = max(1, int(min(args.duration - 2, 20)))
    cmd = [
        py_spy, "record", "--pid", str(web[0].pid), "--duration", str(seconds),
        "--rate", "100", "--format", "raw", "--output", f"{base}.raw", "--subprocesses",
    ]  # fmt: skip
    log(f"profile: {' '.join(cmd[1:])}")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarize_profile(base: Path, top: int = 40) -> None:
    """Own and inclusive time per function from py-spy's collapsed stacks, as text."""
    raw = Path(str(base) + ".raw")
    if not raw.exists():
        return
    own: Counter = Counter()
    inclusive: Counter = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        # Idle pool threads waiting for work are not the server's work.
        if any("concurrent/futures/thread.py" in f for f in frames):
            continue
        n = int(count)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"{total} samples at 100 Hz (idle thread-pool workers left out)", "", "own time:"]
    lines += [f"{n / total:6.1%}  {f}" for f, n in own.most_common(top)]
    lines += ["", "inclusive time:"]
    lines += [f"{n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)]
    Path(str(base) + ".txt").write_text("\n".join(lines) + "\n")
    log(f"profile: {base}.txt")


def start_server(kind: str, args: argparse.Namespace, out: Path) -> Server:
    workdir = out / kind
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    if kind == "stack":
        server: Server = RealStack(workdir, port)
        server.start_stack(tick_rate=args.tick_rate, extra_env=dict(args.stack_env))
        budget = 90
    else:
        server = ReferenceServer(workdir, port)
        server.start_reference(symbols=args.symbol_list, tick_rate=args.tick_rate)
        budget = 20
    log(f"{kind}: starting on 127.0.0.1:{port} (log {server.log_path})")
    try:
        wait_for_port(port, budget)
        wait_for_live_tick(server.url, server.origin, args.symbol_list[0], budget)
    except Exception:
        server.stop()
        raise
    # Let start-up work (migrations, first leases, JIT of caches) settle.
    time.sleep(args.settle)
    return server


def load_row(kind: str, report: dict, sampler: Sampler) -> dict:
    tp = report["throughput"]
    lat = report["latency_ms"]
    seq = report["seq"]
    conns = report["connections"]
    return {
        "server": kind,
        "opened": conns["opened"],
        "failed": conns["failed"],
        "closed_early": conns["closed_early"],
        "expected_per_s": tp["expected_ticks_per_s"],
        "delivered_per_s": tp["delivered_ticks_per_s"],
        "delivered_ratio": tp["delivered_ratio"],
        "frames_per_s": tp["frames_per_s"],
        "p50_ms": lat["p50"],
        "p90_ms": lat["p90"],
        "p99_ms": lat["p99"],
        "max_ms": lat["max"],
        "gaps": seq["gaps"],
        "duplicates": seq["duplicates"],
        "out_of_order": seq["out_of_order"],
        "errors": report["errors"]["total"],
        "server_cpu": sampler.cpu_share("measure", "closing"),
        # What the CPU figures rest on: the processes followed, the samples in the window.
        "server_processes": sampler.process_counts(),
        "server_cpu_samples": len(sampler.window("measure", "closing")),
        "harness_cpu": report["harness"]["cpu_per_process"],
        "harness_cpu_us_per_frame": report["harness"].get("cpu_us_per_frame"),
        "harness_cpu_system_share": report["harness"].get("cpu_system_share"),
        "peak_rss_mb": {
            role: round(max(s.rss[role] for s in sampler.samples) / 2**20, 1)
            for role in sampler.samples[0].rss
        }
        if sampler.samples
        else {},
    }


def print_load_rows(rows: list[dict]) -> None:
    header = (
        f"{'server':<10} {'conns':>6} {'expected/s':>11} {'delivered/s':>12} {'ratio':>7} "
        f"{'msg/s':>9} {'p50':>7} {'p90':>7} {'p99':>8} {'max':>8} {'gaps':>6} {'dup':>4} "
        f"{'ooo':>4} {'err':>4}  server CPU (cores)  harness CPU (us/frame)"
    )
    print(header)
    for r in rows:
        ratio = "-" if r["delivered_ratio"] is None else f"{r['delivered_ratio']:.1%}"
        cpu = " ".join(f"{k}={v}" for k, v in r["server_cpu"].items())
        print(
            f"{r['server']:<10} {r['opened']:>6} {r['expected_per_s']:>11,.0f} "
            f"{r['delivered_per_s']:>12,.0f} {ratio:>7} {r['frames_per_s']:>9,.0f} "
            f"{_ms(r['p50_ms']):>7} {_ms(r['p90_ms']):>7} {_ms(r['p99_ms']):>8} "
            f"{_ms(r['max_ms']):>8} {r['gaps']:>6} {r['duplicates']:>4} {r['out_of_order']:>4} "
            f"{r['errors']:>4}  {cpu}  {r['harness_cpu']} ({_ms(r['harness_cpu_us_per_frame'])})"
        )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def run_load(args: argparse.Namespace, out: Path) -> dict:
    rows = []
    for kind in args.servers:
        server = start_server(kind, args, out)
        try:
            load = os.getloadavg()
            report, sampler = run_harness(server=server, args=args, out=out, label=kind, extra=[])
            row = load_row(kind, report, sampler)
            row["loadavg_before"] = [round(x, 2) for x in load]
            rows.append(row)
        finally:
            server.stop()
            log(f"{kind}: stopped")
    print()
    print_load_rows(rows)
    result = {"mode": "load", "rows": rows}
    by = {r["server"]: r for r in rows}
    if "stack" in by and "reference" in by and by["reference"]["delivered_per_s"]:
        ratio = by["stack"]["delivered_per_s"] / by["reference"]["delivered_per_s"]
        result["stack_over_reference"] = round(ratio, 3)
        print(f"\nthroughput stack / reference: {ratio:.3f}")
    return result


def run_idle(args: argparse.Namespace, out: Path) -> dict:
    rows = []
    args.symbols_per_client = 0
    args.clients = args.connections
    args.duration = args.hold
    for kind in args.servers:
        server = start_server(kind, args, out)
        try:
            load = os.getloadavg()
            report, sampler = run_harness(
                server=server, args=args, out=out, label=f"{kind}-idle", extra=[]
            )
            before = sampler.samples[0].rss["web"]
            # Held = from the first second with every connection that will ever open
            # open (and the window begun): some may still be opening after the ramp.
            if "measure" not in sampler.phases:
                raise RuntimeError("the harness never reached its measurement window")
            final = report["connections"]["open_at_end"]
            reached = [t for t, n in sampler.open_at if n >= final]
            sampler.phases["held"] = max(reached[0] if reached else 0, sampler.phases["measure"])
            start = "held"
            held = sampler.window(start, "closing")
            if not held:
                raise RuntimeError("the harness never reached its measurement window")
            rss = [s.rss["web"] for s in held]
            opened = report["connections"]["opened"]
            third = max(1, len(rss) // 3)
            early, late = statistics.median(rss[:third]), statistics.median(rss[-third:])
            row = {
                "server": kind,
                "connections": opened,
                "failed": report["connections"]["failed"],
                "closed_early": report["connections"]["closed_early"],
                "rss_before_mb": round(before / 2**20, 1),
                "rss_held_mb": round(statistics.median(rss) / 2**20, 1),
                "kb_per_connection": round((statistics.median(rss) - before) / 1024 / opened, 1)
                if opened
                else None,
                # Drift while held: the median of the last third against the first third.
                "drift_mb": round((late - early) / 2**20, 2),
                "hold_s": args.hold,
                "held_from_s_after_window_start": round(
                    sampler.phases["held"] - sampler.phases["measure"], 1
                ),
                "held_s": round(held[-1].t - held[0].t, 1),
                "server_cpu_idle": sampler.cpu_share("measure", "closing"),
                "loadavg_before": [round(x, 2) for x in load],
            }
            rows.append(row)
        finally:
            server.stop()
            log(f"{kind}: stopped")
    print()
    print(
        f"{'server':<10} {'conns':>6} {'failed':>6} {'closed':>6} {'RSS before':>11} "
        f"{'RSS held':>9} {'KB/conn':>8} {'drift MB':>9} {'held s':>7} {'load':>5}  "
        "server CPU while idle"
    )
    for r in rows:
        print(
            f"{r['server']:<10} {r['connections']:>6} {r['failed']:>6} {r['closed_early']:>6} "
            f"{r['rss_before_mb']:>10.1f}M {r['rss_held_mb']:>8.1f}M "
            f"{r['kb_per_connection'] or 0:>8.1f} {r['drift_mb']:>9.2f} {r['held_s']:>7.1f} "
            f"{r['loadavg_before'][0]:>5.2f}  {r['server_cpu_idle']}"
        )
    return {"mode": "idle", "rows": rows}


def run_capacity_mode(args: argparse.Namespace, out: Path) -> dict:
    """``manage.py loadtest --capacity`` against each server: the most clients it holds."""
    from loadtest.capacity import CapacityPlan, capacity_lines

    plan = CapacityPlan.parse(
        args.capacity,
        max_p99_ms=args.capacity_p99_ms,
        min_delivered_ratio=args.capacity_min_delivered,
        budget_s=args.capacity_budget,
    )
    args.clients = plan.maximum
    extra = [
        "--capacity", args.capacity,
        "--capacity-p99-ms", str(plan.max_p99_ms),
        "--capacity-min-delivered", str(plan.min_delivered_ratio),
        "--capacity-budget", str(plan.budget_s),
    ]  # fmt: skip
    rows = []
    for kind in args.servers:
        server = start_server(kind, args, out)
        try:
            load = os.getloadavg()
            result, _ = run_harness(
                server=server,
                args=args,
                out=out,
                label=f"{kind}-capacity",
                extra=extra,
                timeout=plan.budget_s + 120,
            )
            result["server"] = kind
            result["loadavg_before"] = [round(x, 2) for x in load]
            result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
            rows.append(result)
        finally:
            server.stop()
            log(f"{kind}: stopped")
    for result in rows:
        print(f"\n{result['server']} (load {result['loadavg_before'][0]} before):")
        for line in capacity_lines(result):
            print(line)
    out_result: dict = {"mode": "capacity", "rows": rows}
    by = {r["server"]: r["max_clients_held"] for r in rows}
    if by.get("stack") is not None and by.get("reference"):
        out_result["stack_over_reference"] = round(by["stack"] / by["reference"], 3)
    print("\nmost clients held: " + ", ".join(f"{k} {v}" for k, v in by.items()))
    return out_result


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in (
        "django", "channels", "channels-redis", "daphne", "twisted", "celery", "redis",
        "websockets", "uvicorn", "uvloop",
    ):  # fmt: skip
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    try:
        line = subprocess.run(
            [find_redis_server(), "--version"], capture_output=True, text=True, timeout=10
        ).stdout
        out["redis-server"] = line.split("v=")[1].split()[0] if "v=" in line else line.strip()
    except (OSError, SystemExit, subprocess.TimeoutExpired):
        pass
    try:
        # The servers run the working tree: say which commit, and whether it was edited.
        out["git"] = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=BASE_DIR, capture_output=True, text=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        pass
    procfile = (BASE_DIR / "Procfile").read_text().splitlines()
    out["procfile_web"] = next(
        (ln.split(":", 1)[1].strip() for ln in procfile if ln.startswith("web:")), ""
    )
    return out


def machine() -> dict:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def parse_env(pairs: list[str]) -> list[tuple[str, str]]:
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--stack-env wants KEY=VALUE, got {pair!r}")
        out.append((key, value))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fan-out benchmark (see the module docstring).")
    sub = parser.add_subparsers(dest="mode", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--servers", default="stack,reference", help="which to run, in order")
    common.add_argument("--symbols", type=int, default=20, help="size of the symbol set")
    common.add_argument("--tick-rate", type=float, default=10.0, help="TICK_RATE for both")
    common.add_argument("--ramp", type=float, default=10.0)
    common.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    common.add_argument("--batch-ms", type=int, default=None)
    # The harness's subscribe options (manage.py loadtest --mode/--max-rate/--snapshot).
    common.add_argument("--mode", dest="mode_sub", choices=("all", "latest"), default="all")
    common.add_argument("--max-rate", type=float, default=None)
    common.add_argument("--snapshot", type=int, default=None)
    common.add_argument("--settle", type=float, default=3.0, help="seconds after start-up")
    common.add_argument(
        "--stack-env", action="append", default=[], metavar="KEY=VALUE",
        help="extra environment for the stack (repeatable), e.g. CHANNEL_LAYER=pubsub",
    )  # fmt: skip
    common.add_argument("--out", default=None, help="directory for reports and logs")
    common.add_argument(
        "--profile", action="store_true", help="py-spy the web server during the window"
    )
    load = sub.add_parser("load", parents=[common], help="throughput and latency under load")
    load.add_argument("--clients", type=int, default=1000)
    load.add_argument("--symbols-per-client", type=int, default=5)
    load.add_argument("--duration", type=float, default=30.0)
    capacity = sub.add_parser(
        "capacity", parents=[common], help="the most clients held at a p99 and delivery"
    )
    capacity.add_argument(
        "--capacity", default="100:100:1000", metavar="START:STEP:MAX", help="client counts"
    )
    capacity.add_argument("--symbols-per-client", type=int, default=5)
    capacity.add_argument("--duration", type=float, default=10.0, help="window of each step")
    capacity.add_argument("--capacity-p99-ms", type=float, default=100.0)
    capacity.add_argument("--capacity-min-delivered", type=float, default=0.99)
    capacity.add_argument(
        "--capacity-budget", type=float, default=600.0, help="seconds for all steps, per server"
    )
    capacity.set_defaults(ramp=5.0)
    idle = sub.add_parser("idle", parents=[common], help="memory per idle connection")
    idle.add_argument("--connections", type=int, default=5000)
    idle.add_argument("--hold", type=float, default=30.0, help="seconds the clients are held")
    args = parser.parse_args(argv)

    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if not set(args.servers) <= {"stack", "reference"} or not args.servers:
        parser.error("--servers takes stack and/or reference")
    args.stack_env = parse_env(args.stack_env)
    universe = sorted(i.ticker for i in DEFAULT_UNIVERSE)
    if not 1 <= args.symbols <= len(universe):
        parser.error(f"--symbols must be 1..{len(universe)}")
    # The same list for both servers: the first N of the seeded universe, by ticker.
    args.symbol_list = universe[: args.symbols]

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out or BASE_DIR / "var" / "benchmarks" / f"{args.mode}-{stamp}")
    out.mkdir(parents=True, exist_ok=True)
    nofile = raise_open_files_limit()
    info = {"machine": machine(), "versions": versions(), "argv": sys.argv, "nofile": nofile}
    log(f"output in {out}; open-files limit {nofile}")
    log(f"machine {info['machine']}")
    log(f"versions {info['versions']}")
    started = time.monotonic()
    modes = {"load": run_load, "idle": run_idle, "capacity": run_capacity_mode}
    result = modes[args.mode](args, out)
    result.update(info)
    result["wall_s"] = round(time.monotonic() - started, 1)
    (out / "fanout.json").write_text(json.dumps(result, indent=2) + "\n")
    log(f"results in {out / 'fanout.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
