"""A real Redis failover under the real stack: SIGKILL the primary of a Sentinel group.

A primary, a replica and three sentinels (tests/sentinel_group.py, the launcher's own
redis-server binary), and the stack on them through REDIS_SENTINELS alone: the web
server's channel layer and market clients, a Celery worker (its broker and its feed
loop) and beat. The primary is killed; after the sentinels promote the replica:

- the connection open since before the kill gets live ticks again (on itself or on its
  documented reconnect, resuming with ``since``), and a new connection gets live ticks;
- the worker goes on producing, and takes beat's tasks from the new primary's broker;
- /api/health/ said degraded (naming Redis) during the outage and says ok after;
- once the sentinels have settled, the old primary restarted as the replica of the new
  one, at replica-priority 0 until its sync is done (docs/deployment.md, "Redis
  Sentinel"), rejoins, and all of the above still holds.

The kill -> promotion -> first live tick figures are printed; the time bound on them is
checked by benchmarks/failover.py, not here: every wait below is a deadline for a
loaded machine, not a claim about speed.
"""

import asyncio
import json
import time

import httpx
import pytest

from tests.feeds_helpers import ResumingClient
from tests.realstack import real_stack
from tests.sentinel_group import sentinel_group

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SYMBOLS = ["BTC-USD", "ETH-USD", "EUR-USD", "AAPL"]
TICK_RATE = 10
DEADLINE = 60.0  # for anything to happen on a loaded machine


async def until(predicate, what: str, timeout: float = DEADLINE, every: float = 0.05) -> float:
    """Await ``predicate()`` (sync); the time.monotonic() it first held."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s"
        await asyncio.sleep(every)
    return time.monotonic()


class HealthWatch:
    """Polls /api/health/ (full report: the test runs on loopback) and keeps each answer."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: list[tuple[float, int, list[str]]] = []  # (monotonic, status, problems)
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            while True:
                try:
                    reply = await client.get(self.url)
                    self.seen.append(
                        (time.monotonic(), reply.status_code, reply.json().get("problems", []))
                    )
                except (httpx.HTTPError, ValueError) as exc:
                    self.seen.append((time.monotonic(), 0, [repr(exc)]))
                await asyncio.sleep(0.1)

    def ok_since(self, since: float) -> bool:
        return any(at > since and status == 200 for at, status, _ in self.seen)

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def first_live_tick(stack, symbol: str, after_ms: float) -> float:
    """Open a new connection, subscribe to ``symbol``; when its first tick stamped after
    ``after_ms`` arrived (time.monotonic())."""
    from websockets.asyncio.client import connect

    async with asyncio.timeout(DEADLINE):
        while True:
            try:
                async with connect(stack.ws_url, origin=stack.origin) as ws:
                    await ws.send(json.dumps({"action": "subscribe", "symbols": [symbol]}))
                    async for raw in ws:
                        msg = json.loads(raw)
                        if msg["type"] == "tick" and msg["ts"] > after_ms:
                            return time.monotonic()
            except OSError:
                await asyncio.sleep(0.2)


def run_feed_received(stack) -> int:
    """How many of beat's run_feed tasks the worker's consumer has taken from the broker:
    run, or discarded as expired (beat's expire after FEED_SUPERVISE_SECONDS, and those
    queued while the consumer was still reconnecting are)."""
    return sum(
        1
        for line in stack.log("worker1").splitlines()
        if "feeds.tasks.run_feed[" in line
        and ("received" in line or "Discarding revoked task" in line)
    )


def live_after(client: ResumingClient, at: float) -> bool:
    """Every symbol has a tick received by ``client`` after time.monotonic() ``at``."""
    return all(ticks and ticks[-1][2] > at for ticks in client.ticks.values())


