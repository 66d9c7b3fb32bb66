"""Exchange order books end to end: fake exchanges -> sources -> feed loop -> Redis -> web
process -> a WebSocket client over real sockets (issue 21).

A fake Binance (diff depth stream and REST snapshot) and a fake Coinbase (level2_batch)
run in threads of this test process, each mutating a true book; a real stack (web
server, Celery worker and beat, Redis) produces ETH-USD from the one and BTC-USD from
the other. A client subscribes both books at depth 10 and applies ``book`` and
``book_update`` as docs/protocol.md says, checking ``prev_seq`` and the checksum of every
message. Its books converge to the fakes' true top 10; then the Binance fake skips
update ids (a gap nobody is told about) and the Coinbase fake loses changes and drops
the connection: each source syncs its book again, the client gets a fresh ``book``
snapshot under a new epoch, and converges again, with no prev_seq break and no checksum
failure. The counters in Redis show the gap and the resyncs.
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
from tests.realstack import BASE_DIR, real_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEPTH = 10
RATE = 20  # ticks (and book changes) per second each fake sends
# Mids far from the simulated prices, so the client can tell whose book it holds.
MIDS = {"ETH-USD": 777.0, "BTC-USD": 12345.0}


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


async def until(predicate, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not predicate():
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


def set_source(stack, ticker: str, source: str) -> None:
    url = stack.env["DATABASE_URL"]
    if not url.startswith("sqlite:///"):
        stack.manage("feeds", "set", ticker, source)
        return
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        db.execute(
            "UPDATE markets_symbol SET source = ?, source_options = '{}' WHERE ticker = ?",
            (source, ticker),
        )


async def _top(fake, key: str) -> tuple[list, list]:
    return fake.books[key].top(DEPTH)


def truth(fake, key: str) -> tuple[list, list]:
    """The fake's true top ``DEPTH``, read on the fake's own loop (its thread mutates it)."""
    return fake.call(_top, fake, key)


async def converge(client, fakes) -> float:
    """With the fakes paused, until the client holds each fake's true top ``DEPTH``."""
    for fake in (f for f, _, _ in fakes):
        fake.loop.call_soon_threadsafe(fake.stop_stream)
    await asyncio.sleep(0.1)  # let a tick() under way finish
    wanted = {symbol: truth(fake, key) for fake, key, symbol in fakes}
    took = await until(
        lambda: all(client.top(s) == w for s, w in wanted.items()), 30, "convergence"
    )
    for fake in (f for f, _, _ in fakes):
        fake.loop.call_soon_threadsafe(fake.start_stream, RATE)
    return took


def source_counters(stack, symbol: str) -> dict[str, str]:
    r = redis.Redis.from_url(stack.env["REDIS_URL"], decode_responses=True)
    try:
        return r.hgetall(f"{stack.prefix}:source:{symbol}")
    finally:
        r.close()


def operator_views(stack) -> tuple[dict, dict, dict]:
    """The book counters per symbol as `feeds list`, /api/health/ and /metrics show them."""
    out = subprocess.run(
        [sys.executable, "manage.py", "feeds", "list", "--json"],
        env=stack.env, cwd=BASE_DIR, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    listed = {row["symbol"]: row for row in json.loads(out)}
    try:
        with urllib.request.urlopen(f"{stack.http_url}/api/health/", timeout=5) as r:
            health = json.load(r)
    except urllib.error.HTTPError as exc:  # 503 when degraded still has the body
        health = json.load(exc)
    with urllib.request.urlopen(f"{stack.http_url}/metrics", timeout=5) as r:
        text = r.read().decode()
    metrics: dict = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("ticker_book_") and sample.name.endswith("_total"):
                key = (sample.name, sample.labels.get("symbol"), sample.labels.get("source"))
                metrics[key] = sample.value
    return listed, health, metrics


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


async def test_a_clients_book_converges_to_the_exchanges_true_book_after_a_gap(tmp_path):
    binance = FakeBinance({"ETHUSD": MIDS["ETH-USD"]})
    coinbase = FakeCoinbase({"BTC-USD": MIDS["BTC-USD"]})
    fakes = [(binance, "ETHUSD", "ETH-USD"), (coinbase, "BTC-USD", "BTC-USD")]
    with coinbase.threaded(), binance.threaded():
        for fake, _, _ in fakes:
            fake.stream_books = True
            fake.loop.call_soon_threadsafe(fake.start_stream, RATE)
        with real_stack(
            tmp_path,
            COINBASE_WS_URL=coinbase.url,
            BINANCE_WS_URL=binance.url,
            BINANCE_REST_URL=binance.rest_url,
        ) as stack:
            set_source(stack, "ETH-USD", "binance")
            set_source(stack, "BTC-USD", "coinbase")
            client = BookClient(stack.ws_url, stack.origin, ["ETH-USD", "BTC-USD"])
            try:
                await until(
                    lambda: all(client.near(s, m) for s, m in MIDS.items()),
                    60,
                    "the exchanges' books",
                )
                first = await converge(client, fakes)
                epochs = {s: len(e) for s, e in client.epochs.items()}
                # A gap on Binance; lost changes and a dropped connection on Coinbase.
                binance.call(_skip, binance, "ETHUSD")
                coinbase.call(_lose_and_drop, coinbase, "BTC-USD")
                await until(
                    lambda: all(len(client.epochs[s]) > epochs[s] for s in epochs),
                    30,
                    "a fresh book snapshot of each symbol",
                )
                second = await converge(client, fakes)
                await asyncio.sleep(1.2)  # a status report (every second) after the resync
                eth, btc = source_counters(stack, "ETH-USD"), source_counters(stack, "BTC-USD")
                listed, health, metrics = operator_views(stack)
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
    assert int(eth["book_gaps"]) >= 1 and int(eth["resyncs"]) >= 1, eth
    assert int(btc["resyncs"]) >= 1 and int(btc["reconnects"]) >= 1, btc
    assert len(binance.rest_requests) >= 2
    # Operators see the same counters in feeds list, /api/health/ and /metrics.
    for symbol, source, gaps in (("ETH-USD", "binance", 1), ("BTC-USD", "coinbase", 0)):
        row = listed[symbol]
        assert row["source"] == source and row["resyncs"] >= 1 and row["book_gaps"] >= gaps, row
        blocks = health_blocks(health, symbol)
        assert any(b["resyncs"] >= 1 and b["book_gaps"] >= gaps for b in blocks), health
        assert metrics[("ticker_book_resyncs_total", symbol, source)] >= 1, metrics
        assert metrics[("ticker_book_gaps_total", symbol, source)] >= gaps, metrics
        assert metrics[("ticker_book_updates_total", symbol, source)] > 10, metrics
