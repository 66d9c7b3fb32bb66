"""The binance adapter against a fake Binance spot stream server on 127.0.0.1."""

import json
import time

import pytest

from feeds.sources.binance import BinanceSource
from tests.fake_exchanges import FakeBinance
from tests.feeds_helpers import collecting, make_source

# The documented payloads (developers.binance.com, "WebSocket Streams").
DOC_TRADE = {
    "e": "trade", "E": 1672515782136, "s": "BNBBTC", "t": 12345, "p": "0.001", "q": "100",
    "T": 1672515782136, "m": True, "M": True,
}  # fmt: skip
DOC_BOOK = {
    "u": 400900217, "s": "BNBUSDT", "b": "25.35190000", "B": "31.21000000",
    "a": "25.36520000", "A": "40.66000000",
}  # fmt: skip


@pytest.fixture
async def fake(settings):
    async with FakeBinance({"BTCUSDT": 97000.0, "BNBBTC": 0.001}) as f:
        settings.BINANCE_WS_URL = f.url
        yield f


def source(ticker="BTC-USDT", **kw) -> BinanceSource:
    return make_source(ticker, "binance", **kw)


async def test_combined_streams_lower_case_and_subscribe_with_an_id(fake):
    src = source("BTC-USD", symbol="BTCUSDT")
    async with collecting(src) as c:
        await c.until(lambda: src.stats.state == "up", what="subscribed")
    streams = ["btcusdt@trade", "btcusdt@bookTicker", "btcusdt@depth@100ms"]
    assert fake.paths == [f"/stream?streams={'/'.join(streams)}"]
    assert fake.received == [{"method": "SUBSCRIBE", "params": streams, "id": 1}]
    assert fake.rest_requests == []  # the book's snapshot waits for the first depth event


async def test_the_documented_trade_and_book_ticker_make_a_tick(fake):
    src = source("BNB-BTC")
    async with collecting(src) as c:
        await c.until(lambda: src.stats.state == "up")
        wrap = {"stream": "bnbbtc@trade", "data": DOC_TRADE}
        await fake.broadcast(json.dumps(wrap))  # before any book: bid = ask = price
        await c.count(1)
        await fake.broadcast(json.dumps({"stream": "bnbbtc@bookTicker", "data": DOC_BOOK}))
        await fake.broadcast(json.dumps({**wrap, "data": {**DOC_TRADE, "t": 12346}}))
        await c.count(2)
    first, second = c.drafts
    assert (first.symbol, first.price, first.bid, first.ask, first.size) == (
        "BNB-BTC", 0.001, 0.001, 0.001, 100.0,
    )  # fmt: skip
    assert (second.bid, second.ask) == (25.3519, 25.3652)
    assert src.stats.exchange_ms == 1672515782136
    # "m": true, the buyer was the maker: the seller took the bid.
    assert first.side == second.side == "sell"


async def test_the_side_of_a_trade_is_its_aggressor(fake):
    src = source("BNB-BTC")
    async with collecting(src) as c:
        await c.until(lambda: src.stats.state == "up")
        for t, maker_buyer in ((1, True), (2, False), (3, None)):
            data = {**DOC_TRADE, "t": t, "m": maker_buyer}
            if maker_buyer is None:
                del data["m"]
            await fake.broadcast(json.dumps({"stream": "bnbbtc@trade", "data": data}))
        await c.count(3)
    assert [d.side for d in c.drafts] == ["sell", "buy", None]


async def test_pings_are_answered(fake):
    src = source()
    async with collecting(src) as c:
        await c.until(lambda: src.stats.state == "up")
        latencies = await fake.ping_all()
    assert len(latencies) == 1
    print(f"\nbinance: the client answered a ping frame in {latencies[0] * 1000:.2f} ms")


async def test_a_trade_id_gap_is_counted_and_a_duplicate_dropped(fake):
    src = source()
    async with collecting(src) as c:
        await c.until(lambda: src.stats.state == "up")
        await fake.trade()
        await fake.skip(trades=4)
        await fake.trade()
        await c.count(2)
        assert (src.stats.gaps, src.missed_trades) == (1, 4)
        fake.trade_id["BTCUSDT"] -= 1  # the same trade again
        await fake.trade()
        await fake.trade()
        await c.count(3)
    assert src.stats.ignored == 1


async def test_the_24h_disconnect_and_server_shutdown_reconnect_and_resubscribe(fake):
    fake.session_seconds = 0.5  # Binance: 24 h
    src = source()
    async with collecting(src) as c:
        await c.until(lambda: fake.connections >= 3, what="two session ends")
        await c.until(lambda: src.stats.state == "up")
        await fake.trade()
        await c.count(1)
        fake.session_seconds = None
        await c.until(lambda: fake.connections >= 4 and src.stats.state == "up")
        await fake.server_shutdown()
        await c.until(lambda: fake.connections >= 5 and src.stats.state == "up")
        await fake.trade()
        await c.count(2)
    subscribes = [m for m in fake.received if m.get("method") == "SUBSCRIBE"]
    assert len(subscribes) == fake.connections
    assert src.stats.reconnects == fake.connections - 1


async def test_a_dropped_connection_mid_stream_reconnects(fake):
    src = source()
    async with collecting(src) as c:
        await c.until(lambda: src.stats.state == "up")
        for _ in range(5):
            await fake.trade()
        await c.count(5)
        await fake.drop(abrupt=True)
        await c.until(lambda: fake.connections == 2 and src.stats.state == "up")
        for _ in range(5):
            await fake.trade()
        await c.count(10)
    assert src.stats.reconnects == 1
    assert src.stats.gaps == 0  # nothing traded while it was away


async def test_garbage_unexpected_and_oversized_frames_do_not_stop_it(fake):
    src = source()
    async with collecting(src) as c:
        await c.until(lambda: src.stats.state == "up")
        await fake.garbage()
        await fake.broadcast(json.dumps({"stream": "btcusdt@trade", "data": {"e": "trade"}}))
        await fake.broadcast(json.dumps({"stream": "btcusdt@kline_1m", "data": {"e": "kline"}}))
        await fake.broadcast(json.dumps({"e": "trade", "p": "1"}))  # not wrapped
        await fake.trade()
        await c.count(1)
        assert src.stats.reconnects == 0
        await fake.oversized(1024 * 1024)
        await c.until(lambda: fake.connections == 2 and src.stats.state == "up")
        await fake.trade()
        await c.count(2)
    assert src.stats.bad >= 7  # five garbage frames, a trade without fields, the oversized
    assert src.stats.ignored >= 2


async def test_an_error_reply_to_subscribe_is_reported_and_retried(fake):
    fake.refuse_subscribe = True
    src = source()
    async with collecting(src) as c:
        await c.until(lambda: fake.connections >= 3, what="retries")
        assert src.stats.state == "down"
        assert "too many parameters" in src.stats.last_error
        fake.refuse_subscribe = False
        await c.until(lambda: src.stats.state == "up", what="recovery")
    assert src.stats.errors >= 2


async def test_ticks_per_second_against_the_fake_exchange(fake):
    n = 5000
    src = source()
    async with collecting(src) as c:
        await c.until(lambda: src.stats.state == "up")
        t0 = time.perf_counter()
        await fake.burst(n)
        await c.count(n, timeout=60)
        elapsed = time.perf_counter() - t0
    print(f"\nbinance adapter: {n} trades in {elapsed:.3f}s = {n / elapsed:,.0f} ticks/s")
    assert len(c.drafts) == n
