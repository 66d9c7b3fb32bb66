"""Leases, numbering and history against real Redis."""

import asyncio
import threading

import pytest

from feeds.lease import SymbolLeases
from feeds.services import run_feed
from markets import keys
from markets.history import latest_ticks, ticks_after
from markets.publishing import TickPublisher, publish_tick_unfenced_for_tests
from markets.redis import redis_client
from markets.ticks import TickDraft

pytestmark = pytest.mark.usefixtures("clean_redis")


def draft(symbol="BTC-USD", price=100.0):
    return TickDraft(symbol, price, price - 1, price + 1, 1.0)


async def test_seq_rises_by_one_per_tick_and_history_keeps_them():
    seqs = [(await publish_tick_unfenced_for_tests(draft(price=100 + i))).seq for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert [t.seq for t in await ticks_after(symbol="BTC-USD", after_seq=2, limit=10)] == [3, 4, 5]
    last = (await latest_ticks(symbols=["BTC-USD", "ETH-USD"]))["BTC-USD"]
    assert (last.seq, last.price) == (5, 104)


async def test_history_depth_is_bounded(settings):
    settings.HISTORY_DEPTH = 100
    publisher = TickPublisher.unfenced_for_tests()
    for _ in range(50):
        await publisher.publish([draft() for _ in range(10)])
    length = await redis_client().xlen(keys.history_key("BTC-USD"))
    # MAXLEN ~ trims whole nodes, so it may keep a little more than asked, never all.
    assert 100 <= length < 300


async def test_only_the_lease_holder_can_publish():
    r = redis_client()
    a = SymbolLeases(r, token="a", ttl_seconds=5)
    b = SymbolLeases(r, token="b", ttl_seconds=5)
    assert await a.acquire(["BTC-USD", "ETH-USD"]) == ["BTC-USD", "ETH-USD"]
    assert await b.acquire(["BTC-USD", "ETH-USD", "AAPL"]) == ["AAPL"]
    published = await TickPublisher(lease_token="b").publish([draft("BTC-USD"), draft("AAPL")])
    assert [t.symbol for t in published] == ["AAPL"]
    assert await r.get(keys.seq_key("BTC-USD")) is None  # a refused tick takes no seq
    assert await b.renew(["BTC-USD", "AAPL"]) == ["AAPL"]
    await a.release(["BTC-USD"])
    assert await b.acquire(["BTC-USD"]) == ["BTC-USD"]


async def test_an_expired_lease_can_be_taken_over():
    r = redis_client()
    a = SymbolLeases(r, token="a", ttl_seconds=1)
    b = SymbolLeases(r, token="b", ttl_seconds=1)
    await a.acquire(["MSFT"])
    assert await b.acquire(["MSFT"]) == []
    await asyncio.sleep(1.1)
    assert await b.acquire(["MSFT"]) == ["MSFT"]
    assert await a.renew(["MSFT"]) == []


@pytest.mark.usefixtures("async_symbols")
async def test_two_feeds_share_the_symbols_without_overlap():
    stop = threading.Event()
    a = asyncio.create_task(run_feed(stop=stop, tick_rate=20, lease_seconds=2, max_seconds=3))
    await asyncio.sleep(0.3)
    b = asyncio.create_task(run_feed(stop=stop, tick_rate=20, lease_seconds=2, max_seconds=3))
    first, second = await asyncio.gather(a, b)
    # The first feed took every symbol; the second found nothing free and left.
    assert first.acquired and not second.acquired
    assert second.ticks == 0
    assert first.ticks > 0
    count = await redis_client().get(keys.seq_key("BTC-USD"))
    # At most 20/s for about 3 s: one producer, not two (a loaded machine makes fewer).
    assert 1 <= int(count) <= 66
    # Leases are released on the way out, so a successor need not wait for the TTL.
    assert await redis_client().get(keys.lease_key("BTC-USD")) is None


@pytest.mark.usefixtures("async_symbols")
async def test_a_feed_continues_the_price_path_of_its_predecessor():
    stop = threading.Event()
    await run_feed(stop=stop, tick_rate=20, lease_seconds=2, max_seconds=0.5)
    before = (await latest_ticks(symbols=["AAPL"]))["AAPL"]
    await run_feed(stop=stop, tick_rate=20, lease_seconds=2, max_seconds=0.3, seed=99)
    after = await ticks_after(symbol="AAPL", after_seq=before.seq, limit=1)
    assert after[0].seq == before.seq + 1
    assert abs(after[0].price - before.price) / before.price < 0.01


async def test_the_fence_is_on_by_default():
    # A publisher needs a lease token; only the test-named constructor goes without.
    with pytest.raises(ValueError, match="unfenced_for_tests"):
        TickPublisher(lease_token="")
    with pytest.raises(TypeError):
        TickPublisher()  # type: ignore[call-arg]
    # An empty token that reached the script anyway is refused like any other stranger.
    stray = TickPublisher.__new__(TickPublisher)
    stray._setup("")
    assert await stray.publish([draft()]) == []
    assert await redis_client().get(keys.seq_key("BTC-USD")) is None
    assert len(await TickPublisher.unfenced_for_tests().publish([draft()])) == 1
