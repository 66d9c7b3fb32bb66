"""Order books on the producer side against real Redis and the real channel layer.

markets.books (the fenced publish script, the readers, the book.message event) and
feeds.books (the producer's authoritative book, snapshots and window diffs), and a real
feed loop running simulated symbols (issue 21).
"""

import asyncio
import threading

import pytest
from channels.layers import get_channel_layer

from feeds.books import FeedBooks, publish_batch
from feeds.lease import SymbolLeases
from feeds.services import run_feed
from feeds.sources.base import BookDraft, KindLog, Source, SourceContext, SymbolConfig
from markets import keys
from markets.book import MAX_DEPTH, OrderBook, checksum
from markets.books import (
    NEEDS_SNAPSHOT,
    REFUSED,
    BookMessage,
    BookPublisher,
    book_updates_after,
    read_book,
)
from markets.history import latest_ticks, ticks_after
from markets.publishing import TickPublisher
from markets.redis import redis_client
from markets.symbols import symbol_group_name
from markets.ticks import TickDraft

pytestmark = pytest.mark.usefixtures("clean_redis")

SYMBOL = "BTC-USD"


class FakeSource(Source):
    """A source the tests drive by hand (FeedBooks only reads its flags and stats)."""

    name = "fake"

    def __init__(self, *, has_book: bool = True) -> None:
        config = SymbolConfig(SYMBOL, "crypto", 0, 0.5, 100.0, source="fake")
        super().__init__(config, SourceContext(None, 1.0, 0))
        self.has_book = has_book

    async def ticks(self):  # pragma: no cover - never run
        return
        yield


async def listen(symbol: str = SYMBOL) -> tuple:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(symbol_group_name(symbol), channel)
    return layer, channel


async def next_book_event(layer, channel, timeout: float = 5.0) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            event = await layer.receive(channel)
            if event["type"] == "book.message":
                return event


def feed_books(token: str | None = None) -> FeedBooks:
    import logging

    publisher = BookPublisher(lease_token=token) if token else BookPublisher.unfenced_for_tests()
    return FeedBooks(publisher, log=KindLog(logging.getLogger("test"), "test"))


async def test_snapshot_then_window_diffs_keep_redis_and_the_channel_exact(caplog):
    layer, channel = await listen()
    books = feed_books()
    source = FakeSource()
    books.start(SYMBOL, source)
    bids = [(f"{100 - i}.5", "1") for i in range(60)]
    asks = [(f"{101 + i}.0", "2") for i in range(60)]
    books.apply(BookDraft(SYMBOL, bids, asks, snapshot=True))
    assert await books.publish() == set()

    first = await next_book_event(layer, channel)
    assert first["snapshot"] and first["seq"] == 1 and first["prev_seq"] == 0
    assert len(first["bids"]) == len(first["asks"]) == MAX_DEPTH  # the top 50 of 60
    assert first["available"] is True
    state = await read_book(symbol=SYMBOL)
    assert (state.epoch, state.seq, state.has_book) == (first["epoch"], 1, True)
    assert state.bids == bids[:MAX_DEPTH] and state.asks == asks[:MAX_DEPTH]

    # A client holding the snapshot follows the updates, through window changes.
    client = OrderBook.from_levels(bids=first["bids"], asks=first["asks"])
    drafts = [
        BookDraft(SYMBOL, [("100.5", "0"), ("99.5", "0")], []),  # two enter from below
        BookDraft(SYMBOL, [("100.75", "3")], [("101.0", "0.5")]),  # one leaves the window
        BookDraft(SYMBOL, [("10.5", "9")], []),  # below the window: nothing to publish
    ]
    for draft in drafts:
        books.apply(draft)
        await books.publish()
    server = OrderBook.from_levels(bids=bids, asks=asks)
    for draft in drafts:
        server.apply(bids=draft.bids, asks=draft.asks)
    for seq in (2, 3):
        event = await next_book_event(layer, channel)
        assert (event["seq"], event["prev_seq"], event["snapshot"]) == (seq, seq - 1, False)
        assert event["epoch"] == first["epoch"]
        client.apply(bids=event["bids"], asks=event["asks"])
        assert checksum(*client.top(10)) == event["checksum"]
    assert client.top(MAX_DEPTH) == server.top(MAX_DEPTH)
    assert source.stats.book_updates == 4 and source.stats.resyncs == 0

    state = await read_book(symbol=SYMBOL)
    assert state.seq == 3
    assert (state.bids, state.asks) == server.top(MAX_DEPTH)
    # Catching up from the log: every update after a seq, in order.
    updates = await book_updates_after(symbol=SYMBOL, seq=1, epoch=first["epoch"])
    assert [u.seq for u in updates] == [2, 3]
    replayed = OrderBook.from_levels(bids=bids[:MAX_DEPTH], asks=asks[:MAX_DEPTH])
    for u in updates:
        replayed.apply(bids=u.bids, asks=u.asks)
    assert replayed.top(MAX_DEPTH) == server.top(MAX_DEPTH)
    assert await book_updates_after(symbol=SYMBOL, seq=3) == []
    assert await book_updates_after(symbol=SYMBOL, seq=1, epoch="another") is None
    assert await book_updates_after(symbol=SYMBOL, seq=9) is None

    # A resync from the source: a new snapshot, a new epoch, the log starts again.
    books.apply(BookDraft(SYMBOL, [("50", "1")], [("51", "1")], snapshot=True))
    await books.publish()
    resync = await next_book_event(layer, channel)
    assert resync["snapshot"] and resync["seq"] == 4 and resync["epoch"] != first["epoch"]
    assert (resync["bids"], resync["asks"]) == ([["50", "1"]], [["51", "1"]])
    assert source.stats.resyncs == 1
    assert caplog.text.count("the fake book was synced again") == 1
    assert await book_updates_after(symbol=SYMBOL, seq=1) is None
    assert await book_updates_after(symbol=SYMBOL, seq=4, epoch=resync["epoch"]) == []


