"""The exchange sources' order books against fake exchanges that keep a true book.

The fakes (tests/fake_exchanges.py) mutate a book of their own and stream its changes:
Binance's diff depth stream with its REST snapshot, Coinbase's level2_batch. Each test
applies the source's BookDrafts as the feed loop does (tests/feeds_helpers.Collector)
and checks that this book converges to the fake's true book: after the first sync, after
a gap the fake injects (update ids nobody is told about), after a snapshot older than
the stream, a refused snapshot, a broken event, a crossed book and a reconnect.
"""

import asyncio
import contextlib
import json
from urllib.parse import parse_qs, urlsplit

import pytest

from feeds.sources import binance as binance_module
from tests.fake_exchanges import FakeBinance, FakeCoinbase
from tests.feeds_helpers import collecting, make_source


@pytest.fixture
async def binance(settings):
    async with FakeBinance({"BTCUSDT": 97000.0}) as fake:
        settings.BINANCE_WS_URL = fake.url
        settings.BINANCE_REST_URL = fake.rest_url
        yield fake


@pytest.fixture
async def coinbase(settings):
    async with FakeCoinbase({"BTC-USD": 97000.0}, heartbeat_seconds=0.2) as fake:
        settings.COINBASE_WS_URL = fake.url
        yield fake


def binance_source():
    return make_source("BTC-USDT", "binance")


