"""Order-book benchmark (issue 21): books beside ticks, on one real stack, in one run.

    python benchmarks/books.py [--clients 1000 --symbols-per-client 5 --symbols 20
                                --tick-rate 10 --depth 10 --duration 20 --ramp 10
                                --more-clients 2000]

Starts the project's real stack once (as ``make run`` does; fanout.py's RealStack), then
runs the load-test harness against it, one run after the other, same clients and symbols:

1. ``ticks``: every client subscribes to ticks only (the tick-only figure);
2. ``books``: the same clients subscribe to ticks *and* books at ``--depth``; the harness
   checks every book message (prev_seq, checksum; loadtest/books.py);
3. ``books-N`` (with ``--more-clients N``): the same at N clients (the issue's "no book
   older than 1 s at 2,000 clients").

It prints, per run: delivered ticks/s and p99, book updates/s, checksum failures,
prev_seq breaks, the oldest book a client held when an update arrived, bytes per
update, the web process's CPU; and the web CPU per delivered book update (the books
run's CPU minus the ticks run's, over the book updates delivered) against the CPU per
delivered tick (the ticks run's CPU over its ticks). Then what the books hold in Redis
(MEMORY USAGE of the book hashes and update logs). Everything on 127.0.0.1; every
process started here is stopped here, by PID.
"""

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fanout
import psutil


def redis_port(server: "fanout.RealStack") -> int | None:
    for proc in server.processes()["redis"]:
        try:
            cmd = proc.cmdline()
        except psutil.Error:
            continue
        for i, part in enumerate(cmd):
            if part == "--port" and i + 1 < len(cmd):
                return int(cmd[i + 1])
            if ":" in part and part.rsplit(":", 1)[1].isdigit():
                return int(part.rsplit(":", 1)[1])
    return None


def redis_book_memory(port: int, prefix: str) -> dict:
    """Bytes Redis holds for the books (MEMORY USAGE), by kind, and per symbol."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    kinds: dict[str, list[int]] = {"book": [], "booklog": []}
    for kind in kinds:
        for key in client.scan_iter(match=f"{prefix}:{kind}:*", count=1000):
            kinds[kind].append(client.memory_usage(key, samples=0) or 0)
    out = {
        kind: {
            "keys": len(sizes),
            "bytes": sum(sizes),
            "per_symbol": round(sum(sizes) / len(sizes)),
        }
        for kind, sizes in kinds.items()
        if sizes
    }
    out["used_memory"] = client.info("memory").get("used_memory")
    return out


def run_one(server, args, out: Path, label: str, streams: str, clients: int) -> dict:
    args.clients = clients
    extra = ["--streams", streams]
    if "book" in streams:
        extra += ["--depth", str(args.depth)]
    load = os.getloadavg()
    report, sampler = fanout.run_harness(
        server=server, args=args, out=out, label=label, extra=extra
    )
    row = fanout.load_row(label, report, sampler)
    row["loadavg_before"] = [round(x, 2) for x in load]
    row["clients"] = clients
    row["streams"] = streams
    row["books"] = report.get("books")
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Order-book benchmark (see the docstring).")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--more-clients", type=int, default=None)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--symbols-per-client", type=int, default=5)
    parser.add_argument("--tick-rate", type=float, default=10.0)
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--ramp", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    # What fanout.run_harness and start_server read.
    args.batch_ms = None
    args.mode_sub = "all"
    args.max_rate = None
    args.snapshot = 0  # live delivery is measured, not 300-tick snapshots
    args.profile = False
    args.stack_env = []
    universe = sorted(i.ticker for i in fanout.DEFAULT_UNIVERSE)
    args.symbol_list = universe[: args.symbols]

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out or fanout.BASE_DIR / "var" / "benchmarks" / f"books-{stamp}")
    out.mkdir(parents=True, exist_ok=True)
    fanout.raise_open_files_limit()
    fanout.log(f"output in {out}; machine {fanout.machine()}")
    started = time.monotonic()
    server = fanout.start_server("stack", args, out)
    rows = []
    try:
        rows.append(run_one(server, args, out, "ticks", "ticks", args.clients))
        rows.append(run_one(server, args, out, "books", "ticks,book", args.clients))
        if args.more_clients:
            label = f"books-{args.more_clients}"
            rows.append(run_one(server, args, out, label, "ticks,book", args.more_clients))
        port = redis_port(server)
        memory = redis_book_memory(port, server.env["REDIS_PREFIX"]) if port else {}
    finally:
        server.stop()
        fanout.log("stack: stopped")

    ticks, books = rows[0], rows[1]
    web_ticks = ticks["server_cpu"].get("web", 0.0)
    web_books = books["server_cpu"].get("web", 0.0)
    per_tick_us = web_ticks / ticks["delivered_per_s"] * 1e6 if ticks["delivered_per_s"] else None
    updates = (books["books"] or {}).get("updates_per_s") or 0
    per_update_us = (web_books - web_ticks) / updates * 1e6 if updates else None
    result = {
        "mode": "books",
        "rows": rows,
        "redis_book_memory": memory,
        "web_cpu_us_per_tick": round(per_tick_us, 2) if per_tick_us else None,
        "web_cpu_us_per_book_update": round(per_update_us, 2) if per_update_us else None,
        "book_over_tick": round(per_update_us / per_tick_us, 2)
        if per_tick_us and per_update_us
        else None,
        "machine": fanout.machine(),
        "versions": fanout.versions(),
        "argv": sys.argv,
        "wall_s": round(time.monotonic() - started, 1),
    }
    print()
    for r in rows:
        b = r["books"] or {}
        age = (b.get("age_ms") or {}) if b.get("snapshots") else {}
        print(
            f"{r['server']:<11} clients {r['clients']:>5}  ticks {r['delivered_per_s']:>9,.0f}/s "
            f"({r['delivered_ratio']:.1%}) p99 {fanout._ms(r['p99_ms'])} ms  gaps {r['gaps']}  "
            f"book updates {b.get('updates_per_s', 0):>9,}/s  bytes/update "
            f"{b.get('bytes_per_update')}  checksum failures {b.get('checksum_failures', 0)}  "
            f"prev_seq breaks {b.get('prev_seq_breaks', 0)}  book age p99/max "
            f"{age.get('p99')}/{age.get('max')} ms  web CPU {r['server_cpu'].get('web')}  "
            f"load before {r['loadavg_before']}"
        )
    print(
        f"web CPU per delivered tick {result['web_cpu_us_per_tick']} us, per delivered book "
        f"update {result['web_cpu_us_per_book_update']} us (x{result['book_over_tick']})"
    )
    print(f"Redis memory of books: {json.dumps(memory)}")
    (out / "books.json").write_text(json.dumps(result, indent=2) + "\n")
    fanout.log(f"results in {out / 'books.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
