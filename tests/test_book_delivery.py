"""Book delivery in the web process (streaming.book, the book slots of streaming.outbox).

Over the real ASGI app and the Redis channel layer: books published with the fenced
script (markets.books, unfenced for tests) reach a subscriber as a ``book`` snapshot,
then ``book_update``s whose ``prev_seq`` chains and whose checksum matches the client's
book after applying each; a hole in the layer's messages, a new epoch, max_rate and a
depth window all keep the client exact.
"""

import asyncio
import json

import pytest
from channels.testing import WebsocketCommunicator

from markets.book import MAX_DEPTH, OrderBook, checksum, window_diff
from markets.books import BookMessage, BookPublisher
from tests.asyncapi_contract import contract
from tickerproject.asgi import application

pytestmark = pytest.mark.usefixtures("async_symbols", "clean_redis", "close_hub")

HEADERS = [(b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000")]


class Producer:
    """What feeds.books does for one symbol: an authoritative book, published as diffs."""

    def __init__(self, symbol: str = "BTC-USD", epoch: str = "e1") -> None:
        self.symbol = symbol
        self.epoch = epoch
        self.book = OrderBook()
        self.view = ([], [])
        self.publisher = BookPublisher.unfenced_for_tests()

    async def snapshot(self, *, epoch: str | None = None, bids=(), asks=()) -> int:
        self.epoch = epoch or self.epoch
        self.book = OrderBook.from_levels(bids=bids, asks=asks)
        self.view = self.book.top(MAX_DEPTH)
        msg = BookMessage(self.symbol, self.epoch, True, self.view, self.view)
        return (await self.publisher.publish([msg]))[0]

    async def update(self, *, bids=(), asks=(), send: bool = True) -> int:
        self.book.apply(bids=bids, asks=asks)
        view = self.book.top(MAX_DEPTH)
        msg = BookMessage(self.symbol, self.epoch, False, view, window_diff(self.view, view))
        self.view = view
        if send:
            return (await self.publisher.publish([msg]))[0]
        # Stored in Redis but never fanned out: the web process sees a hole later.
        return (await self.publisher._run_script([msg], 1))[0]


def ladder(n: int, *, mid: int = 100) -> tuple[list, list]:
    bids = [[f"{mid - 1 - i}.50", f"{i + 1}.0"] for i in range(n)]
    asks = [[f"{mid + i}.50", f"{i + 1}.5"] for i in range(n)]
    return bids, asks


class Client:
    """A WebSocket client that holds the books it is sent and checks every message."""

    def __init__(self) -> None:
        self.comm = WebsocketCommunicator(application, "/ws/prices/", headers=HEADERS)
        self.books: dict[str, OrderBook] = {}
        self.seqs: dict[str, int] = {}
        self.depths: dict[str, int] = {}
        self.messages: list[dict] = []

    async def __aenter__(self) -> "Client":
        connected, _ = await self.comm.connect()
        assert connected
        return self

    async def __aexit__(self, *exc) -> None:
        await self.comm.disconnect()

    async def send(self, payload: dict) -> None:
        if payload.get("streams") != ["trades"]:
            assert contract().check_command(payload) == []
        await self.comm.send_to(text_data=json.dumps(payload))

    async def recv(self, timeout: float = 3) -> dict:
        msg = json.loads(await self.comm.receive_from(timeout))
        self.messages.append(msg)
        assert contract().check_server(msg) == []  # the AsyncAPI document describes it
        if msg["type"] == "book":
            self.books[msg["symbol"]] = OrderBook.from_levels(bids=msg["bids"], asks=msg["asks"])
            self.seqs[msg["symbol"]] = msg["seq"]
            self.depths[msg["symbol"]] = msg["depth"]
            self._check(msg)
        elif msg["type"] == "book_update":
            symbol = msg["symbol"]
            assert msg["prev_seq"] == self.seqs[symbol], (msg, self.seqs[symbol])
            assert msg["seq"] > msg["prev_seq"]
            self.books[symbol].apply(bids=msg["bids"], asks=msg["asks"])
            self.seqs[symbol] = msg["seq"]
            self._check(msg)
        return msg

    def _check(self, msg: dict) -> None:
        book = self.books[msg["symbol"]]
        assert checksum(*book.top(10)) == msg["checksum"], msg
        bids, asks = book.top(MAX_DEPTH)
        assert len(bids) <= self.depths[msg["symbol"]] >= len(asks)

    async def until(self, kind: str, **match) -> dict:
        while True:
            msg = await self.recv()
            if msg["type"] == kind and all(msg.get(k) == v for k, v in match.items()):
                return msg

    def holds(self, producer: Producer, symbol: str = "BTC-USD") -> bool:
        depth = self.depths[symbol]
        return self.books[symbol].top(MAX_DEPTH) == producer.book.top(depth)


async def test_a_book_subscriber_gets_a_snapshot_then_updates_that_chain_and_check_out():
    producer = Producer()
    bids, asks = ladder(30)
    await producer.snapshot(bids=bids, asks=asks)
    async with Client() as c:
        await c.send(
            {
                "action": "subscribe",
                "symbols": ["BTC-USD"],
                "streams": ["book"],
                "depth": 5,
                "id": 1,
            }
        )
        assert await c.recv() == {
            "type": "subscribed", "id": 1, "symbols": ["BTC-USD"], "streams": ["book"],
        }  # fmt: skip
        snap = await c.recv()
        assert snap["type"] == "book" and snap["depth"] == 5 and snap["epoch"] == "e1"
        assert snap["bids"][0] == ["99.50", "1.0"] and snap["asks"][0] == ["100.50", "1.5"]
        assert len(snap["bids"]) == len(snap["asks"]) == 5
        assert snap["available"] is True
        # No tick snapshot: the connection asked for the book alone.
        assert all(m["type"] != "snapshot" for m in c.messages)
        # A change inside the window, a deletion at the touch (a level enters from
        # below), and a change outside the window (nothing to send).
        await producer.update(bids=[["99.50", "7.0"]])
        msg = await c.until("book_update")
        assert msg["bids"] == [["99.50", "7.0"]] and msg["asks"] == []
        await producer.update(asks=[["100.50", "0"]])
        msg = await c.until("book_update")
        assert msg["asks"] == [["100.50", "0"], ["105.50", "6.5"]]  # 105.50 enters the top 5
        await producer.update(bids=[["80.50", "9.0"]])  # level 19: outside depth 5
        await producer.update(bids=[["97.50", "3.5"]])
        msg = await c.until("book_update")
        assert msg["prev_seq"] == msg["seq"] - 2  # the silent change was merged in
        assert c.holds(producer)


async def test_a_hole_in_the_layer_is_refilled_from_redis_and_the_client_stays_exact():
    producer = Producer()
    await producer.snapshot(bids=ladder(20)[0], asks=ladder(20)[1])
    async with Client() as c:
        await c.send({"action": "subscribe", "symbols": ["BTC-USD"], "streams": ["ticks", "book"]})
        await c.until("book")
        await producer.update(bids=[["98.50", "2.25"]])
        await c.until("book_update")
        # Two updates reach Redis but not the layer: the next message shows a hole.
        await producer.update(bids=[["98.50", "0"]], send=False)
        await producer.update(asks=[["100.75", "4.0"]], send=False)
        await producer.update(asks=[["101.50", "0"]])
        msg = await c.until("book_update")
        while msg["seq"] < 5:
            msg = await c.until("book_update")
        assert c.holds(producer)


async def test_a_new_epoch_sends_a_fresh_snapshot():
    producer = Producer()
    await producer.snapshot(bids=ladder(10)[0], asks=ladder(10)[1])
    async with Client() as c:
        await c.send({"action": "subscribe", "symbols": ["BTC-USD"], "streams": ["book"]})
        first = await c.until("book")
        bids, asks = ladder(12, mid=200)
        await producer.snapshot(epoch="e2", bids=bids, asks=asks)
        second = await c.until("book")
        assert second["epoch"] == "e2" != first["epoch"]
        assert second["bids"][0] == ["199.50", "1.0"] and len(second["bids"]) == 10
        await producer.update(bids=[["199.50", "5.25"]])
        await c.until("book_update")
        assert c.holds(producer)


async def test_max_rate_conflates_book_updates_into_fewer_exact_ones():
    producer = Producer()
    await producer.snapshot(bids=ladder(20)[0], asks=ladder(20)[1])
    async with Client() as c:
        await c.send(
            {"action": "subscribe", "symbols": ["BTC-USD"], "streams": ["book"], "max_rate": 2}
        )
        await c.until("book")
        for i in range(12):
            await producer.update(
                bids=[[f"{98 - i % 4}.50", f"{i + 1}.25"]], asks=[["100.50", f"{i}.5"]]
            )
        last_seq = producer.view and (await producer.update(asks=[["101.50", "0.1"]]))
        msg = await c.until("book_update")
        while msg["seq"] < last_seq:
            msg = await c.until("book_update")
        updates = [m for m in c.messages if m["type"] == "book_update"]
        # At most 2 a second: 13 producer updates in a fraction of a second take few frames.
        assert len(updates) <= 4, [(m["prev_seq"], m["seq"]) for m in updates]
        assert any(m["seq"] - m["prev_seq"] > 1 for m in updates)
        assert c.holds(producer)


async def test_a_symbol_without_a_book_says_so_and_gets_one_when_it_appears():
    async with Client() as c:
        await c.send({"action": "subscribe", "symbols": ["BTC-USD"], "streams": ["book"]})
        snap = await c.until("book")
        assert snap["available"] is False and snap["reason"] and snap["bids"] == [] == snap["asks"]
        producer = Producer()
        await producer.snapshot(bids=ladder(3)[0], asks=ladder(3)[1])
        snap = await c.until("book")
        assert snap["available"] is True and len(snap["bids"]) == 3


async def test_list_reports_streams_and_depth_and_a_book_can_be_dropped_alone():
    producer = Producer()
    await producer.snapshot(bids=ladder(10)[0], asks=ladder(10)[1])
    async with Client() as c:
        await c.send(
            {"action": "subscribe", "symbols": ["BTC-USD", "AAPL"], "streams": ["ticks", "book"],
             "depth": 3}
        )  # fmt: skip
        await c.until("book", symbol="BTC-USD")
        await c.send({"action": "subscribe", "symbols": ["ETH-USD"]})
        await c.until("snapshot", symbol="ETH-USD")
        await c.send({"action": "list", "id": 9})
        listed = await c.until("subscriptions")
        assert listed["symbols"] == ["AAPL", "BTC-USD", "ETH-USD"]
        assert listed["streams"] == {
            "AAPL": ["ticks", "book"], "BTC-USD": ["ticks", "book"], "ETH-USD": ["ticks"],
        }  # fmt: skip
        assert listed["depth"] == {"AAPL": 3, "BTC-USD": 3}
        await c.send(
            {"action": "unsubscribe", "symbols": ["BTC-USD"], "streams": ["book"], "id": 10}
        )
        answer = await c.until("unsubscribed")
        assert answer == {
            "type": "unsubscribed", "id": 10, "symbols": ["BTC-USD"], "streams": ["book"],
        }  # fmt: skip
        await producer.update(bids=[["98.50", "9.0"]])
        await c.send({"action": "list", "id": 11})
        listed = await c.until("subscriptions")
        assert listed["streams"]["BTC-USD"] == ["ticks"]
        assert not [m for m in c.messages if m["type"] == "book_update"]
        # A depth change is a fresh snapshot at the new depth.
        await c.send({"action": "subscribe", "symbols": ["AAPL"], "streams": ["book"], "depth": 7})
        snap = await c.until("book", symbol="AAPL")
        assert snap["depth"] == 7


async def test_an_unknown_stream_is_a_bad_request_and_subscribes_nothing():
    async with Client() as c:
        await c.send(
            {"action": "subscribe", "symbols": ["BTC-USD"], "streams": ["trades"], "id": 4}
        )
        msg = await c.recv()
        assert msg["type"] == "error" and msg["code"] == "bad_request" and msg["id"] == 4
        await c.send({"action": "list", "id": 5})
        assert (await c.until("subscriptions"))["symbols"] == []
        await asyncio.sleep(0)


def _restrict(ticker: str) -> None:
    from django.contrib.auth.models import Group

    from markets.models import Symbol

    group, _ = Group.objects.get_or_create(name="books-test")
    Symbol.objects.filter(ticker=ticker).update(required_group=group)


async def test_books_obey_the_same_rights_as_ticks():
    from asgiref.sync import sync_to_async

    await sync_to_async(_restrict)("AAPL")
    async with Client() as c:
        await c.send(
            {"action": "subscribe", "symbols": ["AAPL", "BTC-USD"], "streams": ["book"], "id": 3}
        )
        refused = await c.until("error")
        assert (refused["code"], refused["symbols"], refused["id"]) == ("forbidden", ["AAPL"], 3)
        await c.send({"action": "list", "id": 4})
        listed = await c.until("subscriptions")
        assert listed["streams"] == {"BTC-USD": ["book"]}