@contextlib.asynccontextmanager
async def streaming(send, interval: float = 0.01):
    """Call ``send()`` every ``interval`` seconds while the block runs."""

    async def run():
        while True:
            await send()
            await asyncio.sleep(interval)

    task = asyncio.get_running_loop().create_task(run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def converged_binance(c, fake, src, symbol="BTCUSDT"):
    """Wait until the source applied the fake's last update, then compare the books."""
    await c.until(
        lambda: src.last_update_id == fake.update_id[symbol] and c.books,
        what=f"update id {fake.update_id[symbol]}",
    )
    assert c.levels() == fake.books[symbol].top()


# --- Binance


async def test_binance_syncs_from_the_snapshot_and_the_events_buffered_meanwhile(binance):
    binance.rest_delay = 0.3  # events keep coming while the snapshot is on its way
    src = binance_source()
    async with collecting(src) as c:
        await c.until(lambda: src.stats.state == "up")
        async with streaming(binance.depth):
            await c.until(lambda: c.snapshots == 1, what="the first sync")
            await c.until(lambda: len(c.books) >= 20, what="live deltas")
        await converged_binance(c, binance, src)
    assert c.books[0].snapshot
    assert c.snapshots == 1 and src.stats.book_gaps == 0
    assert src.stats.ignored == 0 and src.stats.bad == 0
    # One request, as documented: the symbol in upper case, 1000 levels.
    assert len(binance.rest_requests) == 1
    query = parse_qs(urlsplit(binance.rest_requests[0]).query)
    assert query == {"symbol": ["BTCUSDT"], "limit": ["1000"]}
    deltas = [b for b in c.books if not b.snapshot]
    assert all(b.symbol == "BTC-USDT" for b in c.books)
    assert any(b.bids for b in deltas) and any(b.asks for b in deltas)


async def test_binance_a_gap_discards_the_book_and_syncs_again(binance, caplog):
    src = binance_source()
    async with collecting(src) as c:
        await c.until(lambda: src.stats.state == "up")
        async with streaming(binance.depth):
            await c.until(lambda: c.snapshots == 1)
        await converged_binance(c, binance, src)
        for gaps in (1, 2):
            binance.skip_depth(changes=4)  # four update ids nobody is told about
            async with streaming(binance.depth):
                await c.until(lambda n=gaps: c.snapshots == 1 + n, what=f"resync {gaps}")
                assert src.stats.book_gaps == gaps
            await converged_binance(c, binance, src)
    assert len(binance.rest_requests) == 3
    assert src.stats.bad == 0
    # Logged once, not once per gap (KindLog: the first, then the 10th, 100th...).
    gaps = [r for r in caplog.records if "book gap" in r.getMessage()]
    assert len(gaps) == 1 and "update ids" in gaps[0].getMessage()
    assert sum("book synced again" in r.getMessage() for r in caplog.records) == 1


async def test_binance_a_gap_among_the_events_buffered_during_the_sync_is_found(binance):
    binance.rest_delay = 0.3
    src = binance_source()
    async with collecting(src) as c:
        await c.until(lambda: src.stats.state == "up")
        async with streaming(binance.depth):
            await c.until(lambda: len(binance.rest_requests) == 1, what="the first request")
            # After the snapshot was taken and before it arrives: an event, then a hole.
            # (A hole right after the snapshot would make it look older than the stream.)
            await binance.depth()
            binance.skip_depth(changes=2)
            await c.until(lambda: c.snapshots == 1, what="a sync")
            assert src.stats.book_gaps == 1 and len(binance.rest_requests) == 2
        await converged_binance(c, binance, src)


async def test_binance_a_snapshot_older_than_the_stream_is_fetched_again(binance):
    binance.freeze_snapshot()  # a lagging snapshot: older than every event streamed next
    binance.skip_depth(changes=3)
    src = binance_source()
    async with collecting(src) as c:
        await c.until(lambda: src.stats.state == "up")
        async with streaming(binance.depth):
            await c.until(lambda: len(binance.rest_requests) >= 2, what="a second request")
            assert c.books == []  # nothing published from a snapshot that cannot be used
            binance.thaw_snapshot()
            await c.until(lambda: c.snapshots == 1)
        await converged_binance(c, binance, src)
    assert src.stats.book_gaps == 0


async def test_binance_a_refused_snapshot_is_retried_after_retry_after(binance):
    binance.rest_status = 429
    src = binance_source()
    async with collecting(src) as c:
        await c.until(lambda: src.stats.state == "up")
        async with streaming(binance.depth, interval=0.02):
            await c.until(lambda: "HTTP 429" in src.stats.last_error, what="the 429")
            binance.rest_status = None
            await c.until(lambda: c.snapshots == 1, timeout=15, what="the sync after Retry-After")
        await converged_binance(c, binance, src)
    assert len(binance.rest_requests) >= 2


async def test_binance_a_snapshot_that_is_not_one_is_counted_and_fetched_again(binance):
    src = binance_source()
    async with collecting(src) as c:
        await c.until(lambda: src.stats.state == "up")
        async with streaming(binance.depth, interval=0.02):
            for body in ("{not json", "[1, 2]", '{"lastUpdateId": "7", "bids": [], "asks": []}'):
                binance.rest_body = body
                errors = src.stats.errors
                await c.until(lambda n=errors: src.stats.errors > n, what=f"the answer {body}")
                assert src.stats.last_error.startswith("book snapshot:")
            # Newer than every event (none is kept), with a price that is not a decimal.
            bad_level = {"lastUpdateId": 10**12, "bids": [["x", "1"]], "asks": []}
            binance.rest_body = json.dumps(bad_level)
            await c.until(lambda: src.stats.bad == 1, what="a snapshot with a bad level")
            binance.rest_body = None
            await c.until(lambda: c.snapshots == 1, timeout=20, what="the sync")
        await converged_binance(c, binance, src)
    assert src.stats.reconnects == 0 and c.books[0].snapshot


async def test_binance_a_snapshot_that_takes_too_long_is_abandoned_and_fetched_again(
    binance, monkeypatch
):
    monkeypatch.setattr(binance_module, "SNAPSHOT_TIMEOUT_SECONDS", 0.3)  # 10 s for real
    binance.rest_delay = 1.0  # past the timeout; short, as the fake waits for it to close
    src = binance_source()
    async with collecting(src) as c:
        await c.until(lambda: src.stats.state == "up")
        async with streaming(binance.depth, interval=0.02):
            await c.until(lambda: "Timeout" in src.stats.last_error, what="the timeout")
            binance.rest_delay = 0.0
            await c.until(lambda: c.snapshots == 1, timeout=20, what="the sync")
        await converged_binance(c, binance, src)
    assert src.stats.errors == 0  # no answer is not an error reply
    assert len(binance.rest_requests) >= 2


async def test_binance_broken_depth_events_resync_and_the_book_converges(binance):
    src = binance_source()

    async def send(data):
        await binance.broadcast(json.dumps({"stream": "btcusdt@depth@100ms", "data": data}))

    async with collecting(src) as c:
        await c.until(lambda: src.stats.state == "up")
        async with streaming(binance.depth):
            await c.until(lambda: c.snapshots == 1)
        await converged_binance(c, binance, src)
        # Without U and u: unreadable, so the book may miss it: bad, and a resync.
        await send({"e": "depthUpdate", "s": "BTCUSDT", "b": [], "a": []})
        async with streaming(binance.depth):
            await c.until(lambda: c.snapshots == 2, what="the resync after an unreadable event")
        await converged_binance(c, binance, src)
        assert src.stats.bad == 1
        # Already applied (u below the book's id): ignored, the book goes on.
        await send({"e": "depthUpdate", "U": 1, "u": 2, "b": [["x", "1"]], "a": []})
        await c.until(lambda: src.stats.ignored == 1, what="the stale event")
        # The next id, with a price that is not a decimal: bad, and a resync.
        n = binance.update_id["BTCUSDT"] + 1
        await send({"e": "depthUpdate", "U": n, "u": n, "b": [["1e3", "1"]], "a": []})
        binance.update_id["BTCUSDT"] = n  # the broken event used that id
        async with streaming(binance.depth):
            await c.until(lambda: c.snapshots == 3, what="the resync after a bad level")
        await converged_binance(c, binance, src)
    assert src.stats.bad == 2 and src.stats.ignored == 1
    assert src.stats.reconnects == 0 and src.stats.book_gaps == 0


async def test_binance_a_crossed_book_is_published_then_synced_again(binance):
    src = binance_source()
    async with collecting(src) as c:
        await c.until(lambda: src.stats.state == "up")
        async with streaming(binance.depth):
            await c.until(lambda: c.snapshots == 1)
        await converged_binance(c, binance, src)
        n = binance.update_id["BTCUSDT"] + 1
        best_ask = binance.books["BTCUSDT"].top(1)[1][0][0]
        # A bid at the best ask: the true book never holds it (the fake's truth is kept).
        crossing = {"e": "depthUpdate", "U": n, "u": n, "b": [[best_ask, "1.0"]], "a": []}
        await binance.broadcast(json.dumps({"stream": "btcusdt@depth@100ms", "data": crossing}))
        await c.until(lambda: c.book.crossed(), what="the crossed book published")
        async with streaming(binance.depth):
            await c.until(lambda: c.snapshots == 2, what="the resync")
        await converged_binance(c, binance, src)
    assert not c.book.crossed()


async def test_binance_a_reconnect_syncs_the_book_again(binance):
    src = binance_source()
    async with collecting(src) as c:
        await c.until(lambda: src.stats.state == "up")
        async with streaming(binance.depth):
            await c.until(lambda: c.snapshots == 1)
        await binance.drop(abrupt=True)
        binance.skip_depth(changes=10)  # the book moves on while nobody listens
        await c.until(lambda: binance.connections == 2 and src.stats.state == "up")
        async with streaming(binance.depth):
            await c.until(lambda: c.snapshots == 2, what="the sync on the new connection")
        await converged_binance(c, binance, src)
    assert src.stats.reconnects == 1 and src.stats.book_gaps == 0


# --- Coinbase


async def converged_coinbase(c, fake, src, product="BTC-USD"):
    marker = await fake.l2update(product, changes=1)  # the last change: wait for it
    price, size = marker["changes"][0][1:]
    side = "bids" if marker["changes"][0][0] == "buy" else "asks"

    def applied():
        return c.books and any(
            [price, size] in getattr(b, side) or (price, size) in getattr(b, side)
            for b in c.books[-3:]
        )

    await c.until(applied, what="the last l2update")
    assert c.levels() == fake.books[product].top()


async def test_coinbase_level2_batch_snapshot_then_changes_converge(coinbase):
    src = make_source("BTC-USD", "coinbase")
    async with collecting(src) as c:
        await c.until(lambda: src.stats.state == "up" and c.snapshots == 1)
        assert c.levels() == coinbase.books["BTC-USD"].top()
        for _ in range(200):
            await coinbase.l2update(changes=3)
        await converged_coinbase(c, coinbase, src)
    assert c.snapshots == 1 and src.stats.bad == 0
    assert len(c.books) == 202


async def test_coinbase_lost_changes_are_healed_by_the_snapshot_of_a_new_connection(coinbase):
    src = make_source("BTC-USD", "coinbase")
    async with collecting(src) as c:
        await c.until(lambda: src.stats.state == "up" and c.snapshots == 1)
        for _ in range(20):
            await coinbase.l2update()
        await converged_coinbase(c, coinbase, src)
        await coinbase.drop(abrupt=True)
        coinbase.l2_unsent(changes=10)
        await c.until(lambda: c.snapshots == 2, what="the new connection's snapshot")
        for _ in range(20):
            await coinbase.l2update()
        await converged_coinbase(c, coinbase, src)
    assert src.stats.reconnects == 1


async def test_coinbase_a_crossed_book_or_a_bad_change_resyncs(coinbase):
    src = make_source("BTC-USD", "coinbase")
    async with collecting(src) as c:
        await c.until(lambda: src.stats.state == "up" and c.snapshots == 1)
        best_ask = coinbase.books["BTC-USD"].top(1)[1][0][0]
        crossing = {
            "type": "l2update",
            "product_id": "BTC-USD",
            "time": "2022-10-19T23:28:22.061769Z",
            "changes": [["buy", best_ask, "1.00000000"]],
        }
        await coinbase.broadcast(json.dumps(crossing))
        await c.until(lambda: c.snapshots == 2, what="the resync after the crossed book")
        assert any(b.bids == [(best_ask, "1.00000000")] for b in c.books)  # published first
        await converged_coinbase(c, coinbase, src)
        await coinbase.broadcast(json.dumps({**crossing, "changes": [["up", "1", "1"]]}))
        await c.until(lambda: c.snapshots == 3, what="the resync after a bad change")
        await converged_coinbase(c, coinbase, src)
    assert src.stats.bad == 1 and src.stats.reconnects == 2


async def test_binance_depth_events_per_second_against_the_fake(binance):
    """A bounded burst: how fast the adapter turns depth events into book drafts."""
    n = 2000
    src = binance_source()
    async with collecting(src) as c:
        await c.until(lambda: src.stats.state == "up")
        async with streaming(binance.depth):
            await c.until(lambda: c.snapshots == 1)
        await converged_binance(c, binance, src)
        before = len(c.books)
        t0 = asyncio.get_running_loop().time()
        for _ in range(n):
            await binance.depth(changes=3)
        await c.until(lambda: len(c.books) >= before + n, timeout=60, what=f"{n} events")
        elapsed = asyncio.get_running_loop().time() - t0
        await converged_binance(c, binance, src)
    print(f"\nbinance book: {n} depth events (3 levels each) in {elapsed:.3f}s = "
          f"{n / elapsed:,.0f} events/s, fake server and adapter in one process")  # fmt: skip


async def test_coinbase_a_snapshot_above_the_tick_frame_limit_is_taken(coinbase):
    """A whole book in one frame: 20,000 levels a side (about 1 MB) syncs."""
    from tests.fake_exchanges import FakeBook

    coinbase.books["BTC-USD"] = FakeBook(97000.0, levels=20_000, seed=7)
    src = make_source("BTC-USD", "coinbase")
    t0 = asyncio.get_running_loop().time()
    async with collecting(src) as c:
        await c.until(lambda: c.snapshots == 1, timeout=30, what="the big snapshot")
        took = asyncio.get_running_loop().time() - t0
        assert c.book.depths() == (20_000, 20_000)
        for _ in range(20):
            await coinbase.l2update()
        await converged_coinbase(c, coinbase, src)
    size = len(json.dumps(coinbase.snapshot_message("BTC-USD")))
    print(f"\ncoinbase book: a {size / 1e6:.2f} MB snapshot (20,000 levels a side) synced "
          f"{took:.2f}s after the source started")  # fmt: skip
    assert size > 256 * 1024 and src.stats.bad == 0 and src.stats.reconnects == 0


async def test_stopping_the_source_closes_its_connection_and_http_client(binance):
    src = binance_source()
    async with collecting(src) as c:
        await c.until(lambda: src.stats.state == "up")
        async with streaming(binance.depth):
            await c.until(lambda: c.snapshots == 1)
        assert src.http is not None and len(binance.clients) == 1
    # collecting() closed the generator: the WebSocket is closed by then, not later.
    for _ in range(500):  # at most 5 s
        if not binance.clients:
            break
        await asyncio.sleep(0.01)
    assert binance.clients == set()
    assert src.http is None and src.background is None
