"""What ``WAIT 1`` would cost per publish batch, against a real replica (issue 22).

    python benchmarks/wait_cost.py [--batches 2000 --symbols 20]

Starts a primary and a replica (``redis-server --replicaof``) on free ports of
127.0.0.1, runs the real publish script (markets.publishing, through TickPublisher, as
the feed does: one batch = one tick of each of ``--symbols`` symbols) ``--batches``
times, and then again with ``WAIT 1 <timeout>`` sent on the same connection right after
each script call (WAIT only counts the writes of its own connection). Reports the
median, p99 and mean wall time per batch of each, on one client connection, and the
batches a second. Both servers are stopped here, by PID.
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from tickerproject.stack import find_redis_server, free_port, wait_for_port  # noqa: E402

UNACKED: list[int] = []


def start(binary: str, port: int, workdir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", str(workdir), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )  # fmt: skip


async def measure(batches: int, symbols: int, wait_ms: int | None) -> list[float]:
    import redis.asyncio as aioredis

    from markets.publishing import TickPublisher
    from markets.redis import redis_client
    from markets.ticks import TickDraft

    publisher = TickPublisher.unfenced_for_tests()
    client = redis_client()
    names = [f"SYM{i}" for i in range(symbols)]
    # One connection for both the script and WAIT: the publisher's calls go through it.
    conn_client = aioredis.Redis(
        connection_pool=client.connection_pool, single_connection_client=True
    )
    import markets.publishing as publishing

    real_for = publishing.redis_for
    publishing.redis_for = lambda symbol: conn_client
    times = []
    try:
        for i in range(batches):
            drafts = [TickDraft(s, 100.0 + i % 7, 99.0, 101.0, 1.0) for s in names]
            t0 = time.perf_counter()
            await publisher._run_script(drafts, int(time.time() * 1000))
            if wait_ms is not None:
                if int(await conn_client.execute_command("WAIT", 1, wait_ms)) < 1:
                    UNACKED.append(i)  # the timeout passed first: the write stands anyway
            times.append(time.perf_counter() - t0)
    finally:
        publishing.redis_for = real_for
        await conn_client.aclose()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--wait-timeout-ms", type=int, default=100)
    args = parser.parse_args()
    binary = find_redis_server()
    primary_port, replica_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        primary = start(binary, primary_port, Path(tmp))
        (Path(tmp) / "r").mkdir()
        replica = start(binary, replica_port, Path(tmp) / "r", "--replicaof", "127.0.0.1",
                        str(primary_port))  # fmt: skip
        try:
            wait_for_port(primary_port, timeout=10)
            wait_for_port(replica_port, timeout=10)
            os.environ["REDIS_URL"] = f"redis://127.0.0.1:{primary_port}/0"
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tickerproject.settings")
            import django

            django.setup()
            import redis

            r = redis.Redis(port=replica_port)
            deadline = time.monotonic() + 20
            while r.info("replication").get("master_link_status") != "up":
                assert time.monotonic() < deadline, "the replica never linked"
                time.sleep(0.1)

            async def run():
                await measure(200, args.symbols, None)  # warm-up: script load, caches
                plain = await measure(args.batches, args.symbols, None)
                waited = await measure(args.batches, args.symbols, args.wait_timeout_ms)
                return plain, waited

            plain, waited = asyncio.run(run())
        finally:
            for proc in (replica, primary):
                proc.terminate()
                proc.wait(timeout=10)
    for name, times in [("script", plain), (f"script + WAIT 1 {args.wait_timeout_ms}", waited)]:
        ms = sorted(t * 1000 for t in times)
        median, p99, mean = statistics.median(ms), ms[int(len(ms) * 0.99)], statistics.fmean(ms)
        print(
            f"{name:28} median {median:.3f} ms  p99 {p99:.3f} ms  mean {mean:.3f} ms  "
            f"({1000 / mean:,.0f} batches/s)"
        )
    print(
        f"one batch = {args.symbols} ticks; {len(UNACKED)} of {args.batches} WAITs timed out "
        f"unacknowledged; load {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
