"""The web process's book path keeps every client exact, whatever its pace (pure; hypothesis).

A producer applies random level changes and publishes window diffs of its top 50 (and now
and then a snapshot of a new epoch); the process's FeedBook (streaming.book) applies them;
book subscriptions (streaming.subscription.BookSubscription) of several depths are
written at random moments, as a slow socket, max_rate or a batch window would allow. Each
client applies what it is sent and checks prev_seq and the checksum on every message;
whenever it is written it holds exactly the current top ``depth``.
"""

import json
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from markets.book import MAX_DEPTH, OrderBook, checksum, window_diff
from streaming.book import FeedBook
from streaming.subscription import BookSubscription

prices = st.integers(min_value=1, max_value=60).map(lambda n: f"{n}.5")
sizes = st.sampled_from(["0", "0", "1", "2.5", "3.25"])
changes = st.lists(st.tuples(prices, sizes), max_size=8)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("update"), changes, changes),
        st.tuples(st.just("snapshot"), changes, changes),
        st.tuples(st.just("write"), st.integers(min_value=0, max_value=2)),
    ),
    max_size=40,
)


class FakeOutbox:
    max_age_ms = 10**12  # age is not what this test is about

    def add_book_slot(self, key, source, *, max_rate):
        pass


class Client:
    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.book: OrderBook | None = None
        self.seq = 0

    def take(self, text: str) -> None:
        msg = json.loads(text)
        if msg["type"] == "book":
            assert msg["depth"] == self.depth
            self.book = OrderBook.from_levels(bids=msg["bids"], asks=msg["asks"])
        else:
            assert msg["prev_seq"] == self.seq
            self.book.apply(bids=msg["bids"], asks=msg["asks"])
        self.seq = msg["seq"]
        assert checksum(*self.book.top(10)) == msg["checksum"]


@settings(max_examples=300, deadline=None)
@given(steps=steps, first=st.tuples(changes, changes))
def test_every_client_holds_the_top_depth_through_conflation_and_new_epochs(steps, first):
    feed = SimpleNamespace(symbol="X", book=None)
    feed.book = fb = FeedBook("X", on_change=lambda: None)
    truth = OrderBook.from_levels(bids=first[0], asks=first[1])
    view = truth.top(MAX_DEPTH)
    epoch, seq = 1, 1
    fb._replace(f"e{epoch}", seq, 1, *view)
    fb.loaded = True
    subs = []
    for depth in (1, 3, 10):
        sub = BookSubscription(feed, FakeOutbox(), depth=depth)
        sub.live = True
        subs.append((sub, Client(depth)))

    def write(i: int) -> None:
        sub, client = subs[i]
        text = sub.next_frame(now=seq)
        if text is not None:
            client.take(text)
        # Whatever was merged or skipped, the client now holds the process's top depth.
        assert client.book.top(MAX_DEPTH) == fb.book.top(client.depth)

    for step in steps:
        if step[0] == "write":
            write(step[1])
            continue
        _, bids, asks = step
        seq += 1
        if step[0] == "snapshot":
            epoch += 1
            truth = OrderBook.from_levels(bids=bids, asks=asks)
            view = truth.top(MAX_DEPTH)
            event_bids, event_asks = view
        else:
            truth.apply(bids=bids, asks=asks)
            new = truth.top(MAX_DEPTH)
            event_bids, event_asks = window_diff(view, new)
            view = new
        fb.on_message(
            {"epoch": f"e{epoch}", "seq": seq, "ts": seq, "snapshot": step[0] == "snapshot",
             "bids": event_bids, "asks": event_asks}
        )  # fmt: skip
        assert fb.seq == seq and fb.book.top(MAX_DEPTH) == truth.top(MAX_DEPTH)
    for i in range(len(subs)):
        write(i)


async def test_a_book_frame_that_waited_too_long_for_the_socket_goes_as_a_fresh_snapshot():
    import asyncio

    from streaming.outbox import Outbox

    class Clock:
        now = 1_000_000.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    outbox = Outbox(max_bytes=10_000, max_age_ms=1000, clock=clock)
    sent: list[dict] = []
    gates: list[asyncio.Event] = []

    async def send(text: str) -> None:
        sent.append(json.loads(text))
        if gates:
            await gates[0].wait()
            gates.pop(0)

    outbox.attach(send)
    books, subs = {}, {}
    for symbol in ("X", "Y"):
        feed = SimpleNamespace(symbol=symbol, book=None)
        feed.book = books[symbol] = FeedBook(symbol, on_change=lambda: None)
        books[symbol]._replace("e", 1, clock.now, [["10", "1"], ["9", "1"]], [["11", "1"]])
        books[symbol].loaded = True
        subs[symbol] = BookSubscription(feed, outbox, depth=5)
        subs[symbol].live = True
        subs[symbol].offer()
    assert [(m["type"], m["symbol"]) for m in sent] == [("book", "X"), ("book", "Y")]

    def change(symbol: str, seq: int, size: str) -> None:
        books[symbol].on_message(
            {"epoch": "e", "seq": seq, "ts": clock.now, "bids": [["10", size]], "asks": []}
        )
        subs[symbol].offer()

    gates.extend([asyncio.Event(), asyncio.Event()])
    change("X", 2, "2")  # written at once; the socket then blocks (the writer parks it)
    change("X", 3, "3")  # both wait in their slots now
    change("Y", 2, "2")
    gates[0].set()  # X's update 2 is through: the writer takes X 3 and Y 2 together
    for _ in range(5):
        await asyncio.sleep(0)
    assert [(m["type"], m["symbol"], m["seq"]) for m in sent[2:]] == [
        ("book_update", "X", 2), ("book_update", "X", 3),
    ]  # fmt: skip
    clock.now += 2000  # X 3 blocks the socket for 2 s: Y 2, built before, is now stale
    gates[0].set()
    for _ in range(5):
        await asyncio.sleep(0)
    stale = sent[4]
    assert (stale["type"], stale["symbol"], stale["seq"]) == ("book", "Y", 2)
    assert stale["bids"][0] == ["10", "2"]
    change("Y", 3, "4")  # and the next update goes on from that snapshot
    await asyncio.sleep(0)
    assert (sent[-1]["type"], sent[-1]["prev_seq"], sent[-1]["seq"]) == ("book_update", 2, 3)
