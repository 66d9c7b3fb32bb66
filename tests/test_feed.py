import asyncio
import json
import time
from unittest import mock

import pytest

from markets import history
from markets.publishing import publish_tick_unfenced_for_tests
from markets.ticks import TickDraft
from streaming.feed import SymbolFeed

pytestmark = pytest.mark.usefixtures("clean_redis")


async def test_concurrent_subscribers_share_one_read_and_encode():
    for i in range(5):
        await publish_tick_unfenced_for_tests(TickDraft("AAPL", 100.0 + i, 99.0, 101.0, 1.0))
    reader = SymbolFeed("AAPL")
    joined_at = time.monotonic()
    with mock.patch.object(history, "snapshot", wraps=history.snapshot) as read:
        snaps = await asyncio.gather(*(reader.read(joined_at=joined_at) for _ in range(50)))
    assert read.await_count == 1
    assert len({id(s) for s in snaps}) == 1
    frame = json.loads(snaps[0].text)
    assert frame["type"] == "snapshot" and frame["symbol"] == "AAPL"
    assert [t["seq"] for t in frame["ticks"]] == [1, 2, 3, 4, 5]
    assert snaps[0].last_seq == 5


async def test_a_subscriber_that_joined_after_a_read_began_gets_a_fresh_read():
    reader = SymbolFeed("MSFT")
    await publish_tick_unfenced_for_tests(TickDraft("MSFT", 400.0, 399.0, 401.0, 1.0))
    first = await reader.read(joined_at=time.monotonic())
    # This tick was published after the first read; a later joiner must see it.
    await publish_tick_unfenced_for_tests(TickDraft("MSFT", 401.0, 400.0, 402.0, 1.0))
    second = await reader.read(joined_at=time.monotonic())
    assert (first.last_seq, second.last_seq) == (1, 2)


async def test_a_failed_read_reaches_every_waiter_and_the_next_read_retries():
    reader = SymbolFeed("AAPL")
    joined_at = time.monotonic()
    with mock.patch.object(history, "snapshot", side_effect=ConnectionError("down")):
        results = await asyncio.gather(
            *(reader.read(joined_at=joined_at) for _ in range(3)),
            return_exceptions=True,
        )
    assert all(isinstance(r, ConnectionError) for r in results)
    snap = await reader.read(joined_at=time.monotonic())
    assert snap.last_seq == 0 and json.loads(snap.text)["ticks"] == []


async def publish_n(symbol: str, n: int) -> None:
    for i in range(n):
        await publish_tick_unfenced_for_tests(TickDraft(symbol, 100.0 + i, 99.0, 101.0, 1.0))


async def test_later_reads_fetch_only_the_new_ticks_and_match_a_full_read():
    reader = SymbolFeed("ETH-USD", size=10)
    await publish_n("ETH-USD", 8)
    first = await reader.read(joined_at=time.monotonic())
    await publish_n("ETH-USD", 5)
    with mock.patch.object(history, "snapshot", wraps=history.snapshot) as full_read:
        second = await reader.read(joined_at=time.monotonic())
    assert full_read.await_count == 0  # extended from the first, not re-read
    assert (first.last_seq, second.last_seq) == (8, 13)
    fresh = await SymbolFeed("ETH-USD", size=10).read(joined_at=time.monotonic())
    assert second.text == fresh.text
    assert [t["seq"] for t in json.loads(second.text)["ticks"]] == list(range(4, 14))


async def test_a_new_epoch_or_trimmed_history_falls_back_to_a_full_read():
    from markets import keys
    from markets.redis import redis_client

    reader = SymbolFeed("SOL-USD", size=5)
    await publish_n("SOL-USD", 3)
    old = await reader.read(joined_at=time.monotonic())
    await redis_client().delete(keys.seq_key("SOL-USD"))  # Redis "lost" the counter
    await publish_n("SOL-USD", 2)
    new = await reader.read(joined_at=time.monotonic())
    assert new.epoch != old.epoch
    assert [t["seq"] for t in json.loads(new.text)["ticks"]] == [1, 2]
    # More new ticks than a snapshot holds: a full read of the newest ones.
    await publish_n("SOL-USD", 12)
    newest = await reader.read(joined_at=time.monotonic())
    assert [t["seq"] for t in json.loads(newest.text)["ticks"]] == list(range(10, 15))


async def test_live_ticks_extend_the_newest_snapshot_and_fill_holes_without_redis():
    reader = SymbolFeed("BTC-USD", size=4)
    await publish_n("BTC-USD", 3)
    await reader.read(joined_at=time.monotonic())
    for seq in (4, 4, 5, 7):  # a second copy of 4, then a hole at 6
        reader.observe(seq=seq, text=f'{{"seq":{seq}}}', ts=seq)
    assert reader.cached_range(after_seq=2, before_seq=5) == [
        '{"type":"tick","symbol":"BTC-USD","seq":3,"ts":'
        + json.loads(reader.latest.tick_texts[1])["ts"].__str__()
        + ',"price":102.0,"bid":99.0,"ask":101.0,"size":1.0}',
        '{"seq":4}',
    ]
    assert reader.cached_range(after_seq=3, before_seq=6) == [
        '{"seq":4}',
        '{"seq":5}',
    ]
    # Older than the ring holds, or newer than it reaches: not cached.
    assert reader.cached_range(after_seq=0, before_seq=3) is None
    assert reader.cached_range(after_seq=5, before_seq=8) is None


async def test_a_joined_feed_whose_ring_is_current_serves_snapshots_without_redis():
    await publish_n("XRP-USD", 4)
    feed = SymbolFeed("XRP-USD", size=10)
    feed.joined = True  # the hub joined the group: every later tick arrives live
    first = await feed.read(joined_at=time.monotonic())
    feed.deliver(5, '{"seq":5}', 0)
    with mock.patch.object(history, "snapshot", side_effect=AssertionError("no read")):
        second = await feed.read(joined_at=time.monotonic())
    assert (first.last_seq, second.last_seq) == (4, 5)
    # A tick after a hole leaves the ring behind: the next read asks Redis again.
    feed.deliver(7, '{"seq":7}', 0)
    from streaming import feed as feed_module

    with mock.patch.object(feed_module, "_extend", wraps=feed_module._extend) as extend:
        await feed.read(joined_at=time.monotonic())
    assert extend.await_count == 1


async def test_a_read_newer_than_the_delivered_ticks_leaves_them_to_be_delivered():
    await publish_n("ADA-USD", 4)
    feed = SymbolFeed("ADA-USD", size=10)
    feed.joined = True
    feed.deliver(2, '{"seq":2}', 0)  # the hub is behind: 3 and 4 are on their way
    snap = await feed.read(joined_at=time.monotonic())
    # Only this read's subscribers have 3 and 4: the feed still delivers them.
    assert (snap.last_seq, feed.last_seq) == (4, 2)
    # A later subscriber gets them live too: the ring serves it, without Redis.
    with mock.patch("streaming.feed.redis_for", side_effect=AssertionError("no read")):
        assert await feed.read(joined_at=time.monotonic()) is snap