async def test_the_stack_survives_the_loss_of_its_redis_primary(tmp_path):
    with (
        sentinel_group(tmp_path / "redis") as group,
        real_stack(
            tmp_path,
            REDIS_URL="",
            REDIS_SENTINELS=group.sentinels_env,
            REDIS_SENTINEL_MASTER="mymaster",
            TICK_RATE=str(TICK_RATE),
        ) as stack,
    ):
        health = HealthWatch(f"{stack.http_url}/api/health/")
        client = None
        try:
            # Before: live ticks on an open connection and a healthy stack.
            client = ResumingClient(stack.ws_url, stack.origin, SYMBOLS)
            started = time.monotonic()
            await until(lambda: live_after(client, started), "live ticks before the kill")
            await until(lambda: health.ok_since(started), "health ok before the kill")

            tasks_before = run_feed_received(stack)
            killed_at = time.monotonic()
            # Whichever node the sentinels name now (a loaded machine may have failed over
            # already), the other one is promoted.
            old, new = group.current_roles()
            group.kill(old)
            promoted_at = await asyncio.to_thread(group.wait_promoted, new, DEADLINE)
            promoted_ms = time.time() * 1000 - (time.monotonic() - promoted_at) * 1000

            # After the promotion: the open connection (or its reconnect) gets live ticks
            # again, and so does a new connection.
            live_at = await until(
                lambda: live_after(client, promoted_at), "live ticks again on the open connection"
            )
            new_at = await first_live_tick(stack, SYMBOLS[0], promoted_ms)
            healthy_at = await until(lambda: health.ok_since(promoted_at), "health ok again")
            # The worker's consumer found the new primary: beat's tasks arrive again.
            await until(
                lambda: run_feed_received(stack) >= tasks_before + 2,
                "beat's run_feed tasks received by the worker after the failover",
            )

            degraded = [
                (round(at - killed_at, 2), problems)
                for at, status, problems in health.seen
                if killed_at < at < healthy_at and status != 200
            ]
            print(
                f"\nkill -> promotion {promoted_at - killed_at:.2f} s; promotion -> live again "
                f"on the open connection {live_at - promoted_at:.2f} s, on a new one "
                f"{new_at - promoted_at:.2f} s; health ok again {healthy_at - promoted_at:.2f} s "
                f"after; closes {client.closes}, resets {len(client.resets)}"
            )
            assert degraded, f"health never said degraded during the outage: {health.seen}"
            assert any("redis" in p for _, problems in degraded for p in problems), degraded

            # The old primary rejoins as a replica, once the sentinels have settled (a node
            # rejoining meanwhile could be promoted back: docs/deployment.md).
            await asyncio.to_thread(group.wait_settled, new, [], DEADLINE)
            group.rejoin(old)
            rejoined_at = await asyncio.to_thread(group.wait_settled, new, [old], DEADLINE)
            group.synced(old)
            assert group.master_port() == group.node_ports[new]
            await until(lambda: live_after(client, rejoined_at), "live ticks after the rejoin")
            await first_live_tick(stack, SYMBOLS[1], time.time() * 1000)
            await until(lambda: health.ok_since(rejoined_at), "health ok after the rejoin")
            assert all(p.poll() is None for p in stack.procs.values()), "a stack process died"
            # Each process said so once (markets.sentinel.note_primary), not per connection.
            for name in ("web", "worker1"):
                said = stack.log(name).count("Redis primary of mymaster is now")
                assert said == 1, f"{name} logged the new primary {said} times"
            print(f"rejoined in {rejoined_at - healthy_at:.2f} s; health: ok")
        finally:
            await health.close()
            if client is not None:
                await client.close()


async def test_a_command_retried_after_a_failover_goes_to_the_new_primary(tmp_path, settings):
    """redis-py#3874: a command whose connection dropped reconnects, in redis-py, to the
    host it had. Here the old primary is back (restarted on its own, as a primary with its
    data, before the sentinels demote it): the retried write must still reach the new
    primary, for the async clients (markets.redis, the channel layer) and the sync ones.

    And a shard of REDIS_SHARD_URLS may be a Sentinel group: markets.redis puts each
    symbol's keys on its shard, the group's on its primary before and after the failover."""
    import uuid

    import redis as sync_redis
    import redis.asyncio as aioredis

    from markets import sentinel
    from markets.redis import close_redis_client, redis_for, shard_index

    with sentinel_group(tmp_path / "redis") as group:
        url = f"redis+sentinel://{group.sentinels_env}/mymaster/0"
        plain = settings.REDIS_URL
        settings.REDIS_SHARD_URLS = [url, plain]
        on_group = next(s for s in ("BTC-USD", "ETH-USD", "AAPL") if shard_index(s) == 0)
        on_plain = next(s for s in ("BTC-USD", "ETH-USD", "AAPL") if shard_index(s) == 1)
        key = f"test-sentinel-shard:{uuid.uuid4().hex}"
        await redis_for(on_group).set(key, "before")
        await redis_for(on_plain).set(key, "plain")
        target = sentinel.parse(url)
        options = {"socket_timeout": 5, "retry": sentinel.retry_policy(3)}
        # One connection each, held across the failover (a command in flight holds its
        # connection the same way), so the pool's own check of an idle one plays no part.
        async_client = aioredis.Redis(
            connection_pool=sentinel.async_pool(target, sentinel_timeout=1, **options),
            single_connection_client=True,
        )
        sync_client = sync_redis.Redis(
            connection_pool=sentinel.sync_pool(
                target,
                sentinel_timeout=1,
                socket_timeout=5,
                retry=sentinel.retry_policy(3, asynchronous=False),
            ),
            single_connection_client=True,
        )
        try:
            await async_client.set("async", "before")
            sync_client.set("sync", "before")
            old, new = group.current_roles()
            # "before" on the replica first (replication is asynchronous): WAIT for it.
            primary = group.node_client(old)
            try:
                assert primary.execute_command("WAIT", 1, 10_000) == 1
            finally:
                primary.close()
            group.kill(old)
            await asyncio.to_thread(group.wait_promoted, new, DEADLINE)
            await asyncio.to_thread(group.wait_settled, new, [], DEADLINE)
            # The trap: the old primary back as a primary of its own (its append-only file
            # holds "before"); the sentinels demote it only some seconds later.
            group.start_node(old)
            assert group.role(old).get("role") == "master"

            await async_client.set("async", "after")
            sync_client.set("sync", "after")

            await redis_for(on_group).append(key, "+after")

            on_new, on_old = group.node_client(new), group.node_client(old)
            plain_client = sync_redis.Redis.from_url(plain)
            try:
                assert on_new.mget("async", "sync") == [b"after", b"after"]
                assert b"after" not in on_old.mget("async", "sync")
                assert on_new.get(key) == b"before+after"
                assert plain_client.get(key) == b"plain"
            finally:
                plain_client.delete(key)
                for client in (on_new, on_old, plain_client):
                    client.close()
        finally:
            await async_client.aclose(close_connection_pool=True)
            sync_client.close()
            sync_client.connection_pool.close()
            await close_redis_client()
