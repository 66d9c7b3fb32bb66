"""Exchange sources end to end: real uvicorn, Celery worker and beat, Redis, fake exchanges.

COINBASE_WS_URL, BINANCE_WS_URL and BINANCE_REST_URL point at fake servers on 127.0.0.1
(threads of this test process); one stack serves the file's tests, in order.

- Ticks: a symbol switched to an exchange with `manage.py feeds set` gets the exchange's
  ticks within seconds; the fake drops the connection mid-stream; a WebSocket client
  receives every tick with seq carrying on across the switch and the disconnect.
- Order books (issue 21): each fake mutates a true book (Binance: the diff depth stream
  and its REST snapshot; Coinbase: level2_batch). A client holding both books at depth
  10, checking prev_seq and the checksum of every message, converges to the fakes' true
  top 10; then the Binance fake skips update ids (a gap nobody is told about) and the
  Coinbase fake loses changes and drops the connection: each source syncs its book
  again, the client gets a fresh book snapshot under a new epoch and converges again,
  with no prev_seq break and no checksum failure; feeds list, /api/health/ and /metrics
  show the gap and the resyncs.
"""

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from markets.book import OrderBook, checksum
from tests.fake_exchanges import FakeBinance, FakeCoinbase
from tests.feeds_helpers import ResumingClient, first_tick_ts, wait_for_published
from tests.realstack import BASE_DIR, real_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Prices far from the simulated ones, so the client can tell whose tick it got.
COINBASE_PRICE = 12345.0
BINANCE_PRICE = 777.0
RATE = 20  # ticks per second each fake exchange sends


def from_coinbase(price: float) -> bool:
    return abs(price - COINBASE_PRICE) < 100


def from_binance(price: float) -> bool:
    return abs(price - BINANCE_PRICE) < 10


