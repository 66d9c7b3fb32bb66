"""Flood benchmark: healthy clients' latency while one client floods commands (issue 9).

    python benchmarks/flood.py [--clients 100 --symbols-per-client 2 --symbols 20
                                --tick-rate 10 --duration 15 --ramp 5 --out DIR]

Starts the real stack once, as ``make run`` does (benchmarks/fanout.py's RealStack:
embedded redis-server, the Procfile's web server, Celery worker and beat), then runs the
load-test harness (``manage.py loadtest``) against it five times, each a window of
--duration seconds, flood windows between baselines:

1. ``baseline1``: the healthy clients alone;
2. ``pings``: the same, while one client (tests/flooder.py, its own process, at
   --nice 19 so that it stands for a client on another machine) sends
   pings as fast as its socket takes them, for the whole window: it is closed with 1008
   after WS_FLOOD_CLOSE_SECONDS and reconnects at once to flood again;
3. ``baseline2``, 4. ``churn`` (subscribe/unsubscribe churn instead of pings), 5. ``baseline3``.

It prints one row per window (p50/p90/p99/max, gaps, the flooder's connections, close
codes and rate_limited errors, and the load average at the start of the window) and
the ratio of each flood window's p99 to the mean p99 of the baselines on either side
(the machine drifts); the goal is 1.2x or less.
Everything listens on 127.0.0.1; every process started here is stopped here, by PID.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import fanout  # noqa: E402

BASE_DIR = fanout.BASE_DIR
PYTHON = fanout.PYTHON


def log(message: str) -> None:
    print(f"[flood {datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


def start_flooder(
    server: fanout.Server, mode: str, seconds: float, out: Path, args_nice: int
) -> subprocess.Popen:
    # At the lowest priority: it stands for a client on another machine, whose CPU is
    # not the server's (on one small box it would otherwise compete for the cores).
    cmd = ["nice", "-n", str(args_nice), PYTHON, "-m", "tests.flooder", server.url,
           server.origin, mode, "--seconds", str(seconds), "--reconnect"]  # fmt: skip
    log(f"flooder: {mode} for {seconds:.0f} s")
    return subprocess.Popen(
        cmd, cwd=BASE_DIR, stdout=open(out / f"flooder-{mode}.json", "w"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip


def window(server, args, out: Path, label: str, flood: str | None) -> dict:
    load = os.getloadavg()
    flooder = None
    if flood is not None:
        # Floods through the ramp and the whole measured window, and a little past it.
        flooder = start_flooder(server, flood, args.ramp + args.duration + 5, out, args.nice)
    try:
        report, sampler = fanout.run_harness(
            server=server, args=args, out=out, label=label, extra=[]
        )
    finally:
        flood_result: dict = {}
        if flooder is not None:
            try:
                flooder.wait(timeout=60)
            except subprocess.TimeoutExpired:
                flooder.kill()
                flooder.wait()
            text = (out / f"flooder-{flood}.json").read_text().strip().splitlines()
            try:
                flood_result = json.loads(text[-1]) if text else {}
            except ValueError:
                flood_result = {"error": text[-1][:300]}
    row = fanout.load_row(label, report, sampler)
    row["loadavg_at_start"] = [round(x, 2) for x in load]
    if flood_result:
        row["flooder"] = {k: v for k, v in flood_result.items() if k != "runs"}
    return row


def print_rows(rows: list[dict]) -> None:
    print(
        f"{'window':<10} {'conns':>6} {'ratio':>7} {'p50':>7} {'p90':>7} {'p99':>8} "
        f"{'max':>8} {'gaps':>5} {'web CPU':>8}  load avg      flooder"
    )
    for r in rows:
        ratio = "-" if r["delivered_ratio"] is None else f"{r['delivered_ratio']:.1%}"
        f = r.get("flooder") or {}
        codes = sorted(set(f.get("close_codes") or []), key=str)
        flood = (
            f"{f.get('connections')} conns, closes {codes}, "
            f"{f.get('rate_limited_errors')} rate_limited, {f.get('sent', 0):,} frames sent"
            if f
            else "-"
        )
        print(
            f"{r['server']:<10} {r['opened']:>6} {ratio:>7} {fanout._ms(r['p50_ms']):>7} "
            f"{fanout._ms(r['p90_ms']):>7} {fanout._ms(r['p99_ms']):>8} "
            f"{fanout._ms(r['max_ms']):>8} {r['gaps']:>5} {r['server_cpu'].get('web', 0):>8}  "
            f"{' '.join(str(x) for x in r['loadavg_at_start'])}  {flood}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Flood benchmark (see the module docstring).")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--symbols-per-client", type=int, default=2)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--tick-rate", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--ramp", type=float, default=5.0)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--flood-close-seconds", type=float, default=10.0)
    parser.add_argument("--nice", type=int, default=19, help="the flooder's niceness (0: none)")
    parser.add_argument(
        "--windows", default="baseline1,pings,baseline2,churn,baseline3",
        help="which windows, in order (baseline*, pings, churn)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.symbol_list = [i.ticker for i in fanout.DEFAULT_UNIVERSE[: args.symbols]]
    args.batch_ms = None
    args.mode_sub = "all"
    args.max_rate = None
    args.snapshot = None
    args.profile = False
    # The harness's clients all come from 127.0.0.1 (fanout.py raises the caps); the
    # flooder is one connection at a time.
    args.stack_env = [("WS_FLOOD_CLOSE_SECONDS", str(args.flood_close_seconds))]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or BASE_DIR / "var" / "bench" / f"flood-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    fanout.raise_open_files_limit()
    # The harness (manage.py) imports the settings, which need a key when DEBUG is off.
    os.environ.setdefault("SECRET_KEY", "benchmark-only-not-secret")
    meta = {"machine": fanout.machine(), "versions": fanout.versions(), "args": vars(args)}
    log(f"writing to {out}")
    server = fanout.start_server("stack", args, out)
    rows = []
    try:
        for label in args.windows.split(","):
            flood = None if label.startswith("baseline") else label
            rows.append(window(server, args, out, label, flood))
            time.sleep(3)
    finally:
        server.stop()
    print_rows(rows)
    # Each flood window against the baseline windows around it: the machine drifts.
    ratios = {}
    for i, r in enumerate(rows):
        if r["server"].startswith("baseline") or r["p99_ms"] is None:
            continue
        around = [
            b["p99_ms"]
            for b in (rows[i - 1] if i else None, rows[i + 1] if i + 1 < len(rows) else None)
            if b is not None and b["server"].startswith("baseline") and b["p99_ms"]
        ]
        if around:
            ratios[r["server"]] = round(r["p99_ms"] / (sum(around) / len(around)), 2)
    print("p99 / mean p99 of the baselines around it: " + ", ".join(
        f"{k} {v}x" for k, v in ratios.items()
    ))  # fmt: skip
    (out / "flood.json").write_text(
        json.dumps({**meta, "rows": rows, "p99_ratio": ratios}, indent=2, default=str) + "\n"
    )
    log(f"report: {out / 'flood.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
