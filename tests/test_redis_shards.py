"""Beyond one Redis (issue 10): the channel layer and market data over several hosts.

Market data is sharded by symbol (markets.redis.shard_index): every key of one symbol
on one host. The shard function is tested on its own; then publishing, leases and the
readers over two real redis-server processes; then a real stack (web, worker, beat) on
two Redis servers: delivery, resume and candles for symbols living on each, and each
server holds the keys of its own symbols and none of the others'.
"""

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest
import redis
from asgiref.sync import sync_to_async
from channels_redis.utils import _consistent_hash
from django.test import override_settings
from websockets.asyncio.client import connect

from feeds.lease import SymbolLeases
from markets.candles import candle_clock, persist_closed_candles, redis_candles
from markets.history import latest_ticks, resume, snapshot
from markets.models import Candle as CandleRow
from markets.publishing import TickPublisher
from markets.redis import (
    by_shard,
    close_redis_client,
    close_sync_clients,
    shard_index,
    shard_url,
    sync_redis_for,
)
from markets.symbols import symbol_group_name
from markets.ticks import TickDraft
from markets.universe import DEFAULT_UNIVERSE
from tests.realstack import BASE_DIR, RealStack
from tickerproject.stack import free_port, redis_server_command, wait_for_port

# With two hosts (pinned in the first test): these on the first, those on the second.
FIRST = ["BTC-USD", "AAPL"]
SECOND = ["ETH-USD", "LTC-USD"]


def universe_tickers() -> list[str]:
    return [instrument.ticker for instrument in DEFAULT_UNIVERSE]


# --- the shard function


def test_shard_index_is_channels_redis_own_ring_and_never_changes():
    names = [f"SYM{i}-USD" for i in range(500)] + universe_tickers()
    for count in range(1, 6):
        for name in names:
            assert shard_index(name, count) == _consistent_hash(name, count)
    # Pinned: a different value means symbols moved between hosts on upgrade.
    assert [shard_index(s, 2) for s in [*FIRST, *SECOND]] == [0, 0, 1, 1]
    assert [shard_index(s, 3) for s in ["BTC-USD", "ETH-USD", "AAPL", "EUR-USD"]] == [
        _consistent_hash(s, 3) for s in ["BTC-USD", "ETH-USD", "AAPL", "EUR-USD"]
    ]
    assert shard_index("BTC-USD", 1) == 0


def test_shard_index_spreads_symbols_over_every_host():
    names = [f"SYM{i}-USD" for i in range(2000)]
    for count in (2, 3, 4, 8):
        sizes = [0] * count
        for name in names:
            sizes[shard_index(name, count)] += 1
        # crc32 is even enough: every host gets between half and twice its fair share.
        fair = len(names) / count
        assert all(fair / 2 < n < fair * 2 for n in sizes), (count, sizes)
    universe = universe_tickers()
    assert {shard_index(s, 2) for s in universe} == {0, 1}


def test_every_key_of_a_symbol_is_on_its_one_host():
    urls = ["redis://127.0.0.1:1/0", "redis://127.0.0.1:2/0", "redis://127.0.0.1:3/0"]
    with override_settings(REDIS_SHARD_URLS=urls):
        for symbol in [*FIRST, *SECOND, *universe_tickers()]:
            # Every reader and writer reaches a symbol's keys through shard_url(symbol).
            assert shard_url(symbol) == urls[shard_index(symbol, 3)]
        groups = by_shard(["BTC-USD", "ETH-USD", "AAPL", "LTC-USD"])
        assert sum(len(g) for g in groups.values()) == 4
        for url, group in groups.items():
            assert all(shard_url(s) == url for s in group)
    with override_settings(REDIS_SHARD_URLS=["redis://127.0.0.1:9/0"]):
        assert by_shard(["BTC-USD", "ETH-USD"]) == {"redis://127.0.0.1:9/0": ["BTC-USD", "ETH-USD"]}


def settings_under(env: dict[str, str], expr: str):
    code = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        f"print(json.dumps({expr}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tickerproject.settings", **env},
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("layer", ["core", "pubsub"])
def test_settings_give_the_channel_layer_every_host_and_keep_the_broker_on_the_first(layer):
    a, b = "redis://127.0.0.1:7001/0", "redis://127.0.0.1:7002/0"
    expr = (
        "[s.REDIS_URL, s.REDIS_SHARD_URLS, s.CELERY_BROKER_URL, "
        "[h['address'] for h in s.CHANNEL_LAYERS['default']['CONFIG']['hosts']]]"
    )
    env = {"REDIS_SHARD_URLS": f"{a}, {b}", "CHANNEL_LAYER": layer, "REDIS_URL": ""}
    assert settings_under(env, expr) == [a, [a, b], a, [a, b]]
    # REDIS_URL alone: one host for everything, as before.
    env = {"REDIS_SHARD_URLS": "", "CHANNEL_LAYER": layer, "REDIS_URL": a}
    assert settings_under(env, expr) == [a, [a], a, [a]]


