"""A producer never stops in silence (issue 22): the feed loop under injected Redis faults.

Against the real Redis of the run. Faults are injected at redis-py's level, in
``Connection.send_packed_command``, which every command, pipeline and script call of
the feed goes through (leases, latest_ticks, the publish script, the channel layer's
fan-out, the status flush), for the feed's own tasks only (a context variable): the
test's own reads are untouched. A fault is a ``ConnectionError`` (redis-py retries it)
or a hang that never ends (only the feed's own deadline ends it). A real hang, a Redis
that never answers an in-flight command, comes from freezing a TCP proxy (SIGSTOP).
"""

import asyncio
import contextlib
import contextvars
import hashlib
import itertools
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest
import redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

import feeds.services as services
from feeds import lease as lease_module
from feeds.services import run_feed
from markets import keys, publishing
from markets import layer as layer_module
from telemetry import metrics
from tests.feeds_helpers import stop_feeds

pytestmark = pytest.mark.usefixtures("clean_redis", "async_symbols")

BASE_DIR = Path(__file__).resolve().parent.parent
LEASE = 2.0  # lease_seconds of every feed here: renewals every 0.67 s


def _sha(script: str) -> bytes:
    return hashlib.sha1(script.encode()).hexdigest().encode()


SCRIPTS = {
    _sha(publishing._PUBLISH_LUA): "publish",
    _sha(lease_module._RENEW_LUA): "renew",
    _sha(lease_module._RELEASE_LUA): "release",
    _sha(layer_module._MEMBERS_LUA): "fan-out",
    _sha(layer_module._QUEUE_LUA): "fan-out",
}


def site(command) -> str:
    """Which call of the feed a packed command is."""
    if isinstance(command, list | tuple):
        command = b"".join(c if isinstance(c, bytes) else bytes(c) for c in command[:4])
    elif isinstance(command, str):
        command = command.encode()
    head = bytes(command[:400])
    found = re.search(rb"[0-9a-f]{40}", head)
    if b"EVALSHA" in head.upper() and found:
        return SCRIPTS.get(found.group(0), "script")
    for marker, name in [
        (b"XREVRANGE", "latest_ticks"),
        (b"HSET", "flush"),
        (b"$3\r\nSET\r\n", "acquire"),  # the pipeline of SET NX
        (b"EVAL", "script"),
    ]:
        if marker in head.upper():
            return name
    return "other"


