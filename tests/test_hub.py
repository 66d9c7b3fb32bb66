"""streaming.hub.Hub: what a live tick that is not the next one means."""

import pytest

from streaming.feed import SymbolFeed
from streaming.hub import Hub

pytestmark = pytest.mark.usefixtures("close_hub")


def event(seq: int, ts: int) -> dict:
    return {"type": "tick.message", "symbol": "BTC-USD", "seq": seq, "ts": ts, "text": "{}"}


async def test_a_tick_older_than_the_newest_known_is_a_copy_and_costs_no_history_read():
    hub = Hub()
    feed = hub.feeds["BTC-USD"] = SymbolFeed("BTC-USD")
    # Ticks up to 10 (ts 5000) were delivered (refilled from history) before these copies.
    feed.last_seq, feed.known_ts = 10, 5000
    for seq, ts in ((8, 4800), (9, 4900), (10, 5000)):
        await hub._on_tick(event(seq, ts))
    assert hub._suspect == set()
    assert feed.last_seq == 10


async def test_a_lower_seq_with_a_newer_ts_is_a_restarted_numbering_to_check():
    hub = Hub()
    feed = hub.feeds["BTC-USD"] = SymbolFeed("BTC-USD")
    feed.last_seq, feed.known_ts = 10, 5000
    await hub._on_tick(event(1, 5100))  # Redis lost the counter: seq 1 of a new epoch
    assert hub._suspect == {"BTC-USD"}


async def test_the_first_live_tick_after_a_hole_since_the_snapshot_read_is_refilled(clean_redis):
    from markets.publishing import publish_tick_unfenced_for_tests
    from markets.ticks import TickDraft
    from streaming.outbox import Outbox
    from streaming.subscription import Subscription

    async def publish(n: int) -> list:
        draft = TickDraft("BTC-USD", 100.0, 99.0, 101.0, 1.0)
        return [await publish_tick_unfenced_for_tests(draft) for _ in range(n)]

    hub = Hub()
    feed = hub.feeds["BTC-USD"] = SymbolFeed("BTC-USD")
    feed.joined = True
    await publish(3)
    sub = Subscription(feed, Outbox(max_bytes=1 << 20, max_age_ms=10**12))
    feed.subscribers.add(sub)
    await feed.read(joined_at=0)  # the snapshot reaches 3; no live tick delivered yet
    assert feed.last_seq == 0
    _lost, five = await publish(2)
    # The layer lost 4: the first live tick is 5.
    await hub._on_tick(dict(event(5, five.ts), text=five.to_json()))
    assert hub.refills == 1 and feed.last_seq == 5
    assert [seq for seq, _, _ in sub.held] == [4, 5]