# --- two real Redis servers


@pytest.fixture(scope="module")
def two_redis(tmp_path_factory):
    procs, urls = [], []
    try:
        for i in range(2):
            port = free_port()
            workdir = tmp_path_factory.mktemp(f"redis{i}")
            procs.append(
                subprocess.Popen(
                    redis_server_command(port, str(workdir)),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            wait_for_port(port)
            urls.append(f"redis://127.0.0.1:{port}/0")
        yield urls
    finally:
        close_sync_clients()
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


def keys_by_symbol(url: str, prefix: str) -> set[str]:
    """The symbols whose market keys (markets.keys) are on the server at ``url``."""
    client = redis.Redis.from_url(url)
    try:
        found = set()
        for key in client.scan_iter(match=f"{prefix}:*"):
            # Others under the prefix: the layer's "<prefix>:asgi..." and Celery's keys.
            kind, _, rest = key.decode().removeprefix(f"{prefix}:").partition(":")
            if kind in ("seq", "hist", "epoch", "lease", "candleclock", "candles", "source"):
                found.add(rest.split(":", 1)[0])
        return found
    finally:
        client.close()


async def test_publish_leases_and_reads_each_on_the_symbols_own_server(two_redis):
    prefix = f"h10shard-{uuid.uuid4().hex[:6]}"
    symbols = [*FIRST, *SECOND]
    with override_settings(REDIS_SHARD_URLS=two_redis, REDIS_URL=two_redis[0], REDIS_PREFIX=prefix):
        try:
            leases = SymbolLeases(token="producer-a", ttl_seconds=10)
            assert await leases.acquire(symbols) == symbols
            assert await SymbolLeases(token="b", ttl_seconds=10).acquire(symbols) == []
            publisher = TickPublisher(lease_token="producer-a")
            for n in range(5):
                # One batch mixes both hosts: one atomic script per host.
                drafts = [TickDraft(s, 100.0 + n, 99.5 + n, 100.5 + n, 1.0) for s in symbols]
                published = await publisher.publish(drafts)
                assert [(t.symbol, t.seq) for t in published] == [(s, n + 1) for s in symbols]
            # Several ticks of a symbol in one batch, interleaved across hosts: in order.
            mixed = [TickDraft(s, 7.0, 7.0, 7.0, 1.0) for s in ["ETH-USD", "BTC-USD"] * 2]
            published = await publisher.publish(mixed)
            assert [(t.symbol, t.seq) for t in published] == [
                ("ETH-USD", 6), ("BTC-USD", 6), ("ETH-USD", 7), ("BTC-USD", 7)
            ]  # fmt: skip
            assert await leases.renew(symbols) == symbols
            # A symbol whose lease is lost is fenced on its own host; the others publish.
            await leases.release(["ETH-USD"])
            assert await leases.renew(symbols) == [s for s in symbols if s != "ETH-USD"]
            published = await publisher.publish([TickDraft(s, 1.0, 1.0, 1.0, 1.0) for s in symbols])
            assert [t.symbol for t in published] == ["BTC-USD", "AAPL", "LTC-USD"]

            last = await latest_ticks(symbols=symbols)
            assert {s: t.seq for s, t in last.items()} == {
                "BTC-USD": 8, "AAPL": 6, "ETH-USD": 7, "LTC-USD": 6
            }  # fmt: skip
            for symbol in symbols:
                snap = await snapshot(symbol=symbol)
                assert snap.epoch and [t.seq for t in snap.ticks][:5] == [1, 2, 3, 4, 5]
                back = await resume(symbol=symbol, since=2, epoch=snap.epoch)
                assert back.reset_reason is None and back.ticks[0].seq == 3
                assert await candle_clock(symbol=symbol) is not None
                assert await redis_candles(
                    symbol=symbol, interval="1m", start=None, end=None, limit=5
                )
        finally:
            await close_redis_client()
        on_first = keys_by_symbol(two_redis[0], prefix)
        on_second = keys_by_symbol(two_redis[1], prefix)
    assert on_first == set(FIRST)
    assert on_second == set(SECOND)


async def test_the_feed_loop_and_feeds_list_over_two_servers(two_redis, async_symbols):
    """run_feed takes leases, publishes and reports status on each symbol's server;
    `feeds list` reads them back from both."""
    from feeds.management.commands.feeds import gather_rows
    from feeds.services import run_feed
    from markets.models import Symbol

    prefix = f"h10shard-{uuid.uuid4().hex[:6]}"
    with override_settings(REDIS_SHARD_URLS=two_redis, REDIS_URL=two_redis[0], REDIS_PREFIX=prefix):
        stop = threading.Event()
        feed = asyncio.create_task(run_feed(stop=stop, tick_rate=10, lease_seconds=3))
        try:
            deadline = time.monotonic() + 20
            while True:
                wanted = [s async for s in Symbol.objects.filter(ticker__in=TICK_SYMBOLS)]
                rows = {r["symbol"]: r for r in await gather_rows(wanted)}
                # A second tick: the first publish (script and fan-out) has returned, so
                # the feed counted it (the first alone raced the stop under load).
                if all(r["state"] == "up" and (r["last_seq"] or 0) >= 2 for r in rows.values()):
                    break
                assert time.monotonic() < deadline, rows
                await asyncio.sleep(0.5)
            assert len({r["token"] for r in rows.values()}) == 1 and all(
                r["token"] for r in rows.values()
            )
        finally:
            stop.set()
            stats = await feed
            await close_redis_client()
        on = [keys_by_symbol(url, prefix) for url in two_redis]
    assert stats.ticks > 0
    assert set(FIRST) <= on[0] and set(SECOND) <= on[1] and not on[0] & on[1]
    for i, found in enumerate(on):
        assert all(shard_index(s, 2) == i for s in found), (i, sorted(found))


async def test_feeds_list_leaves_the_loop_s_clients_to_a_feed_running_beside_it(
    two_redis, async_symbols
):
    """gather_rows (`feeds list`) reads over the running loop's Redis clients and leaves
    them open: on a loop where a feed runs too (the feed-loop test above) they are the
    feed's as well.

    It used to close them (close_redis_client) under the feed's calls in flight: redis-py
    ran such a call again on a new socket (its retry) and returned the connection to the
    closed pool, which the loop no longer held, so the socket stayed open until the
    garbage collector freed it, with a ResourceWarning, in whichever later test (issue
    22). Here the call in flight is a BLPOP, waiting on the server until the test wakes
    it; afterwards no connection of this test may be open on the server.
    """
    from feeds.management.commands.feeds import gather_rows
    from markets.models import Symbol
    from markets.redis import redis_for

    prefix = f"h10shard-{uuid.uuid4().hex[:6]}"
    admin = redis.Redis.from_url(two_redis[0])
    before = {c["id"] for c in admin.client_list()}
    with override_settings(REDIS_SHARD_URLS=two_redis, REDIS_URL=two_redis[0], REDIS_PREFIX=prefix):
        client = redis_for(FIRST[0])
        try:
            waiting = asyncio.ensure_future(client.blpop([f"{prefix}:wake"], timeout=20))
            deadline = time.monotonic() + 10
            while not any(c["cmd"] == "blpop" for c in admin.client_list()):
                assert time.monotonic() < deadline and not waiting.done(), "no BLPOP in flight"
                await asyncio.sleep(0.01)
            (blocked,) = [c["id"] for c in admin.client_list() if c["cmd"] == "blpop"]
            wanted = [s async for s in Symbol.objects.filter(ticker__in=TICK_SYMBOLS)]
            assert len(await gather_rows(wanted)) == len(TICK_SYMBOLS)
            # The call in flight still waits on its own connection, of the loop's client.
            assert [c["id"] for c in admin.client_list() if c["cmd"] == "blpop"] == [blocked]
            assert redis_for(FIRST[0]) is client
            admin.lpush(f"{prefix}:wake", "go")
            assert list(await waiting) == [f"{prefix}:wake".encode(), b"go"]
        finally:
            await close_redis_client()

            def still_open() -> set[str]:
                return {c["id"] for c in admin.client_list()} - before - {admin.client_id()}

            # The server drops a closed connection from CLIENT LIST once it reads the close,
            # a moment later on a busy machine; one left open stays for good.
            deadline = time.monotonic() + 5
            while (left := still_open()) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # the server's list, not an event of ours
            await client.aclose()  # before the fix, the one holding the connection left open
            admin.close()
    assert not left, f"{len(left)} connection(s) of the loop's clients still open"


def test_closed_candles_are_persisted_from_both_servers(two_redis, symbols):
    """The Celery task reads each symbol's candles on its own server (one pipeline each)."""
    prefix = f"h10shard-{uuid.uuid4().hex[:6]}"
    names = [*FIRST, *SECOND]
    with override_settings(REDIS_SHARD_URLS=two_redis, REDIS_URL=two_redis[0], REDIS_PREFIX=prefix):

        async def publish() -> None:
            try:
                publisher = TickPublisher.unfenced_for_tests()
                for n in range(3):
                    await publisher.publish([TickDraft(s, 10.0 + n, 9.0, 11.0, 2.0) for s in names])
            finally:
                await close_redis_client()

        asyncio.run(publish())
        written = persist_closed_candles(at_ms=int(time.time() * 1000) + 7_200_000)
    counted = dict.fromkeys(names, 0)  # per symbol: its 1m rows hold its 3 ticks
    for ticker, n in CandleRow.objects.filter(symbol__ticker__in=names, interval="1m").values_list(
        "symbol__ticker", "tick_count"
    ):
        counted[ticker] += n
    assert written >= len(names)
    assert counted == dict.fromkeys(names, 3)


async def test_alerts_are_judged_on_ticks_from_both_servers(
    two_redis, async_symbols, django_user_model
):
    from alerts import services
    from alerts.api import _last_tick
    from alerts.evaluator import Evaluator

    prefix = f"h10shard-{uuid.uuid4().hex[:6]}"
    sent = []
    with override_settings(REDIS_SHARD_URLS=two_redis, REDIS_URL=two_redis[0], REDIS_PREFIX=prefix):
        try:
            user = await sync_to_async(django_user_model.objects.create_user)("ann", password="p")
            publisher = TickPublisher.unfenced_for_tests()
            pair = ["BTC-USD", "ETH-USD"]  # one on each server
            await publisher.publish([TickDraft(s, 100.0, 99.0, 101.0, 1.0) for s in pair])
            for symbol in pair:
                await sync_to_async(services.create_alert)(
                    user=user, symbol=symbol, direction="above", price=150.0, repeat=False,
                    note="", last=await _last_tick(symbol),
                )  # fmt: skip
            ev = Evaluator(client=sync_redis_for(), deliver=sent.extend)
            await sync_to_async(ev.step)(block_ms=0)
            await publisher.publish([TickDraft(s, 200.0, 199.0, 201.0, 1.0) for s in pair])
            for _ in range(10):  # with a wait: each server in turn
                await sync_to_async(ev.step)(block_ms=200)
                if len(sent) == 2:
                    break
        finally:
            await close_redis_client()
    assert sorted((e.symbol, e.seq) for e in sent) == [("BTC-USD", 2), ("ETH-USD", 2)]


# --- a real stack on two Redis servers

TICK_SYMBOLS = [*FIRST, *SECOND]


def http_json(url: str):
    with urllib.request.urlopen(url, timeout=20) as response:
        return json.loads(response.read())


class Recorder:
    """Subscribes (optionally resuming from ``since``) and records each symbol's seqs."""

    def __init__(self, url: str, origin: str) -> None:
        self.url, self.origin = url, origin
        self.seqs: dict[str, list[int]] = {s: [] for s in TICK_SYMBOLS}
        self.other: list[dict] = []
        self.subscribed = asyncio.Event()

    async def run(self, stop: asyncio.Event, since: dict[str, int] | None = None) -> None:
        command: dict = {"action": "subscribe", "symbols": TICK_SYMBOLS, "id": 1}
        if since:
            command["since"] = since
        else:
            command["snapshot"] = 0
        async with connect(self.url, origin=self.origin, open_timeout=20) as ws:
            await ws.send(json.dumps(command))
            reader = asyncio.ensure_future(self._read(ws))
            await stop.wait()
            reader.cancel()

    async def _read(self, ws) -> None:
        async for frame in ws:
            msg = json.loads(frame)
            if msg["type"] == "tick":
                self.seqs[msg["symbol"]].append(msg["seq"])
            elif msg["type"] == "ticks":
                for tick in msg["ticks"]:
                    self.seqs[tick["symbol"]].append(tick["seq"])
            elif msg["type"] == "subscribed":
                self.subscribed.set()
            elif msg["type"] != "snapshot":
                self.other.append(msg)


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("layer", ["core", "pubsub"])
async def test_a_stack_on_two_redis_servers_delivers_resumes_and_serves_candles(
    two_redis, tmp_path, layer
):
    stack = RealStack(
        tmp_path,
        CHANNEL_LAYER=layer,
        REDIS_URL=two_redis[0],  # the Celery broker and keys of no symbol
        REDIS_SHARD_URLS=",".join(two_redis),
        TICK_RATE="5",
        MAX_TICK_AGE_MS="15000",  # three processes on two shared cores: no 4008 for lateness
    )
    stack.prepare_database()
    try:
        stack.start_web(wait=False)  # all three at once, as tests.realstack.real_stack does
        stack.start_worker()
        stack.start_beat()
        stack.wait_for_web()
        origin = stack.origin
        live = Recorder(stack.ws_url, origin)
        stop = asyncio.Event()
        task = asyncio.ensure_future(live.run(stop))
        await asyncio.wait_for(live.subscribed.wait(), 30)
        deadline = time.monotonic() + 60
        while any(len(live.seqs[s]) < 10 for s in TICK_SYMBOLS):
            assert time.monotonic() < deadline, {s: len(v) for s, v in live.seqs.items()}
            await asyncio.sleep(0.2)

        # While subscribed: each symbol's channel-layer group is on the host
        # channels_redis hashes its name to, so the layer uses both servers (the core
        # layer keeps a key per group; pubsub has none to look at).
        group_hosts = {shard_index(symbol_group_name(s), 2) for s in TICK_SYMBOLS}
        for symbol in TICK_SYMBOLS if layer == "core" else []:
            group = symbol_group_name(symbol)
            host = two_redis[shard_index(group, 2)]
            client = redis.Redis.from_url(host)
            try:
                assert client.exists(f"{stack.prefix}:asgi:group:{group}"), (symbol, host)
            finally:
                client.close()

        # Resume from a seq a few ticks back: every tick from there, in order.
        since = {s: live.seqs[s][2] for s in TICK_SYMBOLS}
        resumed = Recorder(stack.ws_url, origin)
        task2 = asyncio.ensure_future(resumed.run(stop, since=since))
        await asyncio.wait_for(resumed.subscribed.wait(), 30)
        # Past the newest tick yet: the resumed client gets there only live, after its
        # replay, so the seam between the two is in what it records.
        target = {s: live.seqs[s][-1] + 2 for s in TICK_SYMBOLS}
        deadline = time.monotonic() + 20
        while any(c.seqs[s][-1:] < [target[s]] for c in (live, resumed) for s in TICK_SYMBOLS):
            assert time.monotonic() < deadline, target
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(task, task2)

        counts = {}
        for symbol in TICK_SYMBOLS:
            got = live.seqs[symbol]
            assert got == list(range(got[0], got[0] + len(got))), (symbol, got[:10])
            again = resumed.seqs[symbol]
            first = since[symbol] + 1
            assert again == list(range(first, first + len(again))), (symbol, again[:10])
            assert again[-1] >= target[symbol]
            counts[symbol] = (len(got), len(again))
        assert live.other == [] and resumed.other == [], (live.other[:3], resumed.other[:3])

        # Candles from the REST API, for symbols on each server.
        for symbol in TICK_SYMBOLS:
            body = http_json(f"{stack.http_url}/api/symbols/{symbol}/candles?interval=1m")
            assert body["candles"], symbol
            assert body["candles"][-1]["last_seq"] >= since[symbol], (symbol, body["candles"][-1])
            assert sum(c["ticks"] for c in body["candles"]) >= len(live.seqs[symbol])

        # /api/health/ pings both servers and reads each symbol's freshness from its own.
        try:
            health = http_json(f"{stack.http_url}/api/health/")
        except urllib.error.HTTPError as exc:  # 503 "degraded": the body says why
            health = json.loads(exc.read())
        assert health["redis"]["ok"], health
        assert all(health["feed"][s] is not None for s in TICK_SYMBOLS), health["feed"]

        # Each server holds the market keys of its own symbols, and none of the others'.
        on = [keys_by_symbol(url, stack.prefix) for url in two_redis]
        assert on[0] and on[1] and not on[0] & on[1]
        for i, found in enumerate(on):
            assert all(shard_index(s, 2) == i for s in found), (i, sorted(found))
        assert set(FIRST) <= on[0] and set(SECOND) <= on[1]
        print(
            f"\n{layer} layer, two Redis servers: {len(on[0])} symbols on the first,"
            f" {len(on[1])} on the second; the test's symbols' groups on hosts"
            f" {sorted(group_hosts)}"
            + "".join(
                f"\n  {s} (host {shard_index(s, 2)}): live {n} ticks, resumed {m}, in order"
                for s, (n, m) in counts.items()
            )
        )
    finally:
        stack.stop_all()