async def test_a_log_that_no_longer_reaches_back_means_start_again(settings):
    settings.BOOK_LOG_DEPTH = 10
    books = feed_books()
    books.start(SYMBOL, FakeSource())
    books.apply(BookDraft(SYMBOL, [("1", "1")], [("2", "1")], snapshot=True))
    await books.publish()
    for i in range(300):
        books.apply(BookDraft(SYMBOL, [("1", str(i + 2))], []))
        await books.publish()
    assert (await read_book(symbol=SYMBOL)).seq == 301
    assert await book_updates_after(symbol=SYMBOL, seq=5) is None  # trimmed away
    recent = await book_updates_after(symbol=SYMBOL, seq=298)
    assert [u.seq for u in recent] == [299, 300, 301]
    assert await redis_client().xlen(keys.book_log_key(SYMBOL)) < 300


async def test_only_the_lease_holder_publishes_a_book():
    r = redis_client()
    ours = SymbolLeases(r, token="ours", ttl_seconds=5)
    theirs = SymbolLeases(r, token="theirs", ttl_seconds=5)
    await theirs.acquire([SYMBOL])
    await ours.acquire(["ETH-USD"])
    publisher = BookPublisher(lease_token="ours")
    view = ([("1", "1")], [("2", "1")])
    results = await publisher.publish(
        [
            BookMessage(SYMBOL, "e1", True, view, view),
            BookMessage("ETH-USD", "e1", True, view, view),
        ]
    )
    assert results[0] == REFUSED and results[1] == 1
    assert await read_book(symbol=SYMBOL) is None
    assert (await read_book(symbol="ETH-USD")).seq == 1

    # The feed's FeedBooks reports the refused symbol, for the loop to drop it.
    books = feed_books("ours")
    books.start(SYMBOL, FakeSource())
    books.apply(BookDraft(SYMBOL, [("1", "1")], [("2", "1")], snapshot=True))
    assert await books.publish() == {SYMBOL}
    with pytest.raises(ValueError, match="lease token"):
        BookPublisher(lease_token="")


async def test_an_update_of_an_epoch_redis_lost_is_refused_and_a_snapshot_follows():
    layer, channel = await listen()
    books = feed_books()
    books.start(SYMBOL, FakeSource())
    books.apply(BookDraft(SYMBOL, [("1", "1")], [("2", "1")], snapshot=True))
    await books.publish()
    first = await next_book_event(layer, channel)
    await redis_client().delete(keys.book_key(SYMBOL))  # Redis lost the book
    stale = BookMessage(SYMBOL, first["epoch"], False, ([("1", "5")], []), ([("1", "5")], []))
    assert await BookPublisher.unfenced_for_tests().publish([stale]) == [NEEDS_SNAPSHOT]

    books.apply(BookDraft(SYMBOL, [("1", "7")], []))
    await books.publish()  # refused: the producer marks the symbol for a snapshot
    await books.publish()  # ... which goes out under a new epoch
    again = await next_book_event(layer, channel)
    assert again["snapshot"] and again["epoch"] != first["epoch"]
    assert again["bids"] == [["1", "7"]]
    state = await read_book(symbol=SYMBOL)
    assert state.epoch == again["epoch"] and state.bids == [("1", "7")]


