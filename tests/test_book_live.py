"""Order books over the real stack: real sockets, the simulated producer, a real web server.

A WebSocket client subscribes to ticks and the book of a simulated symbol and holds its
own book, applying every update: ``prev_seq`` always names the seq it holds and the
checksum always matches its book. A reader that stops reading (its socket full, so the
server must hold back) later gets conflated updates that still check out, and is never
closed. Frames are checked against the AsyncAPI document (tests/asyncapi_contract.py
does it for the ``websockets`` client; the stalled client's frames are checked here).
"""

import asyncio
import json
from decimal import Decimal

import pytest
from websockets.asyncio.client import connect
from websockets.frames import Opcode

from markets.book import MAX_DEPTH, OrderBook, checksum
from markets.universe import DEFAULT_UNIVERSE
from tests.asyncapi_contract import contract
from tests.realstack import real_stack
from tests.stalled import StalledClient

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with real_stack(tmp_path_factory.mktemp("bookstack"), TICK_RATE="10", SIM_BOOK_RATE="0") as s:
        yield s


class Books:
    """The client's books, checked on every message (what a careful client does)."""

    def __init__(self) -> None:
        self.books: dict[str, OrderBook] = {}
        self.seqs: dict[str, int] = {}
        self.depths: dict[str, int] = {}
        self.snapshots = 0
        self.updates = 0
        self.conflated = 0  # updates that merged more than one producer update

    def take(self, msg: dict) -> None:
        symbol = msg.get("symbol")
        if msg["type"] == "book":
            self.books[symbol] = OrderBook.from_levels(bids=msg["bids"], asks=msg["asks"])
            self.depths[symbol] = msg["depth"]
            self.snapshots += 1
        elif msg["type"] == "book_update":
            assert msg["prev_seq"] == self.seqs[symbol], (symbol, msg["prev_seq"], self.seqs)
            self.books[symbol].apply(bids=msg["bids"], asks=msg["asks"])
            self.updates += 1
            self.conflated += msg["seq"] - msg["prev_seq"] > 1
        else:
            return
        self.seqs[symbol] = msg["seq"]
        book = self.books[symbol]
        assert checksum(*book.top(10)) == msg["checksum"], (symbol, msg)
        bids, asks = book.top(MAX_DEPTH)
        assert len(bids) <= self.depths[symbol] and len(asks) <= self.depths[symbol]
        if bids and asks:
            assert float(bids[0][0]) < float(asks[0][0])  # never crossed


async def test_a_client_holds_ticks_and_a_checksummed_book_of_a_simulated_symbol(stack):
    books = Books()
    ticks = 0
    available = False
    async with connect(stack.ws_url, origin=stack.origin) as ws:
        await ws.send(
            json.dumps(
                {
                    "action": "subscribe",
                    "symbols": ["BTC-USD"],
                    "streams": ["ticks", "book"],
                    "depth": 10,
                    "id": 1,
                }
            )
        )
        async with asyncio.timeout(30):
            while books.updates < 30 or ticks < 10 or not available:
                msg = json.loads(await ws.recv())
                books.take(msg)
                if msg["type"] == "subscribed":
                    assert msg["streams"] == ["ticks", "book"]
                elif msg["type"] == "tick":
                    ticks += 1
                elif msg["type"] == "book" and msg["available"]:
                    # (Before the producer's first book, a snapshot says it has none.)
                    assert len(msg["bids"]) == 10 == len(msg["asks"])
                    available = True
        assert books.snapshots <= 2
        await ws.send(json.dumps({"action": "list", "id": 2}))
        async with asyncio.timeout(10):
            while (msg := json.loads(await ws.recv()))["type"] != "subscriptions":
                books.take(msg)
        assert msg["streams"] == {"BTC-USD": ["ticks", "book"]} and msg["depth"] == {"BTC-USD": 10}


async def test_a_reader_that_stops_reading_gets_conflated_updates_that_check_out(stack):
    symbols = [i.ticker for i in DEFAULT_UNIVERSE]
    # Every symbol's book at depth 50 over a link with 1460-byte segments: the server's
    # send buffer fills within a second or two of not reading, so it must hold back.
    client = StalledClient(stack.ws_url, stack.origin, mss=1460)
    await client.open_and_subscribe(symbols, streams=["book"], depth=MAX_DEPTH)
    try:
        await _stall_and_read(client, symbols)
    finally:
        client.sock.close()


