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
    # A snapshot read reached seq 10 (ts 5000) before the live ticks 8-10 arrived.
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
