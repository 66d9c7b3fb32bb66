"""The feed loop with sources: switching a source, counters, feeds list/set, health."""

import asyncio
import json
import threading
import time

import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command

from feeds.services import run_feed
from markets import keys
from markets.history import latest_ticks, ticks_after
from markets.models import Symbol
from markets.quotes import health, source_status
from markets.redis import redis_client
from tests.fake_exchanges import FakeBinance, FakeCoinbase
from tests.feeds_helpers import stop_feeds

pytestmark = pytest.mark.usefixtures("clean_redis")

SAMPLE = "feeds/samples/btc-usd.csv"


async def set_source(ticker: str, source: str, **options) -> None:
    await Symbol.objects.filter(ticker=ticker).aupdate(source=source, source_options=options)


async def wait_until(predicate, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def all_ticks(symbol: str):
    return await ticks_after(symbol=symbol, after_seq=0, limit=100_000)


def contiguous(ticks) -> bool:
    return [t.seq for t in ticks] == list(range(1, len(ticks) + 1))


@pytest.fixture
async def feed():
    """Runs a standby feed loop in this event loop until the test ends."""
    stop = threading.Event()
    tasks = []

    def start(**kwargs):
        task = asyncio.get_running_loop().create_task(
            run_feed(stop=stop, standby=True, tick_rate=kwargs.pop("tick_rate", 2), **kwargs)
        )
        tasks.append(task)
        return task

    yield start
    await stop_feeds(stop, tasks)


@pytest.mark.usefixtures("async_symbols")
async def test_a_source_change_applies_within_seconds_with_seq_carrying_on(feed, settings):
    async with FakeCoinbase({"BTC-USD": 12345.0}, heartbeat_seconds=0.5) as fake:
        settings.COINBASE_WS_URL = fake.url
        fake.start_stream(rate=20)
        await set_source("BTC-USD", "replay", file=SAMPLE, speed=10, loop=True)
        feed()
        first_row = 97018.94  # the sample's first trade
        await wait_until(lambda: _has_price("BTC-USD", lambda p: p == first_row), what="the replay")
        timings = {}
        for source, is_theirs in [
            ("coinbase", lambda p: 12300 < p < 12400),
            ("simulated", lambda p: True),  # it carries on from the last price
        ]:
            before = (await latest_ticks(symbols=["BTC-USD"]))["BTC-USD"].seq
            t0 = time.perf_counter()
            await set_source("BTC-USD", source)

            async def switched(source=source, before=before, is_theirs=is_theirs):
                # The status report names the running source (it is written every second,
                # so the time measured here is an upper bound).
                status = (await source_status(symbols=["BTC-USD"])).get("BTC-USD", {})
                return (
                    status.get("source") == source
                    and status.get("published", 0) >= 1
                    and await _has_price("BTC-USD", is_theirs, after=before)
                )

            await wait_until(switched, what=f"the switch to {source}")
            timings[source] = time.perf_counter() - t0
        ticks = await all_ticks("BTC-USD")
    print(
        "\nsource switch took: "
        + ", ".join(f"to {k} {v:.2f}s" for k, v in timings.items())
        + f"; {len(ticks)} ticks, seq 1..{ticks[-1].seq} with no gap"
    )
    assert contiguous(ticks)
    assert all(t < 8 for t in timings.values())


async def _has_price(symbol, predicate, after=0):
    ticks = await ticks_after(symbol=symbol, after_seq=after, limit=100_000)
    return any(predicate(t.price) for t in ticks)


@pytest.mark.usefixtures("async_symbols")
async def test_counters_reach_redis_feeds_list_and_health(feed, settings):
    async with FakeBinance({"ETHUSDT": 3400.0}) as fake:
        settings.BINANCE_WS_URL = fake.url
        await set_source("ETH-USD", "binance", symbol="ethusdt")
        feed()
        await fake.wait_for_clients()
        for _ in range(3):
            await fake.tick()

        async def first_three_published():
            return len(await all_ticks("ETH-USD")) >= 3

        # The drop is a TCP reset, which discards what the client has not read yet, and the
        # fake and the feed share this loop: wait until the feed has them. Dropping at once
        # raced the feed's reads (a fresh-clone run waited 15 s for a report of 6 in vain).
        await wait_until(first_three_published, what="the first three ticks")
        await fake.skip("ETHUSDT", trades=2)
        await fake.drop()
        await fake.wait_for_clients()
        await asyncio.sleep(0.2)  # resubscribed
        for _ in range(3):
            await fake.tick()

        async def reported():
            s = (await source_status(symbols=["ETH-USD"])).get("ETH-USD", {})
            return s if s.get("published", 0) >= 6 and s.get("state") == "up" else None

        status = await wait_until(reported, what="the status report")
        report = await health()
        rows = json.loads(await sync_to_async(_feeds_list_json)())
    assert status["source"] == "binance" and status["reconnects"] == 1
    assert status["gaps"] == 1 and status["messages"] >= 12
    owner = (await redis_client().get(keys.lease_key("ETH-USD"))).decode()
    assert status["token"] == owner
    block = report.sources["ETH-USD"]
    assert block["name"] == "binance" and block["state"] == "up" and block["owner"] == owner
    assert (block["reconnects"], block["gaps"]) == (1, 1)
    assert report.sources["AAPL"]["name"] == "simulated"
    row = next(r for r in rows if r["symbol"] == "ETH-USD")
    assert row["source"] == "binance" and row["state"] == "up" and row["token"] == owner
    assert row["worker"] and row["last_tick_age_s"] is not None and row["reconnects"] == 1
    ticks = await all_ticks("ETH-USD")
    assert contiguous(ticks) and len(ticks) == 6


def _feeds_list_json() -> str:
    from io import StringIO

    out = StringIO()
    call_command("feeds", "list", "--json", stdout=out)
    return out.getvalue()


@pytest.mark.usefixtures("async_symbols")
@pytest.mark.parametrize("exchange", ["coinbase", "binance"])
async def test_ticks_per_second_through_the_feed_loop(feed, settings, exchange):
    """A bounded burst from the fake exchange, through the adapter, publisher and Redis."""
    n = 3000
    if exchange == "coinbase":
        fake_cm, options = FakeCoinbase({"SOL-USD": 200.0}), {}
    else:
        fake_cm, options = FakeBinance({"SOLUSDT": 200.0}), {"symbol": "solusdt"}
    async with fake_cm as fake:
        setattr(settings, f"{exchange.upper()}_WS_URL", fake.url)
        await set_source("SOL-USD", exchange, **options)
        feed()
        await fake.wait_for_clients()
        await asyncio.sleep(0.3)
        t0 = time.perf_counter()
        await fake.burst(n)

        async def published():
            last = (await latest_ticks(symbols=["SOL-USD"])).get("SOL-USD")
            return last is not None and last.seq >= n

        await wait_until(published, timeout=60, what=f"{n} published ticks")
        elapsed = time.perf_counter() - t0
    print(
        f"\n{exchange} through the feed loop (adapter, publisher, Redis): {n} ticks in "
        f"{elapsed:.2f}s = {n / elapsed:,.0f} ticks/s"
    )
    assert contiguous(await all_ticks("SOL-USD"))


@pytest.mark.usefixtures("symbols")
def test_feeds_set_validates_and_saves():
    call_command("feeds", "set", "BTC-USD", "replay", "--file", SAMPLE, "--speed", "10", "--loop")
    s = Symbol.objects.get(ticker="BTC-USD")
    assert (s.source, s.source_options) == ("replay", {"file": SAMPLE, "speed": 10, "loop": True})
    call_command("feeds", "set", "ETH-USD", "binance", "--product-id", "ETHUSDT")
    assert Symbol.objects.get(ticker="ETH-USD").source_options == {"symbol": "ethusdt"}
    call_command("feeds", "set", "BTC-USD", "coinbase")
    s = Symbol.objects.get(ticker="BTC-USD")
    assert (s.source, s.source_options) == ("coinbase", {})
    for bad, message in [
        (["BTC-USD", "coinbase", "--speed", "3"], "coinbase takes no --speed"),
        (["BTC-USD", "replay"], "replay needs a file"),
        (["BTC-USD", "replay", "--file", SAMPLE, "--speed", "0"], "speed must be above 0"),
        (["NOPE", "simulated"], "unknown symbol"),
    ]:
        with pytest.raises(CommandError, match=message):
            call_command("feeds", "set", *bad)


@pytest.mark.usefixtures("symbols")
def test_the_admin_edits_the_source_and_refuses_bad_options(admin_client):
    from django.core.exceptions import ValidationError

    btc = Symbol.objects.get(ticker="BTC-USD")
    page = admin_client.get(f"/admin/markets/symbol/{btc.pk}/change/")
    assert page.status_code == 200
    assert b"Feed source" in page.content and b"source_options" in page.content
    btc.source, btc.source_options = "coinbase", {"speed": 3}
    with pytest.raises(ValidationError, match="coinbase takes no option 'speed'"):
        btc.full_clean()
    btc.source_options = {"product_id": "BTC-EUR"}
    btc.full_clean()


@pytest.mark.usefixtures("async_symbols")
async def test_a_slow_symbol_table_read_does_not_hold_the_feed_loop(monkeypatch, caplog):
    import feeds.services as services

    real, calls, answer = services._load_configs, [], asyncio.Event()

    async def load() -> dict:
        calls.append(time.monotonic())
        await answer.wait()  # the database answers only when the test says so
        return await real()

    monkeypatch.setattr(services, "_load_configs", load)
    monkeypatch.setattr(services, "SYMBOLS_READ_TIMEOUT_SECONDS", 0.2)
    monkeypatch.setattr(services, "SYMBOLS_REFRESH_SECONDS", 0.1)
    feed = asyncio.ensure_future(
        run_feed(stop=threading.Event(), tick_rate=20, lease_seconds=2, max_seconds=4)
    )
    await asyncio.sleep(1.0)
    # The loop went on (it did not exit for holding no symbol), it said why it waits,
    # and it started no second read while the first was still on its way.
    assert not feed.done()
    assert "reading the symbol table is taking long" in caplog.text
    assert len(calls) == 1
    answer.set()
    stats = await asyncio.wait_for(feed, 30)
    assert stats.acquired and stats.ticks > 0  # the late answer was used


@pytest.mark.usefixtures("async_symbols")
async def test_a_failed_first_acquire_round_is_retried_not_taken_for_holding_nothing(
    monkeypatch,
):
    """Issue 22's silent exit: the first lease round fails half-way (Redis away for one
    call) after the symbol table was read. The loop used to take "holding nothing" for
    "another producer has it all" and return 0.5 s later with no tick and no log line."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from feeds.lease import SymbolLeases

    real_acquire = SymbolLeases.acquire
    failed = []

    async def acquire_failing_once(self, symbols):
        if not failed:
            failed.append(True)
            raise RedisConnectionError("injected: the first acquire round")
        return await real_acquire(self, symbols)

    monkeypatch.setattr(SymbolLeases, "acquire", acquire_failing_once)
    stop = threading.Event()
    task = asyncio.create_task(run_feed(stop=stop, tick_rate=10, lease_seconds=2))

    async def published():
        assert not task.done(), f"run_feed returned: {task.result()}"
        return len(await all_ticks("BTC-USD")) >= 3

    try:
        await wait_until(published, what="ticks after the failed round")
    finally:
        await stop_feeds(stop, [task])
    assert failed and task.result().ticks > 0