async def _stall_and_read(client: StalledClient, symbols: list[str]) -> None:
    books = Books()
    checker = contract()
    loop = asyncio.get_running_loop()
    rounds = 0
    async with asyncio.timeout(60):
        while books.conflated == 0:
            rounds += 1
            await asyncio.sleep(2)  # not reading: the socket fills, updates merge
            # Read what is there and a little more, then stall again.
            until = loop.time() + 1.5
            while loop.time() < until:
                try:
                    data = await asyncio.wait_for(loop.sock_recv(client.sock, 1 << 16), 1)
                except TimeoutError:
                    break
                assert data, "the server closed the connection of a book reader"
                client.protocol.receive_data(data)
                for event in client.protocol.events_received():
                    if getattr(event, "opcode", None) is not Opcode.TEXT:
                        continue  # the handshake's response, pings
                    msg = json.loads(event.data.decode())
                    assert checker.check_server(msg) == []
                    books.take(msg)
    assert client.protocol.close_rcvd is None  # never closed for being slow
    assert set(books.books) == set(symbols)
    assert books.conflated > 0 and books.updates > 0


async def test_an_unknown_stream_is_a_bad_request_and_tick_only_clients_are_unchanged(stack):
    async with connect(stack.ws_url, origin=stack.origin) as ws:
        await ws.send(
            json.dumps({"action": "subscribe", "symbols": ["ETH-USD"], "streams": ["l2"], "id": 3})
        )
        msg = json.loads(await ws.recv())
        assert msg["type"] == "error" and msg["code"] == "bad_request" and msg["id"] == 3
        await ws.send(json.dumps({"action": "subscribe", "symbols": ["ETH-USD"], "id": 4}))
        assert json.loads(await ws.recv()) == {
            "type": "subscribed", "id": 4, "symbols": ["ETH-USD"],
        }  # fmt: skip
        kinds = []
        async with asyncio.timeout(15):
            while kinds.count("tick") < 5:
                kinds.append(json.loads(await ws.recv())["type"])
        assert kinds[0] == "snapshot" and set(kinds) == {"snapshot", "tick"}


async def test_ticker_client_keeps_checked_books_and_subscribes_again_on_a_mismatch(stack):
    from ticker_client import BookChanged, BookResync, TickerClient

    async with TickerClient(stack.ws_url) as client:
        books = await client.subscribe_book(["BTC-USD", "ETH-USD"], depth=5, timeout=30)
        assert set(books) == {"BTC-USD", "ETH-USD"} and all(books.values())
        changes: dict[str, int] = {"BTC-USD": 0, "ETH-USD": 0}
        resynced = tampered = False
        async with asyncio.timeout(30):
            async for event in client.events():
                if isinstance(event, BookResync):
                    assert event.symbol == "BTC-USD" and event.reason == "checksum"
                    resynced = True
                elif isinstance(event, BookChanged):
                    book = client.book(event.symbol)
                    if book is None or book.best_bid() is None:
                        continue  # (before the producer's first book)
                    assert book is event.book and book.seq == event.seq
                    assert len(book.bids) <= 5 and len(book.asks) <= 5
                    assert book.spread is not None and book.spread > 0
                    bid, ask = Decimal(book.best_bid()[0]), Decimal(book.best_ask()[0])
                    assert bid < book.mid < ask and book.spread == ask - bid
                    changes[event.symbol] += 1
                    if event.symbol == "BTC-USD" and changes["BTC-USD"] == 5 and not tampered:
                        # Corrupt the held book: the next update's checksum cannot match.
                        book.apply([["1.00", "1"]], [])
                        tampered = True
                if resynced and min(changes.values()) >= 20:
                    break
        stats = client.stats
        assert stats.prev_seq_breaks == 0
        assert stats.checksum_failures == 1 and stats.book_resyncs == 1
        assert stats.book_snapshots >= 3  # two first ones, one after the resync
        assert client.book("BTC-USD").checksum() is not None


def test_the_print_book_example(stack):
    import os
    import subprocess
    import sys

    from tests.realstack import BASE_DIR

    done = subprocess.run(
        [sys.executable, str(BASE_DIR / "examples" / "print_book.py"), "SOL-USD", "--count", "12"],
        env={**os.environ, "TICKER_WS_URL": stack.ws_url},
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if "(no book)" not in line]
    assert lines and all(line.startswith("SOL-USD") and "spread" in line for line in lines)
    assert "prev_seq breaks 0, checksum failures 0, resyncs 0" in done.stderr
