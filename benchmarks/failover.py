"""How long live prices stop when the Redis primary dies under Sentinel (issue 22).

    python benchmarks/failover.py [--rounds 5] [--bound 5] [--tick-rate 10]

A primary, a replica and three sentinels (tests/sentinel_group.py: the launcher's
redis-server, down-after-milliseconds 1000, failover-timeout 3000) and the real stack
on them through REDIS_SENTINELS (uvicorn, a Celery worker and beat), all on 127.0.0.1.
A client holds one WebSocket open on four symbols all along (tests.feeds_helpers's
ResumingClient: it resumes with ``since`` if the server ever closes it). Each round:

1. SIGKILL the primary;
2. **promotion**: the replica says it is a primary and a sentinel names it;
3. **first live tick** on the open connection: the first tick received whose ``ts`` is
   after the kill (it was published through the new primary); on a **new connection**
   opened at the promotion: its first tick stamped after the promotion;
4. /api/health/ (polled every 50 ms all along) said 503 during the outage, and when it
   answers 200 again;
5. once the sentinels have settled, the old primary restarts as the new one's replica
   (docs/deployment.md, "Redis Sentinel"), so the next round kills the other node.

Reports each round with the load average, and the worst; exits 1 if any round's
promotion -> first live tick on the open connection exceeds ``--bound`` seconds (the
issue's 5 s). Figures: benchmarks/RESULTS.md, "Redis Sentinel failover".
"""

import argparse
import asyncio
import contextlib
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SYMBOLS = ["BTC-USD", "ETH-USD", "EUR-USD", "AAPL"]
DEADLINE = 60.0


async def until(predicate, what: str, timeout: float = DEADLINE) -> float:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(0.01)
    return time.monotonic()