async def test_a_source_without_a_book_says_so_once():
    layer, channel = await listen()
    books = feed_books()
    source = FakeSource(has_book=False)
    books.start(SYMBOL, source)
    books.apply(BookDraft(SYMBOL, [("1", "1")], [], snapshot=True))  # ignored
    await books.publish()
    await books.publish()
    event = await next_book_event(layer, channel)
    assert event["snapshot"] and event["available"] is False
    assert event["reason"] == "the fake source has no order book"
    assert event["bids"] == event["asks"] == []
    state = await read_book(symbol=SYMBOL)
    assert not state.has_book and state.reason == event["reason"] and state.seq == 1


async def test_crossed_books_and_bad_levels_are_counted():
    books = feed_books()
    source = FakeSource()
    books.start(SYMBOL, source)
    books.apply(BookDraft(SYMBOL, [("10", "1")], [("11", "1")], snapshot=True))
    books.apply(BookDraft(SYMBOL, [("11", "1")], []))  # crossed (bid == ask)
    books.apply(BookDraft(SYMBOL, [("11.5", "1")], []))  # still the same episode
    books.apply(BookDraft(SYMBOL, [("11", "0"), ("11.5", "0")], []))  # uncrossed
    books.apply(BookDraft(SYMBOL, [], [("9", "1")]))  # a second episode
    books.apply(BookDraft(SYMBOL, [("NaN", "1")], []))
    assert source.stats.crossed == 2
    assert source.stats.bad == 1
    assert source.stats.book_updates == 5


async def test_publish_batch_sends_ticks_with_their_side_and_books_together():
    layer, channel = await listen()
    books = feed_books()
    books.start(SYMBOL, FakeSource())
    batch = [
        BookDraft(SYMBOL, [("99", "1")], [("101", "1")], snapshot=True),
        TickDraft(SYMBOL, 101.0, 99.0, 101.0, 0.5, "buy"),
        TickDraft(SYMBOL, 99.0, 99.0, 101.0, 0.25),
    ]
    published, refused = await publish_batch(TickPublisher.unfenced_for_tests(), books, batch)
    assert refused == set()
    assert [t.side for t in published] == ["buy", None]
    assert published[0].as_message()["side"] == "buy"
    assert "side" not in published[1].as_message()
    last = (await latest_ticks(symbols=[SYMBOL]))[SYMBOL]
    assert last.seq == 2 and last.side is None
    stored = await ticks_after(symbol=SYMBOL, after_seq=0, limit=10)
    assert [t.side for t in stored] == ["buy", None]  # history keeps the side
    event = await next_book_event(layer, channel)
    assert event["seq"] == 1 and event["bids"] == [["99", "1"]]


@pytest.mark.usefixtures("async_symbols")
async def test_a_feed_of_simulated_symbols_publishes_their_books(settings):
    """A real feed loop: each simulated symbol's book in Redis, on the channel layer."""
    layer, channel = await listen()
    stop = threading.Event()
    feed = asyncio.create_task(run_feed(stop=stop, tick_rate=10, lease_seconds=3))
    try:
        client = None
        seen = 0
        async with asyncio.timeout(20):
            while seen < 10:
                event = await next_book_event(layer, channel, timeout=10)
                if event["snapshot"]:
                    client = OrderBook.from_levels(bids=event["bids"], asks=event["asks"])
                    last_seq = event["seq"]
                    continue
                assert client is not None and event["prev_seq"] == last_seq
                client.apply(bids=event["bids"], asks=event["asks"])
                assert client.checksum() == event["checksum"]
                last_seq = event["seq"]
                seen += 1
        bids, asks = client.top(MAX_DEPTH)
        assert len(bids) == len(asks) == MAX_DEPTH
        assert not client.crossed()
        state = await read_book(symbol=SYMBOL)
        assert state.seq >= last_seq and state.has_book
        tick = (await latest_ticks(symbols=[SYMBOL]))[SYMBOL]
        assert tick.side in ("buy", "sell")
        # The counters reach Redis with the next status flush (every second).
        async with asyncio.timeout(10):
            while True:
                status = await redis_client().hgetall(keys.source_status_key(SYMBOL))
                if int(status.get(b"book_updates", 0)) >= 10:
                    break
                await asyncio.sleep(0.1)
        assert status[b"resyncs"] == status[b"crossed"] == b"0"
        await operators_see_the_book_counters()
    finally:
        stop.set()
        await feed


