"""OHLCV candles built by the publish script, read back, and persisted, against real Redis."""

import asyncio
import random

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings

from feeds.lease import SymbolLeases
from markets import keys, publishing
from markets.candles import (
    INTERVALS,
    bucket_start,
    candle_clock,
    candles,
    persist_closed_candles,
    redis_candles,
    session_opens,
)
from markets.history import ticks_after
from markets.models import Candle as CandleRow
from markets.publishing import TickPublisher
from markets.redis import close_redis_client, redis_client
from markets.tasks import persist_candles
from markets.ticks import TickDraft

pytestmark = pytest.mark.usefixtures("clean_redis")

# 2026-01-05 10:00:00 UTC: an hour boundary, so every interval's bucket starts here.
T0 = 1_767_607_200_000


class Clock:
    """Stands in for the publisher's wall clock so ticks land in chosen buckets."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def clock(monkeypatch):
    c = Clock(T0)
    monkeypatch.setattr(publishing, "now_ms", c)
    return c


def draft(price: float, size: float = 1.0, symbol: str = "BTC-USD") -> TickDraft:
    return TickDraft(symbol, price, price - 0.5, price + 0.5, size)


def expected(ticks) -> dict:
    """OHLCV computed in Python from published ticks, to compare against Redis."""
    return {
        "open": ticks[0].price,
        "high": max(t.price for t in ticks),
        "low": min(t.price for t in ticks),
        "close": ticks[-1].price,
        "volume": pytest.approx(sum(t.size for t in ticks)),
        "ticks": len(ticks),
        "first_seq": ticks[0].seq,
        "last_seq": ticks[-1].seq,
    }


def ohlcv(c) -> dict:
    return {
        "open": c.open,
        "high": c.high,
        "low": c.low,
        "close": c.close,
        "volume": c.volume,
        "ticks": c.ticks,
        "first_seq": c.first_seq,
        "last_seq": c.last_seq,
    }


async def read(interval: str, symbol: str = "BTC-USD", limit: int = 1000):
    return await redis_candles(symbol=symbol, interval=interval, start=None, end=None, limit=limit)


async def test_each_tick_updates_every_interval_once(clock):
    publisher = TickPublisher.unfenced_for_tests()
    published = []
    # Two 1s buckets inside one minute: 3 ticks at T0, 2 ticks at T0 + 1.5 s.
    for price, size in [(100.0, 1.0), (103.25, 0.5), (99.5, 2.0)]:
        published += await publisher.publish([draft(price, size)])
    clock.ms = T0 + 1_500
    for price, size in [(101.0, 0.25), (98.75, 4.0)]:
        published += await publisher.publish([draft(price, size)])

    ones = await read("1s")
    assert [c.start for c in ones] == [T0, T0 + 1_000]
    assert ohlcv(ones[0]) == expected(published[:3])
    assert ohlcv(ones[1]) == expected(published[3:])
    for interval in ("1m", "5m", "1h"):
        (c,) = await read(interval)
        assert c.start == T0
        assert ohlcv(c) == expected(published)


async def test_prices_are_kept_exactly_as_published(clock):
    # 0.1 + 0.2 style prices must come back unchanged, not through Lua's %.14g.
    prices = [1.0550100000000001, 97000.12, 0.38001]
    published = await TickPublisher.unfenced_for_tests().publish(
        [draft(p, symbol="EUR-USD") for p in prices]
    )
    raw = await redis_client().hgetall(keys.candle_key("EUR-USD", "1m", T0))
    assert raw[b"o"].decode() == repr(prices[0])
    (c,) = await read("1m", "EUR-USD")
    assert (c.open, c.high, c.low, c.close) == (prices[0], prices[1], prices[2], prices[2])
    assert c.last_seq == published[-1].seq == 3


async def test_a_batch_of_many_symbols_is_bucketed_per_symbol(clock):
    symbols = ["BTC-USD", "ETH-USD", "AAPL"]
    await TickPublisher.unfenced_for_tests().publish(
        [draft(10.0 + i, symbol=s) for i, s in enumerate(symbols)]
    )
    for i, s in enumerate(symbols):
        (c,) = await read("1m", s)
        assert (c.open, c.ticks, c.first_seq) == (10.0 + i, 1, 1)


async def test_a_fenced_tick_counts_in_no_candle(clock):
    r = redis_client()
    await SymbolLeases(r, token="owner", ttl_seconds=5).acquire(["BTC-USD"])
    assert await TickPublisher(lease_token="owner").publish([draft(100.0)])
    assert await TickPublisher(lease_token="intruder").publish([draft(500.0)]) == []
    (c,) = await read("1m")
    assert (c.ticks, c.high, c.last_seq) == (1, 100.0, 1)


async def test_a_clock_stepping_back_never_reopens_an_older_bucket(clock):
    publisher = TickPublisher.unfenced_for_tests()
    clock.ms = T0 + 61_000
    await publisher.publish([draft(100.0)])
    clock.ms = T0 + 59_000  # the clock steps back into the previous minute
    await publisher.publish([draft(90.0)])
    assert [c.start for c in await read("1m")] == [T0 + 60_000]
    (c,) = await read("1m")
    assert (c.ticks, c.low, c.close) == (2, 90.0, 90.0)


async def test_a_candle_closes_once_the_symbols_clock_passes_its_end(clock):
    publisher = TickPublisher.unfenced_for_tests()
    clock.ms = T0 + 500
    await publisher.publish([draft(100.0)])
    assert await candle_clock(symbol="BTC-USD") == T0 + 500
    (first,) = await read("1s")
    assert not first.is_closed(at_ms=T0 + 600, clock_ms=T0 + 500)
    clock.ms = T0 + 1_500
    await publisher.publish([draft(101.0)])
    clock.ms = T0 + 1_200  # stepping back leaves the clock where it was
    await publisher.publish([draft(102.0)])
    now_clock = await candle_clock(symbol="BTC-USD")
    assert now_clock == T0 + 1_500
    first, second = await read("1s")
    # Within the time grace, yet final: every later tick goes to a newer bucket.
    assert first.is_closed(at_ms=T0 + 1_600, clock_ms=now_clock)
    assert not second.is_closed(at_ms=T0 + 1_600, clock_ms=now_clock)
    assert second.is_closed(at_ms=T0 + 2_000 + settings.CANDLE_CLOSE_GRACE_MS, clock_ms=None)
    assert await candle_clock(symbol="ETH-USD") is None


async def test_redis_keeps_a_bounded_number_of_buckets(clock, settings):
    settings.CANDLE_REDIS_BUCKETS = 10
    publisher = TickPublisher.unfenced_for_tests()
    for i in range(25):
        clock.ms = T0 + i * 1_000
        await publisher.publish([draft(100.0 + i)])
    ones = await read("1s")
    # The index drops buckets older than 10 s behind the newest; the hashes expire too.
    assert [c.start for c in ones] == [T0 + i * 1_000 for i in range(14, 25)]
    ttl = await redis_client().pttl(keys.candle_key("BTC-USD", "1s", T0 + 24_000))
    assert 0 < ttl <= 10_000


async def test_live_candles_agree_with_history_under_a_real_clock():
    """Ticks at the real time, several per batch, then OHLCV rebuilt from history."""
    rng = random.Random(7)
    publisher = TickPublisher.unfenced_for_tests()
    price = 100.0
    for _ in range(60):
        batch = []
        for _ in range(rng.randint(1, 4)):
            price = round(price * (1 + rng.gauss(0, 0.002)), 2)
            batch.append(draft(price, round(rng.uniform(0.01, 3), 4)))
        await publisher.publish(batch)
        await asyncio.sleep(0.02)
    ticks = await ticks_after(symbol="BTC-USD", after_seq=0, limit=10_000)
    for interval in INTERVALS:
        built = await read(interval)
        groups: dict[int, list] = {}
        for t in ticks:
            groups.setdefault(bucket_start(t.ts, interval), []).append(t)
        assert [c.start for c in built] == sorted(groups)
        for c in built:
            assert ohlcv(c) == expected(groups[c.start])
        assert sum(c.ticks for c in built) == len(ticks)


async def test_concurrent_publishers_count_every_tick_exactly_once():
    """Many publishers racing on one symbol: tick count = seq count, no tick lost or doubled."""

    async def producer(n: int) -> None:
        p = TickPublisher.unfenced_for_tests()
        for i in range(n):
            await p.publish([draft(100.0 + i % 7)])

    await asyncio.gather(*(producer(50) for _ in range(8)))
    seq = int(await redis_client().get(keys.seq_key("BTC-USD")))
    assert seq == 400
    for interval in INTERVALS:
        built = await read(interval)
        assert sum(c.ticks for c in built) == 400
        assert built[0].first_seq == 1 and built[-1].last_seq == 400


# --- Persistence to the database


async def publish_minutes(clock, minutes: int, per_minute: int = 3) -> list:
    """Ticks spread over ``minutes`` whole minutes from T0, ``per_minute`` in each."""
    publisher = TickPublisher.unfenced_for_tests()
    out = []
    for m in range(minutes):
        for k in range(per_minute):
            clock.ms = T0 + m * 60_000 + k * 10_000
            out += await publisher.publish([draft(100.0 + m + k / 10, 0.5)])
    return out


def db_rows(interval: str = "1m") -> list[dict]:
    return list(
        CandleRow.objects.filter(symbol__ticker="BTC-USD", interval=interval)
        .order_by("start")
        .values("start", "open", "high", "low", "close", "volume", "tick_count", "last_seq")
    )


async def test_only_closed_candles_are_persisted_and_reruns_are_idempotent(clock, async_symbols):
    await publish_minutes(clock, 3)
    # At T0 + 3 min + 1 s: minute 2 ended 1 s ago, inside the 2 s grace, so it is open.
    now = T0 + 3 * 60_000 + 1_000
    written = await sync_to_async(persist_closed_candles)(at_ms=now)
    rows = await sync_to_async(db_rows)()
    assert [int(r["start"].timestamp() * 1000) for r in rows] == [T0, T0 + 60_000]
    assert written == 2
    assert [(float(r["open"]), float(r["close"]), r["tick_count"]) for r in rows] == [
        (100.0, 100.2, 3),
        (101.0, 101.2, 3),
    ]
    assert await sync_to_async(CandleRow.objects.filter(interval__in=["5m", "1h"]).count)() == 0

    # A re-run rewrites only the newest persisted bucket of each series, with equal values.
    assert await sync_to_async(persist_closed_candles)(at_ms=now) == 1
    assert await sync_to_async(db_rows)() == rows

    # Later all of minute 2 is closed and joins; the counts never grow by re-running.
    later = T0 + 3 * 60_000 + 2_000
    for _ in range(3):
        await sync_to_async(persist_closed_candles)(at_ms=later)
    rows = await sync_to_async(db_rows)()
    assert [r["tick_count"] for r in rows] == [3, 3, 3]
    assert sum(r["tick_count"] for r in rows) == 9


async def test_persisted_values_equal_redis_for_every_interval(clock, async_symbols):
    published = await publish_minutes(clock, 7, per_minute=4)
    far_later = T0 + 2 * 3_600_000
    await sync_to_async(persist_closed_candles)(at_ms=far_later)
    for interval in ("1m", "5m", "1h"):
        live = await read(interval)
        rows = await sync_to_async(db_rows)(interval)
        assert len(rows) == len(live) > 0
        for c, r in zip(live, rows, strict=True):
            assert int(r["start"].timestamp() * 1000) == c.start
            assert float(r["open"]) == c.open and float(r["close"]) == c.close
            assert float(r["high"]) == c.high and float(r["low"]) == c.low
            assert float(r["volume"]) == pytest.approx(c.volume)
            assert (r["tick_count"], r["last_seq"]) == (c.ticks, c.last_seq)
        assert sum(r["tick_count"] for r in rows) == len(published)
    assert await sync_to_async(CandleRow.objects.filter(interval="1s").count)() == 0


async def test_small_batches_write_the_same_rows(clock, async_symbols):
    await publish_minutes(clock, 5)
    await sync_to_async(persist_closed_candles)(at_ms=T0 + 3_600_000 * 2, batch_size=2)
    assert [r["tick_count"] for r in await sync_to_async(db_rows)()] == [3] * 5


async def test_a_late_change_to_the_newest_persisted_candle_is_picked_up(clock, async_symbols):
    """The watermark bucket is rewritten each run until a newer one exists."""
    await publish_minutes(clock, 1)
    now = T0 + 62_000
    await sync_to_async(persist_closed_candles)(at_ms=now)
    # A tick stamped inside minute 0 arrives after that run (a stalled producer).
    clock.ms = T0 + 59_999
    await TickPublisher.unfenced_for_tests().publish([draft(250.0, 0.5)])
    await sync_to_async(persist_closed_candles)(at_ms=now + 10_000)
    (row,) = await sync_to_async(db_rows)()
    assert (row["tick_count"], float(row["high"]), float(row["close"])) == (4, 250.0, 250.0)


def test_the_celery_task_persists_and_reruns_do_not_double_count(symbols, clock, settings):
    """The real task body, run by the Celery app eagerly, again and again."""

    async def publish():
        try:
            await publish_minutes(clock, 4)
        finally:
            await close_redis_client()

    asyncio.run(publish())
    settings.CANDLE_CLOSE_GRACE_MS = 0
    # Real time is long after T0, so every bucket counts as closed.
    assert persist_candles.apply().get() == 4 + 1 + 1  # four 1m, one 5m, one 1h
    for _ in range(3):  # a re-run, as after a worker restart, rewrites and never adds
        assert persist_candles.apply().get() == 3  # the newest row of each series
    assert [r["tick_count"] for r in db_rows()] == [3, 3, 3, 3]
    assert [r["tick_count"] for r in db_rows("5m")] == [12]
    assert [r["tick_count"] for r in db_rows("1h")] == [12]


# --- Reading: database and Redis merged


async def test_reads_merge_database_and_redis_without_duplicates(clock, async_symbols):
    await publish_minutes(clock, 6)
    await sync_to_async(persist_closed_candles)(at_ms=T0 + 4 * 60_000 + 5_000)  # minutes 0-3
    # Redis forgets minutes 0 and 1 (retention): the database still has them.
    for m in (0, 1):
        await redis_client().delete(keys.candle_key("BTC-USD", "1m", T0 + m * 60_000))
    got = await candles(symbol="BTC-USD", interval="1m", start=None, end=None, limit=100)
    assert [c.start for c in got] == [T0 + m * 60_000 for m in range(6)]
    assert [c.ticks for c in got] == [3] * 6

    # Redis is newer than the database for a bucket both hold: Redis wins.
    await sync_to_async(persist_closed_candles)(at_ms=T0 + 7 * 60_000)  # all six
    clock.ms = T0 + 5 * 60_000 + 59_000  # a late tick into the newest minute
    await TickPublisher.unfenced_for_tests().publish([draft(300.0, 0.5)])
    got = await candles(symbol="BTC-USD", interval="1m", start=T0 + 5 * 60_000, end=None, limit=1)
    assert [(c.start, c.ticks, c.high) for c in got] == [(T0 + 5 * 60_000, 4, 300.0)]


async def test_range_and_limit_semantics(clock, async_symbols):
    await publish_minutes(clock, 6)
    await sync_to_async(persist_closed_candles)(at_ms=T0 + 3 * 60_000 + 5_000)

    async def starts(**kw):
        got = await candles(symbol="BTC-USD", interval="1m", **kw)
        return [(c.start - T0) // 60_000 for c in got]

    assert await starts(start=None, end=None, limit=2) == [4, 5]  # the latest two
    assert await starts(start=T0 + 60_000, end=None, limit=2) == [1, 2]  # first two from start
    assert await starts(start=T0 + 60_000, end=T0 + 4 * 60_000, limit=100) == [1, 2, 3]
    assert await starts(start=None, end=T0 + 4 * 60_000, limit=2) == [2, 3]
    assert await starts(start=T0 + 30_000, end=T0 + 60_001, limit=10) == [1]
    assert await starts(start=T0 + 10 * 60_000, end=None, limit=10) == []


async def test_one_second_candles_come_from_redis_only(clock, async_symbols):
    await publish_minutes(clock, 2, per_minute=2)
    got = await candles(symbol="BTC-USD", interval="1s", start=None, end=None, limit=10)
    assert [c.start - T0 for c in got] == [0, 10_000, 60_000, 70_000]


async def test_session_open_is_the_first_price_of_the_utc_day(clock, async_symbols):
    day = T0 - T0 % 86_400_000
    clock.ms = day - 1_000  # yesterday's last second
    await TickPublisher.unfenced_for_tests().publish([draft(50.0)])
    clock.ms = day + 5_000
    await TickPublisher.unfenced_for_tests().publish([draft(60.0)])
    clock.ms = T0
    await TickPublisher.unfenced_for_tests().publish([draft(70.0)])
    assert await session_opens(symbols=["BTC-USD", "ETH-USD"], at_ms=T0) == {"BTC-USD": 60.0}
    # Without Redis' copy the persisted 1h candle answers.
    await sync_to_async(persist_closed_candles)(at_ms=T0 + 3_600_000 * 3)
    await redis_client().delete(keys.candle_index_key("BTC-USD", "1h"))
    assert await session_opens(symbols=["BTC-USD"], at_ms=T0) == {"BTC-USD": 60.0}