class Injector:
    """Counts the feed's Redis calls and makes the chosen one fail once or hang."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.calls = 0
        self.sites: list[str] = []
        self.at_call: int | None = None  # the N-th call
        self.at_site: str | None = None  # or the next call of this site
        self.fired: list[tuple[str, float]] = []  # (site, time.time())

    def arm(self, *, call: int | None = None, site: str | None = None) -> None:
        self.at_call, self.at_site = call, site

    def decide(self, where: str) -> bool:
        self.calls += 1
        self.sites.append(where)
        hit = (self.at_call is not None and self.calls == self.at_call) or (
            self.at_site is not None and where == self.at_site
        )
        if hit:
            self.at_call = self.at_site = None
            self.fired.append((where, time.time()))
        return hit


INJECTOR: contextvars.ContextVar[Injector | None] = contextvars.ContextVar("inj", default=None)


@pytest.fixture
def inject(monkeypatch):
    real = AbstractConnection.send_packed_command

    async def send_packed_command(self, command, check_health=True):
        injector = INJECTOR.get()
        if injector is not None and injector.decide(site(command)):
            if injector.mode == "fail":
                raise RedisConnectionError("injected: connection lost")
            await asyncio.Event().wait()  # a hang: only a deadline ends it
        return await real(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", send_packed_command)


def sync_redis() -> redis.Redis:
    from django.conf import settings

    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)


def newest(r: redis.Redis, symbol: str = "BTC-USD"):
    """(seq, ts) of the newest tick in history, read outside the feed."""
    entries = r.xrevrange(keys.history_key(symbol), count=1)
    if not entries:
        return 0, 0
    entry_id, fields = entries[0]
    return int(entry_id.split(b"-")[0]), int(fields[b"ts"])


async def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
    return result


def start_feed(stop: threading.Event, injector: Injector | None = None, **kwargs):
    async def main():
        INJECTOR.set(injector)  # inherited by every task the feed creates
        return await run_feed(stop=stop, lease_seconds=LEASE, **kwargs)

    return asyncio.get_running_loop().create_task(main(), context=contextvars.copy_context())


def fault_count(step: str, kind: str) -> float:
    return metrics.FEED_FAULTS.labels(step, kind)._value.get()


# Publishing resumes within the lease period plus the poll, plus the deadline of the call
# that hung (a hung renewal can cost the lease) and the pause after a failed step. The
# margin is for a loaded machine; the figures are printed.
RESUME_BOUND = LEASE + 0.5 + LEASE * 2 / 3 + services.RETRY_SECONDS + 2.0


async def resumed_after(r: redis.Redis, fired_at: float, task: asyncio.Task) -> float:
    """Seconds from the fault until a tick stamped after it is in history."""
    fired_ms = fired_at * 1000

    def published():
        assert not task.done(), f"run_feed returned: {task.result()}"
        return newest(r)[1] > fired_ms

    await wait_for(published, RESUME_BOUND, "publishing to resume after the fault")
    return time.time() - fired_at


@pytest.mark.parametrize("mode", ["fail", "hang"])
async def test_the_nth_redis_call_fails_or_hangs_and_publishing_resumes(inject, mode):
    """Fault-injection harness: every N-th call of a fresh feed (N = 1..8: the first
    acquire round, latest_ticks, the first publishes and fan-outs, the first flush), then
    in one running feed the next call of every site in turn. Each time publishing
    resumes within the bound, the feed never returns, and history stays gapless."""
    r = sync_redis()
    waits: dict[str, float] = {}
    for n in range(1, 9):
        injector = Injector(mode)
        injector.arm(call=n)
        stop = threading.Event()
        task = start_feed(stop, injector, tick_rate=10, standby=True)
        try:
            await wait_for(lambda i=injector: i.fired, 10, f"call {n}")
            where, at = injector.fired[0]
            waits[f"#{n} {where}"] = await resumed_after(r, at, task)
        finally:
            await stop_feeds(stop, [task])
    # Steady state: each site's next call, in one feed.
    injector = Injector(mode)
    stop = threading.Event()
    task = start_feed(stop, injector, tick_rate=10, standby=True)
    try:
        await wait_for(lambda: newest(r)[0] > 0 and "flush" in injector.sites, 10, "a first round")
        for where in ["publish", "fan-out", "renew", "flush", "publish", "renew"]:
            injector.arm(site=where)
            await wait_for(lambda i=injector: not (i.at_site or i.at_call), 10, f"a {where}")
            waits[f"next {where}"] = await resumed_after(r, injector.fired[-1][1], task)
    finally:
        await stop_feeds(stop, [task])
    seqs = [int(eid.split(b"-")[0]) for eid, _ in r.xrange(keys.history_key("BTC-USD"))]
    print(f"\n{mode}: resumed after " + ", ".join(f"{k} {v:.2f}s" for k, v in waits.items()))
    assert seqs == list(range(1, len(seqs) + 1))  # nothing reissued, nothing skipped
    hit = {k.split(" ", 1)[1] for k in waits}
    assert {"acquire", "latest_ticks", "publish", "fan-out", "renew", "flush"} <= hit
    if mode == "hang":
        assert fault_count("publish", "timeout") >= 1 and fault_count("renew", "timeout") >= 1


async def test_leases_taken_whose_sources_fail_to_start_are_taken_again_and_run(monkeypatch):
    """Orphaned leases: latest_ticks fails right after the leases were taken. They are
    neither lost for a TTL nor left unrenewed: the next poll takes them again (the acquire
    script re-takes a lease already ours) and starts them."""
    real, failed = services.latest_ticks, []

    async def failing_once(*, symbols):
        if not failed:
            failed.append(list(symbols))
            raise RedisConnectionError("injected: latest_ticks")
        return await real(symbols=symbols)

    monkeypatch.setattr(services, "latest_ticks", failing_once)
    r = sync_redis()
    stop = threading.Event()
    task = start_feed(stop, tick_rate=10)
    t0 = time.monotonic()
    try:
        await wait_for(lambda: failed and newest(r)[0] >= 1, 10, "a tick after the failed start")
        took = time.monotonic() - t0
        token = r.get(keys.lease_key("BTC-USD"))
        # Every symbol of the failed start runs under a live lease of this feed.
        assert all(r.get(keys.lease_key(s)) == token and r.pttl(keys.lease_key(s)) > 0
                   for s in failed[0])  # fmt: skip
    finally:
        await stop_feeds(stop, [task])
    print(f"\nstarted {took:.2f} s after the failed first start (poll 0.5 s)")
    assert took < LEASE  # within a poll, not after a lease period
    # Released on the way out: another producer need not wait for the TTL.
    assert not any(r.exists(keys.lease_key(s)) for s in failed[0])


async def test_a_stray_cancelled_error_neither_kills_the_publisher_nor_the_feed(
    monkeypatch, caplog
):
    """A CancelledError raised inside a publish (a library's, not a cancellation of the
    feed) is counted and logged; the feed goes on publishing."""
    real, raised = publishing.TickPublisher.publish, []

    async def publish(self, drafts):
        if len(raised) < 2:
            raised.append(True)
            raise asyncio.CancelledError("not ours")
        return await real(self, drafts)

    monkeypatch.setattr(publishing.TickPublisher, "publish", publish)
    before = fault_count("publish", "cancelled")
    r = sync_redis()
    stop = threading.Event()
    task = start_feed(stop, tick_rate=10)
    try:
        await wait_for(lambda: len(raised) == 2 and newest(r)[0] >= 3, 10, "ticks after it")
        assert not task.done()
    finally:
        await stop_feeds(stop, [task])
    assert fault_count("publish", "cancelled") - before == 2
    assert "publish failed; those ticks were not published (publish: cancelled)" in caplog.text
    # And a real cancellation still ends the feed (stop_feeds cancelled nothing: it set stop).
    task = start_feed(threading.Event(), tick_rate=10)
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


class Outage(Injector):
    """Every call of the feed fails while ``down`` is set: Redis away (a failover)."""

    def __init__(self) -> None:
        super().__init__("fail")
        self.down = False

    def decide(self, where: str) -> bool:
        self.calls += 1
        return self.down


@dataclass
class OutageRun:
    """What an outage of a running feed did, counted from the outage's start."""

    waited: float  # from the outage's end until a tick stamped after it was in history
    stalls: float  # the watchdog's firings (ticker_feed_stalls_total) since the start
    gave_up: list[str]  # its "giving up" log lines since the start