async def until(predicate, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not predicate():
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


@pytest.fixture(scope="module")
def exchanges(tmp_path_factory):
    """The fake exchanges (threads, streaming at RATE) and a real stack using them."""
    coinbase = FakeCoinbase({"BTC-USD": COINBASE_PRICE})
    binance = FakeBinance({"ETHUSDT": BINANCE_PRICE})
    with coinbase.threaded(), binance.threaded():
        for fake in (coinbase, binance):
            fake.loop.call_soon_threadsafe(fake.start_stream, RATE)
        with real_stack(
            tmp_path_factory.mktemp("stack"),
            COINBASE_WS_URL=coinbase.url,
            BINANCE_WS_URL=binance.url,
            BINANCE_REST_URL=binance.rest_url,
        ) as stack:
            yield stack, coinbase, binance


def set_source_now(stack, ticker: str, source: str, **options) -> tuple[float, bool]:
    """Save a symbol's source; returns when it was saved (time.time()) and if exactly."""
    url = stack.env["DATABASE_URL"]
    if not url.startswith("sqlite:///"):
        started = time.time()  # an upper bound: includes the command's start-up
        extra = ["--product-id", next(iter(options.values()))] if options else []
        stack.manage("feeds", "set", ticker, source, *extra)
        return started, False
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        db.execute(
            "UPDATE markets_symbol SET source = ?, source_options = ? WHERE ticker = ?",
            (source, json.dumps(options), ticker),
        )
    return time.time(), True


def feeds_list(stack) -> dict[str, dict]:
    out = subprocess.run(
        [sys.executable, "manage.py", "feeds", "list", "--json"],
        env=stack.env, cwd=BASE_DIR, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return {row["symbol"]: row for row in json.loads(out)}


def health(stack) -> dict:
    try:
        with urllib.request.urlopen(f"{stack.http_url}/api/health/", timeout=5) as r:
            return json.load(r)
    except urllib.error.HTTPError as exc:  # 503 when degraded still has the body
        return json.load(exc)


def source_blocks(body: object, symbol: str) -> list[dict]:
    """Every per-symbol source block for ``symbol`` in a health body, wherever it sits."""
    found = []
    if isinstance(body, dict):
        for key, value in body.items():
            if key == symbol and isinstance(value, dict):
                block = value.get("source", value)
                if isinstance(block, dict) and "reconnects" in block:
                    found.append(block)
            found += source_blocks(value, symbol)
    return found


async def test_exchange_ticks_reach_a_client_with_seq_carrying_on_across_a_disconnect(exchanges):
    stack, coinbase, binance = exchanges
    await wait_for_published(stack, ["BTC-USD", "ETH-USD"])
    client = ResumingClient(stack.ws_url, stack.origin, ["BTC-USD", "ETH-USD"])
    try:
        btc, eth = client.ticks["BTC-USD"], client.ticks["ETH-USD"]
        await until(lambda: len(btc) >= 3 and len(eth) >= 3, 60, "simulated ticks")
        # ETH-USD through the command; BTC-USD by a direct write to the stack's
        # database, so the time from the save to the first exchange tick is exact
        # (the command's own start-up takes seconds on a loaded machine).
        stack.manage("feeds", "set", "ETH-USD", "binance", "--product-id", "ETHUSDT")
        saved, exact = set_source_now(stack, "BTC-USD", "coinbase")
        await until(
            lambda: any(from_coinbase(t[3]) for t in btc) and any(from_binance(t[3]) for t in eth),
            30,
            "the exchanges' ticks",
        )
        # From the save to the first coinbase tick published (its ts, in history).
        switch = first_tick_ts(stack, "BTC-USD", from_coinbase) / 1000 - saved
        await asyncio.sleep(2.0)
        n_cb = sum(from_coinbase(t[3]) for t in btc)
        n_bn = sum(from_binance(t[3]) for t in eth)
        # Drop both exchanges' connections mid-stream.
        coinbase.call(coinbase.drop)
        binance.call(binance.drop)
        dropped = time.monotonic()
        await until(
            lambda: coinbase.connections >= 2 and binance.connections >= 2, 30, "reconnects"
        )
        await until(
            lambda: (
                sum(from_coinbase(t[3]) for t in btc) > n_cb + 20
                and sum(from_binance(t[3]) for t in eth) > n_bn + 20
            ),
            30,
            "ticks after the reconnect",
        )
        back = time.monotonic() - dropped
        await asyncio.sleep(1.5)  # a status report after the reconnect
        rows = feeds_list(stack)
        body = health(stack)
    finally:
        await client.close()
    print(
        f"\nswitch applied: the first coinbase tick was published {switch:.2f}s after the "
        f"change was saved; ticks again {back:.2f}s after the "
        f"fakes dropped the connections; client got {len(btc)} BTC-USD and {len(eth)} ETH-USD "
        f"ticks, reconnects of the client: {client.closes}"
    )
    assert client.gaps() == {} and client.resets == [] and client.duplicates == []
    # "Within a few seconds": the 2 s symbol refresh, connect, subscribe.
    assert switch < (8 if exact else 30)
    for symbol, source in (("BTC-USD", "coinbase"), ("ETH-USD", "binance")):
        row = rows[symbol]
        print(f"feeds list {symbol}: {row}")
        assert row["source"] == source and row["state"] == "up", row
        assert row["reconnects"] == 1 and row["messages"] > 40 and row["token"], row
        blocks = source_blocks(body, symbol)
        assert any(b.get("name") == source and b.get("reconnects") == 1 for b in blocks), body


# --- Order books (issue 21)

DEPTH = 10
MIDS = {"ETH-USD": BINANCE_PRICE, "BTC-USD": COINBASE_PRICE}


class BookClient:
    """Holds the books the server sends, checking every message as a client must."""

    def __init__(self, url: str, origin: str, symbols: list[str]) -> None:
        self.url, self.origin, self.symbols = url, origin, symbols
        self.books: dict[str, OrderBook] = {}
        self.seq: dict[str, int] = {}
        self.epochs: dict[str, list[str]] = {s: [] for s in symbols}
        self.updates = dict.fromkeys(symbols, 0)
        self.since_snapshot = dict.fromkeys(symbols, 0)  # book_updates in the current epoch
        self.breaks: list[tuple] = []  # prev_seq != our seq
        self.bad_checksums: list[tuple] = []
        self.closes: list = []
        self.ws = None
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                async with connect(self.url, origin=self.origin) as ws:
                    self.ws = ws
                    await ws.send(
                        json.dumps(
                            {
                                "action": "subscribe",
                                "symbols": self.symbols,
                                "streams": ["book"],
                                "depth": DEPTH,
                            }
                        )
                    )
                    async for raw in ws:
                        self._handle(json.loads(raw))
            except (ConnectionClosed, OSError) as exc:
                self.closes.append(repr(exc))
                await asyncio.sleep(0.2)

    def _handle(self, msg: dict) -> None:
        symbol = msg.get("symbol")
        if msg["type"] == "book":
            self.books[symbol] = OrderBook.from_levels(bids=msg["bids"], asks=msg["asks"])
            self.seq[symbol] = msg["seq"]
            self.epochs[symbol].append(msg["epoch"])
            self.since_snapshot[symbol] = 0
        elif msg["type"] == "book_update":
            if msg["prev_seq"] != self.seq.get(symbol):
                self.breaks.append((symbol, self.seq.get(symbol), msg["prev_seq"]))
            self.books[symbol].apply(bids=msg["bids"], asks=msg["asks"])
            self.seq[symbol] = msg["seq"]
            self.updates[symbol] += 1
            self.since_snapshot[symbol] += 1
        else:
            return
        book = self.books[symbol]
        if checksum(*book.top(DEPTH)) != msg["checksum"]:
            self.bad_checksums.append((symbol, msg["type"], msg["seq"]))

    def top(self, symbol: str) -> tuple[list, list]:
        book = self.books.get(symbol)
        if book is None:
            return [], []
        bids, asks = book.top(DEPTH)
        return [list(x) for x in bids], [list(x) for x in asks]

    def near(self, symbol: str, mid: float) -> bool:
        bid = self.books.get(symbol) and self.books[symbol].best_bid()
        return bool(bid) and abs(float(bid[0]) - mid) < mid * 0.01

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def _top(fake, key: str) -> tuple[list, list]:
    return fake.books[key].top(DEPTH)


def truth(fake, key: str) -> tuple[list, list]:
    """The fake's true top ``DEPTH``, read on the fake's own loop (its thread mutates it)."""
    return fake.call(_top, fake, key)


async def converge(client, fakes) -> float:
    """With the fakes paused, until the client holds each fake's true top ``DEPTH``."""
    for fake in (f for f, _, _ in fakes):
        fake.loop.call_soon_threadsafe(fake.stop_stream)
    # The truth is read again on each check: a tick() under way when the stream stopped
    # still finishes (it changes the book and sends the change).
    took = await until(
        lambda: all(client.top(symbol) == truth(fake, key) for fake, key, symbol in fakes),
        30,
        "convergence",
    )
    for symbol in (s for _, _, s in fakes):  # not two empty books
        assert [len(side) for side in client.top(symbol)] == [DEPTH, DEPTH]
    for fake in (f for f, _, _ in fakes):
        fake.loop.call_soon_threadsafe(fake.start_stream, RATE)
    return took


def source_counters(stack, symbol: str) -> dict[str, str]:
    r = redis.Redis.from_url(stack.env["REDIS_URL"], decode_responses=True)
    try:
        return r.hgetall(f"{stack.prefix}:source:{symbol}")
    finally:
        r.close()


def book_metrics(stack) -> dict:
    """The ticker_book_*_total samples of /metrics, by (name, symbol, source)."""
    with urllib.request.urlopen(f"{stack.http_url}/metrics", timeout=5) as r:
        text = r.read().decode()
    metrics: dict = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("ticker_book_") and sample.name.endswith("_total"):
                key = (sample.name, sample.labels.get("symbol"), sample.labels.get("source"))
                metrics[key] = sample.value
    return metrics


def health_blocks(body: object, symbol: str) -> list[dict]:
    """Every source block for ``symbol`` in a health body, wherever it sits."""
    found = []
    if isinstance(body, dict):
        for key, value in body.items():
            if key == symbol and isinstance(value, dict):
                block = value.get("source", value)
                if isinstance(block, dict) and "book_gaps" in block:
                    found.append(block)
            found += health_blocks(value, symbol)
    return found


async def _skip(fake, symbol: str) -> None:
    fake.skip_depth(symbol, changes=5)


async def _lose_and_drop(fake, product: str) -> None:
    await fake.drop(abrupt=True)
    fake.l2_unsent(product, changes=10)


async def test_a_clients_book_converges_to_the_exchanges_true_book_after_a_gap(exchanges):
    stack, coinbase, binance = exchanges
    fakes = [(binance, "ETHUSDT", "ETH-USD"), (coinbase, "BTC-USD", "BTC-USD")]
    for fake, _, _ in fakes:
        fake.stream_books = True  # each tick() also changes the true book
    # As the test above left them (the same options: no restart), or set here if alone.
    set_source_now(stack, "ETH-USD", "binance", symbol="ethusdt")
    set_source_now(stack, "BTC-USD", "coinbase")
    client = BookClient(stack.ws_url, stack.origin, ["ETH-USD", "BTC-USD"])
    try:
        await until(
            lambda: all(client.near(s, m) for s, m in MIDS.items()),
            60,
            "the exchanges' books",
        )
        first = await converge(client, fakes)
        await asyncio.sleep(1.2)  # a status report (every second) of the books in sync
        before = {s: source_counters(stack, s) for s in MIDS}
        epochs = {s: len(e) for s, e in client.epochs.items()}
        # A gap on Binance; lost changes and a dropped connection on Coinbase.
        binance.call(_skip, binance, "ETHUSDT")
        coinbase.call(_lose_and_drop, coinbase, "BTC-USD")
        await until(
            lambda: all(len(client.epochs[s]) > epochs[s] for s in epochs),
            30,
            "a fresh book snapshot of each symbol",
        )
        second = await converge(client, fakes)
        await asyncio.sleep(1.2)  # a status report (every second) after the resync
        eth, btc = source_counters(stack, "ETH-USD"), source_counters(stack, "BTC-USD")
        listed, body, metrics = feeds_list(stack), health(stack), book_metrics(stack)
    finally:
        await client.close()
    print(
        f"\nbooks converged {first:.2f}s and, after the gap, {second:.2f}s after the fakes "
        f"paused; book updates applied: {client.updates} ({client.since_snapshot} since the "
        f"last snapshot); epochs seen: "
        f"{ {s: len(e) for s, e in client.epochs.items()} }; binance REST requests: "
        f"{len(binance.rest_requests)}; ETH-USD counters: book_gaps {eth.get('book_gaps')}, "
        f"resyncs {eth.get('resyncs')}, book_updates {eth.get('book_updates')}; BTC-USD: "
        f"resyncs {btc.get('resyncs')}, reconnects {btc.get('reconnects')}"
    )
    assert client.breaks == [] and client.bad_checksums == []
    # The books went on changing after the resync, update by update (not snapshots only).
    assert all(n > 10 for n in client.since_snapshot.values()), client.since_snapshot

    def grew(after: dict, name: str, symbol: str) -> bool:
        return int(after[name]) > int(before[symbol].get(name, 0))

    # The gap and the resyncs it caused were counted.
    assert grew(eth, "book_gaps", "ETH-USD") and grew(eth, "resyncs", "ETH-USD"), (before, eth)
    assert grew(btc, "resyncs", "BTC-USD") and grew(btc, "reconnects", "BTC-USD"), (before, btc)
    assert len(binance.rest_requests) >= 2
    # Operators see the same counters in feeds list, /api/health/ and /metrics.
    for symbol, source, now in (("ETH-USD", "binance", eth), ("BTC-USD", "coinbase", btc)):
        resyncs, gaps = int(now["resyncs"]), int(now["book_gaps"])
        row = listed[symbol]
        assert row["source"] == source, row
        assert row["resyncs"] >= resyncs and row["book_gaps"] >= gaps, row
        blocks = health_blocks(body, symbol)
        assert any(b["resyncs"] >= resyncs and b["book_gaps"] >= gaps for b in blocks), body
        assert metrics[("ticker_book_resyncs_total", symbol, source)] >= resyncs, metrics
        assert metrics[("ticker_book_gaps_total", symbol, source)] >= gaps, metrics
        assert metrics[("ticker_book_updates_total", symbol, source)] > 10, metrics