async def operators_see_the_book_counters() -> None:
    """feeds list, /api/health/'s source block and /metrics carry the book counters."""
    from asgiref.sync import sync_to_async
    from django.core.management import call_command
    from prometheus_client import generate_latest

    from markets.feedmetrics import feed_families
    from markets.quotes import source_block, source_status

    status = (await source_status(symbols=[SYMBOL]))[SYMBOL]
    block = source_block("simulated", status)
    assert block["book_updates"] >= 10
    assert block["resyncs"] == block["book_gaps"] == block["crossed"] == 0

    text = generate_latest(await feed_families()).decode()
    line = next(x for x in text.splitlines() if x.startswith("ticker_book_updates_total{"))
    assert 'symbol="AAPL"' in text and float(line.rsplit(" ", 1)[1]) > 0
    for name in (
        "ticker_book_resyncs_total",
        "ticker_book_gaps_total",
        "ticker_book_crossed_total",
    ):
        assert f'{name}{{source="simulated",symbol="{SYMBOL}"}} 0.0' in text

    import io
    import json

    out = io.StringIO()
    await sync_to_async(call_command)("feeds", "list", "--json", stdout=out)
    row = next(r for r in json.loads(out.getvalue()) if r["symbol"] == SYMBOL)
    assert row["book_updates"] >= 10 and row["resyncs"] == row["crossed"] == 0
    table = io.StringIO()
    await sync_to_async(call_command)("feeds", "list", stdout=table)
    header = table.getvalue().splitlines()[0].split()
    assert header[-4:] == ["book", "resync", "bgaps", "crossed"]


async def test_a_new_producer_announces_a_new_epoch_and_the_seq_carries_on():
    """After a failover the new producer's first book is a snapshot under a new epoch."""
    r = redis_client()
    old, new = (
        SymbolLeases(r, token="old", ttl_seconds=5),
        SymbolLeases(r, token="new", ttl_seconds=5),
    )
    await old.acquire([SYMBOL])
    layer, channel = await listen()
    first = feed_books("old")
    first.start(SYMBOL, FakeSource())
    first.apply(BookDraft(SYMBOL, [("10", "1")], [("11", "1")], snapshot=True))
    first.apply(BookDraft(SYMBOL, [("10", "2")], []))
    await first.publish()
    first.apply(BookDraft(SYMBOL, [("10", "3")], []))
    await first.publish()
    before = [await next_book_event(layer, channel) for _ in range(2)]
    assert [e["seq"] for e in before] == [1, 2] and before[1]["prev_seq"] == 1

    await old.release([SYMBOL])
    await new.acquire([SYMBOL])
    second = feed_books("new")
    second.start(SYMBOL, FakeSource())
    second.apply(BookDraft(SYMBOL, [("10", "3")], [("11", "1")], snapshot=True))
    await second.publish()
    after = await next_book_event(layer, channel)
    assert after["snapshot"] and after["seq"] == 3 and after["epoch"] != before[0]["epoch"]
    # The old producer, had it lived on, can no longer publish a book.
    first.apply(BookDraft(SYMBOL, [("10", "9")], []))
    assert await first.publish() == {SYMBOL}
    assert (await read_book(symbol=SYMBOL)).bids == [("10", "3")]


def test_replay_has_no_book_and_the_exchanges_and_simulator_do():
    from feeds.sources import SOURCES

    assert {name for name, cls in SOURCES.items() if cls.has_book} == {
        "simulated",
        "binance",
        "coinbase",
    }
    replay = SOURCES["replay"].__new__(SOURCES["replay"])
    assert replay.no_book_reason() == "the replay source has no order book"


def test_a_source_that_could_not_start_says_why_it_has_no_book():
    from feeds.services import Unavailable

    config = SymbolConfig(SYMBOL, "crypto", 0, 0.5, 100.0, source="binance")
    source = Unavailable(config, SourceContext(None, 1.0, 0))
    assert not source.has_book
    assert source.no_book_reason() == "the binance source could not start"
