"""The coinbase adapter against a fake Coinbase Exchange feed on 127.0.0.1."""

import json
import time

import pytest

from feeds.sources.coinbase import CoinbaseSource
from tests.fake_exchanges import FakeCoinbase
from tests.feeds_helpers import collecting, make_source

# The documented ticker message (docs.cdp.coinbase.com, Exchange WebSocket channels).
DOC_TICKER = {
    "type": "ticker",
    "sequence": 37475248783,
    "product_id": "ETH-USD",
    "price": "1285.22",
    "best_bid": "1285.04",
    "best_bid_size": "0.46688654",
    "best_ask": "1285.27",
    "best_ask_size": "1.56637040",
    "side": "buy",
    "time": "2022-10-19T23:28:22.061769Z",
    "trade_id": 370843401,
    "last_size": "11.4396987",
}


@pytest.fixture
async def fake(settings):
    async with FakeCoinbase({"BTC-USD": 97000.0, "ETH-USD": 1285.0}, heartbeat_seconds=0.2) as f:
        settings.COINBASE_WS_URL = f.url
        yield f


def source(product="BTC-USD", **kw) -> CoinbaseSource:
    return make_source(product, "coinbase", **kw)


async def test_subscribes_to_ticker_and_heartbeat_and_maps_the_documented_ticker(fake):
    src = source("ETH-USD")
    async with collecting(src) as c:
        await c.until(lambda: src.stats.state == "up", what="subscribed")
        assert fake.received[0] == {
            "type": "subscribe",
            "product_ids": ["ETH-USD"],
            "channels": ["ticker", "heartbeat", "level2_batch"],
        }
        await fake.broadcast(json.dumps(DOC_TICKER))
        await fake.broadcast(json.dumps({**DOC_TICKER, "sequence": 37475248784, "side": "sell"}))
        await c.count(2)
    d = c.drafts[0]
    assert (d.symbol, d.price, d.bid, d.ask, d.size) == (
        "ETH-USD", 1285.22, 1285.04, 1285.27, 11.4396987,
    )  # fmt: skip
    # The ticker's side is the taker's (docs: "side": "buy", // taker side): the aggressor.
    assert [d.side for d in c.drafts] == ["buy", "sell"]
    assert src.stats.exchange_ms == 1666222102061


async def test_heartbeats_are_read_but_make_no_ticks(fake):
    src = source()
    async with collecting(src) as c:
        await c.until(lambda: src.stats.messages >= 4, what="heartbeats")
        assert c.drafts == []
        assert src.stats.state == "up" and src.stats.bad == 0


async def test_a_sequence_gap_is_counted_through_the_heartbeat_and_the_feed_goes_on(fake):
    src = source()
    async with collecting(src) as c:
        await c.until(lambda: src.stats.state == "up")
        for _ in range(3):
            await fake.ticker()
        await c.count(3)
        assert src.stats.gaps == 0
        await fake.skip(trades=5)  # five trades nobody is told about
        await fake.heartbeat()
        await c.until(lambda: src.stats.gaps == 1, what="the gap")
        assert src.missed_trades == 5
        late = await fake.ticker()
        await c.count(4)
        # A duplicate (same sequence) is dropped, not published twice.
        await fake.broadcast(json.dumps(late))
        await fake.ticker()
        await c.count(5)
    assert src.stats.ignored >= 1
    assert [d.price for d in c.drafts[3:]] == [float(late["price"]), c.drafts[4].price]


async def test_a_connection_dropped_mid_stream_reconnects_and_resubscribes(fake):
    src = source()
    async with collecting(src) as c:
        await c.until(lambda: src.stats.state == "up")
        for _ in range(5):
            await fake.ticker()
        await c.count(5)
        t0 = time.perf_counter()
        await fake.drop(abrupt=True)
        await c.until(
            lambda: fake.connections == 2 and src.stats.state == "up", what="resubscribed"
        )
        print(
            f"\ncoinbase: reconnected and resubscribed {time.perf_counter() - t0:.3f}s after a drop"
        )
        for _ in range(5):
            await fake.ticker()
        await c.count(10)
        await fake.drop(abrupt=False)  # a clean close too
        await c.until(lambda: fake.connections == 3 and src.stats.state == "up")
    assert src.stats.reconnects == 2
    assert [m["type"] for m in fake.received] == ["subscribe"] * 3


async def test_garbage_and_unexpected_messages_are_counted_and_skipped(fake):
    src = source()
    async with collecting(src) as c:
        await c.until(lambda: src.stats.state == "up")
        await fake.garbage()
        await fake.broadcast(json.dumps({"type": "ticker", "product_id": "BTC-USD", "price": "x"}))
        await fake.broadcast(json.dumps({"type": "status", "products": []}))
        await fake.broadcast(json.dumps({**DOC_TICKER, "sequence": "not a number"}))
        await fake.ticker()
        await c.count(1)
    assert src.stats.bad >= 6  # five garbage frames, a bad price, a bad sequence
    assert src.stats.ignored >= 1  # status: a type it does not use
    assert src.stats.reconnects == 0


async def test_an_oversized_frame_closes_the_connection_and_the_adapter_reconnects(fake):
    src = source()
    # The real limit (32 MiB) leaves room for a whole book's snapshot; a smaller one here
    # keeps the frame that crosses it small.
    src.max_message_bytes = 256 * 1024
    async with collecting(src) as c:
        await c.until(lambda: src.stats.state == "up")
        await fake.oversized(1024 * 1024)
        await c.until(lambda: fake.connections == 2 and src.stats.state == "up", what="reconnect")
        await fake.ticker()
        await c.count(1)
    assert src.stats.bad == 1 and src.stats.reconnects == 1


async def test_an_error_reply_to_the_subscription_is_reported_and_retried_with_backoff(fake):
    src = source("NOPE-USD")
    async with collecting(src) as c:
        await c.until(lambda: fake.connections >= 3, what="retries")
        assert src.stats.state == "down"
        assert src.stats.errors >= 2
        assert "NOPE-USD is not a valid product" in src.stats.last_error
        assert c.drafts == []


async def test_an_error_message_mid_stream_is_counted_and_the_feed_goes_on(fake):
    src = source()
    async with collecting(src) as c:
        await c.until(lambda: src.stats.state == "up")
        await fake.error("Internal error", "something broke")
        await fake.ticker()
        await c.count(1)
    assert src.stats.errors == 1 and src.stats.reconnects == 0
    assert src.stats.last_error == "Internal error: something broke"


async def test_ticks_per_second_against_the_fake_exchange(fake):
    """A bounded burst: how fast the adapter turns ticker messages into drafts."""
    n = 5000
    src = source()
    async with collecting(src) as c:
        await c.until(lambda: src.stats.state == "up")
        t0 = time.perf_counter()
        await fake.burst(n)
        await c.count(n, timeout=60)
        elapsed = time.perf_counter() - t0
    print(f"\ncoinbase adapter: {n} tickers in {elapsed:.3f}s = {n / elapsed:,.0f} ticks/s")
    assert len(c.drafts) == n
