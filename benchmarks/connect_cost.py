"""Connect cost: the web process's CPU time per connection in a connect storm.

    python benchmarks/connect_cost.py [--connections 500 --rate 250 --symbols-per-client 5
                                       --servers stack,reference --rounds 2]

For each server (the real stack as ``make run`` starts it, and
benchmarks/reference_server.py), one after the other: wait for a live tick, then open
``--connections`` WebSockets at ``--rate`` per second, each sending one ``subscribe``
for ``--symbols-per-client`` random symbols with ``"snapshot": 0`` and waiting for its
``subscribed`` reply; then close them all. The figure is the CPU time (user + system,
psutil) the server's web processes spent from the first connect to the last reply,
divided by the number of connections; the close phase is reported apart. Ticks run at
``--tick-rate`` (default 0.2/s per symbol) so that delivery adds next to nothing. The
client's own CPU per connection is reported too: it shares the machine's two cores.

CPU time, unlike latency, hardly depends on what else runs on the machine, but cache
and frequency effects do: compare rows of one run only. Everything listens on
127.0.0.1; every process started here is stopped here, by PID.
"""

import argparse
import asyncio
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import psutil

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR / "benchmarks"))
sys.path.insert(0, str(BASE_DIR))

from fanout import (  # noqa: E402
    DEFAULT_UNIVERSE,
    RealStack,
    ReferenceServer,
    free_port,
    log,
    raise_open_files_limit,
    wait_for_live_tick,
    wait_for_port,
)


def web_cpu(server) -> float:
    total = 0.0
    for p in server.processes()["web"]:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def storm(url: str, origin: str, *, n: int, rate: float, symbols: list[str], per: int):
    from websockets.asyncio.client import connect

    rng = random.Random(7)
    conns = []

    async def one(i: int) -> None:
        await asyncio.sleep(i / rate)
        ws = await connect(url, origin=origin, max_queue=None, open_timeout=60)
        conns.append(ws)
        wanted = rng.sample(symbols, per)
        await ws.send(json.dumps({"action": "subscribe", "symbols": wanted, "snapshot": 0}))
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if msg.get("type") == "subscribed":
                return

    await asyncio.gather(*(one(i) for i in range(n)))
    return conns


async def close_all(conns) -> None:
    await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)


def run_round(server, args, symbols) -> dict:
    async def go() -> dict:
        cpu0, me0, t0 = web_cpu(server), self_cpu(), time.monotonic()
        conns = await storm(
            server.url, server.origin, n=args.connections, rate=args.rate,
            symbols=symbols, per=args.symbols_per_client,
        )  # fmt: skip
        cpu1, me1, t1 = web_cpu(server), self_cpu(), time.monotonic()
        await close_all(conns)
        await asyncio.sleep(1.0)  # the server finishes its disconnects
        cpu2 = web_cpu(server)
        return {
            "connections": len(conns),
            "storm_s": round(t1 - t0, 2),
            "web_ms_per_connect": round((cpu1 - cpu0) * 1000 / len(conns), 3),
            "web_ms_per_close": round((cpu2 - cpu1) * 1000 / len(conns), 3),
            "client_ms_per_connect": round((me1 - me0) * 1000 / len(conns), 3),
        }

    return asyncio.run(go())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/connect_cost.py")
    parser.add_argument("--servers", default="stack,reference")
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--rate", type=float, default=250.0, help="connects per second")
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--symbols-per-client", type=int, default=5)
    parser.add_argument("--tick-rate", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the stack")
    args = parser.parse_args(argv)
    raise_open_files_limit()
    symbols = [s.ticker for s in DEFAULT_UNIVERSE][: args.symbols]
    extra_env = dict(pair.split("=", 1) for pair in args.env)
    results = []
    with tempfile.TemporaryDirectory(prefix="connect-cost-") as tmp:
        for kind in args.servers.split(","):
            workdir = Path(tmp) / kind
            workdir.mkdir()
            port = free_port()
            if kind == "stack":
                server = RealStack(workdir, port)
                server.start_stack(tick_rate=args.tick_rate, extra_env=extra_env)
            else:
                server = ReferenceServer(workdir, port)
                server.start_reference(symbols=symbols, tick_rate=args.tick_rate)
            try:
                wait_for_port(port, timeout=120)
                wait_for_live_tick(server.url, server.origin, symbols[0], timeout=120)
                for i in range(args.rounds):
                    load = os.getloadavg()[0]
                    row = {"server": kind, "round": i + 1, **run_round(server, args, symbols),
                           "load_1m": round(load, 2)}  # fmt: skip
                    log(json.dumps(row))
                    results.append(row)
            finally:
                server.stop()
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