async def outage_of_a_running_feed(during, caplog) -> OutageRun:
    """A feed publishes; every Redis call of it fails while ``during()`` runs.

    Counted from the outage's start, not the feed's: at start-up on a loaded machine the
    first publish can take longer than the 1 s stall period these tests set, and the
    watchdog then rightly gives the leases up (a fresh-clone run saw it a second before
    its first tick); that is not the outage under test.
    """
    r = sync_redis()
    outage = Outage()
    stop = threading.Event()
    task = start_feed(stop, outage, tick_rate=10)
    try:
        await wait_for(lambda: newest(r)[0] >= 3, 10, "a first few ticks")
        stalls = metrics.FEED_STALLS._value.get()
        started = time.time()
        outage.down = True
        await during()
        back = time.time()
        outage.down = False
        waited = await resumed_after(r, back, task)
        gave_up = [
            rec.getMessage()
            for rec in caplog.records
            if rec.created >= started and "giving up" in rec.getMessage()
        ]
        return OutageRun(waited, metrics.FEED_STALLS._value.get() - stalls, gave_up)
    finally:
        await stop_feeds(stop, [task])


async def test_an_outage_longer_than_the_stall_period_is_not_taken_for_a_stuck_feed(
    inject, settings, caplog
):
    """Redis away for longer than FEED_STALL_SECONDS (a slow Sentinel failover): drafts
    wait and nothing is published, but the loop's own steps fail too, so its leases lapse
    by themselves. The watchdog does not give them up and hold the feed off a lease
    period: publishing resumes as soon as Redis answers. (Before, it fired: a failover
    longer than the stall period cost 3.5 s more; benchmarks/failover.py.)"""
    settings.FEED_STALL_SECONDS = 1.0
    run = await outage_of_a_running_feed(
        lambda: asyncio.sleep(3 * settings.FEED_STALL_SECONDS), caplog
    )
    print(
        f"\npublishing resumed {run.waited:.2f} s after a "
        f"{3 * settings.FEED_STALL_SECONDS} s outage"
    )
    assert (run.stalls, run.gave_up) == (0, [])
    assert "Redis unavailable" in caplog.text  # the outage itself is logged


async def test_a_process_kept_off_the_cpu_in_an_outage_does_not_take_it_for_a_stuck_feed(
    inject, settings, caplog
):
    """The same outage, with the feed's process kept off the CPU for longer than
    FEED_STALL_SECONDS right after a failed step (a loaded machine: CI once saw it). When
    it wakes, drafts have waited that long, but no renewal got through meanwhile: the
    watchdog has no evidence that the feed holds leases it does not use, and stays quiet.
    The test's loop is the feed's, so blocking it stalls the feed as a descheduled
    process would."""
    settings.FEED_STALL_SECONDS = 1.0
    failed = fault_count("renew", "error")

    async def off_the_cpu() -> None:
        await wait_for(lambda: fault_count("renew", "error") > failed, 10, "a failed renewal")
        time.sleep(1.5 * settings.FEED_STALL_SECONDS)  # noqa: ASYNC251 (the point: no step runs)
        await asyncio.sleep(1.0)  # the outage goes on; the loop runs its steps again

    run = await outage_of_a_running_feed(off_the_cpu, caplog)
    assert (run.stalls, run.gave_up) == (0, [])