class HealthWatch:
    """Polls /api/health/ every 50 ms and keeps (time.monotonic(), status) of each answer."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: list[tuple[float, int]] = []
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        import httpx

        async with httpx.AsyncClient(timeout=5) as client:
            while True:
                try:
                    status = (await client.get(self.url)).status_code
                except httpx.HTTPError:
                    status = 0
                self.seen.append((time.monotonic(), status))
                await asyncio.sleep(0.05)

    def first(self, after: float, ok: bool) -> float | None:
        """When it first answered 200 (``ok``) or anything else, after ``after``."""
        return next((t for t, s in self.seen if t > after and (s == 200) == ok), None)

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def until_ok_since(health: HealthWatch, since: float) -> float:
    return await until(lambda: health.first(since, ok=True), "health ok")


async def new_connection_tick(stack, after_ms: float) -> float:
    """Connect, subscribe; when the first tick stamped after ``after_ms`` arrived."""
    from websockets.asyncio.client import connect

    async with asyncio.timeout(DEADLINE):
        while True:
            try:
                async with connect(stack.ws_url, origin=stack.origin) as ws:
                    await ws.send(json.dumps({"action": "subscribe", "symbols": SYMBOLS[:1]}))
                    async for raw in ws:
                        msg = json.loads(raw)
                        if msg["type"] == "tick" and msg["ts"] > after_ms:
                            return time.monotonic()
            except OSError:
                await asyncio.sleep(0.1)


def first_tick_after(client, killed_ms: float) -> float | None:
    """When ``client`` received its first tick of any symbol stamped after the kill."""
    times = [t[2] for ticks in client.ticks.values() for t in ticks if t[1] > killed_ms]
    return min(times) if times else None


async def one_round(group, stack, client, health, victim: str, survivor: str) -> dict:
    load = os.getloadavg()[0]
    killed_at, killed_ms = time.monotonic(), time.time() * 1000
    group.kill(victim)
    promoted_at = await asyncio.to_thread(group.wait_promoted, survivor, DEADLINE)
    promoted_ms = killed_ms + (promoted_at - killed_at) * 1000
    new_conn = asyncio.create_task(new_connection_tick(stack, promoted_ms))
    live_at = await until(
        lambda: first_tick_after(client, killed_ms) is not None, "a live tick on the open one"
    )
    live_at = first_tick_after(client, killed_ms)
    new_at = await new_conn
    healthy_at = await until(lambda: health.first(promoted_at, ok=True), "health ok again")
    healthy_at = health.first(promoted_at, ok=True)
    degraded_at = health.first(killed_at, ok=False)
    await asyncio.to_thread(group.wait_settled, survivor, [], DEADLINE)
    group.rejoin(victim)
    await asyncio.to_thread(group.wait_settled, survivor, [victim], DEADLINE)
    group.synced(victim)
    return {
        "load": load,
        "promotion": promoted_at - killed_at,
        "live_open": live_at - promoted_at,
        "live_new": new_at - promoted_at,
        "kill_to_live": live_at - killed_at,
        "health_ok": healthy_at - promoted_at,
        "degraded": (degraded_at - killed_at) if degraded_at and degraded_at < healthy_at else None,
    }


async def run(args: argparse.Namespace) -> list[dict]:
    from tests.feeds_helpers import ResumingClient
    from tests.realstack import real_stack
    from tests.sentinel_group import sentinel_group

    rounds = []
    with (
        contextlib.nullcontext(args.workdir)
        if args.workdir
        else tempfile.TemporaryDirectory(prefix="failover-bench-") as tmp,
        sentinel_group(Path(tmp) / "redis") as group,
        real_stack(
            Path(tmp),
            REDIS_URL="",
            REDIS_SENTINELS=group.sentinels_env,
            TICK_RATE=str(args.tick_rate),
        ) as stack,
    ):
        client = ResumingClient(stack.ws_url, stack.origin, SYMBOLS)
        health = HealthWatch(f"{stack.http_url}/api/health/")
        try:
            started = time.monotonic()
            await until(
                lambda: all(t and t[-1][2] > started for t in client.ticks.values()),
                "live ticks before the first kill",
            )
            await until(lambda: health.first(started, ok=True), "health ok before the first kill")
            for n in range(1, args.rounds + 1):
                victim, survivor = group.current_roles()
                result = await one_round(group, stack, client, health, victim, survivor)
                rounds.append(result)
                degraded = None if result["degraded"] is None else round(result["degraded"], 2)
                print(
                    f"round {n}: load {result['load']:.1f}; kill -> promotion "
                    f"{result['promotion']:.2f} s; promotion -> first live tick: open "
                    f"connection {result['live_open']:.2f} s, new one {result['live_new']:.2f} s;"
                    f" kill -> live {result['kill_to_live']:.2f} s; health degraded "
                    f"{degraded} s after the kill, ok {result['health_ok']:.2f} s after the "
                    "promotion",
                    flush=True,
                )
                await until_ok_since(health, time.monotonic())
            print(f"open connection: closes {client.closes}, resets {len(client.resets)}")
        finally:
            await health.close()
            await client.close()
    return rounds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bound", type=float, default=5.0, help="promotion -> live, seconds")
    parser.add_argument("--tick-rate", type=float, default=10.0)
    parser.add_argument("--workdir", help="keep every process's log here (a new folder)")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tickerproject.settings")
    sys.path.insert(0, str(BASE_DIR))
    from tickerproject.env import ensure_dev_env_file

    ensure_dev_env_file()  # the settings need the checkout's .env.dev (SECRET_KEY)
    import django

    django.setup()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    rounds = asyncio.run(run(args))
    print(f"\n{len(rounds)} rounds on {os.cpu_count()} CPUs, TICK_RATE={args.tick_rate:g}")
    for key, name in [
        ("promotion", "kill -> promotion"),
        ("live_open", "promotion -> first live tick, open connection"),
        ("live_new", "promotion -> first live tick, new connection"),
        ("kill_to_live", "kill -> first live tick, open connection"),
        ("health_ok", "promotion -> health ok"),
    ]:
        values = [r[key] for r in rounds]
        print(
            f"{name:<48} median {statistics.median(values):.2f} s, "
            f"min {min(values):.2f}, max {max(values):.2f}"
        )
    missed = [n for n, r in enumerate(rounds, 1) if r["degraded"] is None]
    if missed:
        print(f"FAIL: health never said degraded during the outage of round(s) {missed}")
        return 1
    worst = max(r["live_open"] for r in rounds)
    if worst > args.bound:
        print(f"FAIL: promotion -> first live tick reached {worst:.2f} s > {args.bound:g} s")
        return 1
    print(f"ok: promotion -> first live tick at most {worst:.2f} s <= {args.bound:g} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