def test_the_feed_thread_outlives_a_cancelled_error(monkeypatch, caplog):
    """The ticker-feed thread restarts a feed loop that ended with a CancelledError
    instead of dying past ``except Exception``."""
    from feeds import tasks

    calls = []

    def run_feed_blocking(*, stop, **kwargs):
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise asyncio.CancelledError("from inside the loop")
        stop.set()

    stop = threading.Event()
    monkeypatch.setattr(tasks, "run_feed_blocking", run_feed_blocking)
    monkeypatch.setattr(tasks, "_shutting_down", stop)
    monkeypatch.setattr(tasks, "RESTART_DELAY_SECONDS", 0.01)
    with caplog.at_level(logging.ERROR):
        thread = threading.Thread(target=tasks._run_forever, args=("w",))
        thread.start()
        thread.join(10)
    assert len(calls) == 2 and not thread.is_alive()
    assert "feed loop failed; starting it again" in caplog.text


@contextlib.contextmanager
def frozen_proxy_to_redis():
    """tests/tcp_proxy.py in front of the run's Redis; yields (url, freeze, thaw)."""
    from django.conf import settings

    target = urlparse(settings.REDIS_URL)
    proxy = subprocess.Popen(
        [sys.executable, str(BASE_DIR / "tests" / "tcp_proxy.py"), str(target.port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(proxy.stdout.readline())
        url = f"redis://127.0.0.1:{port}{target.path or '/0'}"
        yield (
            url,
            lambda: os.kill(proxy.pid, signal.SIGSTOP),
            lambda: os.kill(proxy.pid, signal.SIGCONT),
        )
    finally:
        os.kill(proxy.pid, signal.SIGCONT)
        proxy.terminate()
        proxy.wait(timeout=10)
        proxy.stdout.close()


async def test_a_redis_that_stops_answering_is_a_counted_failure_and_the_leases_lapse(
    settings, caplog
):
    """A real hang: every Redis call of the feed goes through a proxy that is frozen.
    The calls end at their deadlines (counted, logged), the leases are not renewed past
    the hang (so another producer could take over within the TTL), and once Redis
    answers again the feed takes the symbols back and publishes."""
    from channels.layers import channel_layers

    r = sync_redis()
    with frozen_proxy_to_redis() as (url, freeze, thaw):
        settings.REDIS_URL, settings.REDIS_SHARD_URLS = url, [url]
        layers = {**settings.CHANNEL_LAYERS}
        layers["default"] = {**layers["default"]}
        layers["default"]["CONFIG"] = {**layers["default"]["CONFIG"]}
        layers["default"]["CONFIG"]["hosts"] = [
            {**h, "address": url} if isinstance(h, dict) else url
            for h in layers["default"]["CONFIG"]["hosts"]
        ]
        settings.CHANNEL_LAYERS = layers
        channel_layers.backends.clear()
        stop = threading.Event()
        task = start_feed(stop, tick_rate=10, standby=True)
        try:
            await wait_for(lambda: newest(r)[0] >= 3, 15, "ticks through the proxy")
            token = r.get(keys.lease_key("BTC-USD"))
            before = {s: fault_count(s, "timeout") for s in ("publish", "renew", "flush")}
            freeze()
            frozen_at = time.monotonic()
            # Not renewed past the hang: the lease's time to live only falls until it is
            # gone (a renewal would set it back to the TTL). From 0.3 s on: a command the
            # proxy forwarded just before it froze may still land.
            await asyncio.sleep(0.3)
            ttls = [r.pttl(keys.lease_key("BTC-USD"))]
            while ttls[-1] > 0:
                assert time.monotonic() - frozen_at < LEASE + 10, ttls
                await asyncio.sleep(0.05)
                ttls.append(r.pttl(keys.lease_key("BTC-USD")))
            lapsed = time.monotonic() - frozen_at
            assert all(b <= a for a, b in itertools.pairwise(ttls)), ttls
            assert not task.done()
            thaw()
            seq = newest(r)[0]
            await wait_for(lambda: newest(r)[0] > seq, 15, "ticks after the thaw")
            assert r.get(keys.lease_key("BTC-USD")) == token  # the same feed, back
            counted = {s: fault_count(s, "timeout") - before[s] for s in before}
        finally:
            thaw()
            await stop_feeds(stop, [task])
            # The layer's connections go to the proxy: closed here, not left to the
            # garbage collector of a later test (a ResourceWarning, an error there).
            for layer in channel_layers.backends.values():
                await layer.close_pools()
            channel_layers.backends.clear()
    print(f"\nfrozen: leases lapsed after {lapsed:.2f} s (TTL {LEASE} s); timeouts {counted}")
    assert counted["publish"] >= 1 and counted["renew"] + counted["flush"] >= 1
    assert "Redis unavailable" in caplog.text and "publish failed" in caplog.text
    assert "Redis answers again" in caplog.text
