"""streaming.cohort: shared frames for batching connections, without ASGI or Redis."""

import asyncio
import json
import time

import pytest

from streaming import cohort as cohort_module
from streaming.cohort import can_share, caught_up, local_cohorts
from streaming.feed import SymbolFeed
from streaming.outbox import ROUND, Outbox
from streaming.protocol import Mode
from streaming.subscription import Subscription
from tests.test_outbox import until


def tick(symbol: str, seq: int, ts: int) -> str:
    return json.dumps({"type": "tick", "symbol": symbol, "seq": seq, "ts": ts}).replace(" ", "")


class FrozenClock:
    """The outboxes' and cohorts' clock here: it moves only when a test moves it, so
    whether a write falls in a batch window does not depend on how fast a loaded machine
    runs the test. Timers still run on the loop's clock, for as long as they were asked."""

    def __init__(self) -> None:
        self.now = time.time() * 1000

    def __call__(self) -> float:
        return self.now


CLOCK = FrozenClock()


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch):
    CLOCK.now = time.time() * 1000
    monkeypatch.setattr(cohort_module, "now_ms", CLOCK)


class Client:
    """An outbox whose socket takes frames at once until ``full``, and what it got."""

    def __init__(self) -> None:
        self.full = False
        self.writes: list[bytes] = []
        self.sends: list[str] = []
        self.closed: list[int] = []
        self.outbox = Outbox(max_bytes=1 << 20, max_age_ms=1000, clock=CLOCK)
        self.outbox.batch_ms = 50
        self.outbox.on_close = self.closed.append
        self.outbox.attach(self._send, self._write)

    def _write(self, payload: bytes) -> bool:
        if self.full:
            return False
        self.writes.append(payload)
        return True

    async def _send(self, text: str) -> None:
        self.sends.append(text)

    def frames(self) -> list[dict]:
        return [json.loads(p) for p in self.writes] + [json.loads(t) for t in self.sends]

    def seqs(self) -> list[tuple[str, int]]:
        out = []
        for frame in self.frames():
            for t in frame["ticks"] if frame["type"] == "ticks" else [frame]:
                if t["type"] == "tick":
                    out.append((t["symbol"], t["seq"]))
        return out


def live(feed: SymbolFeed, client: Client, last_seq: int = 0) -> Subscription:
    sub = Subscription(feed, client.outbox, mode=Mode.ALL)
    feed.subscribers.add(sub)
    sub.go_live(last_seq)
    return sub


def round_of(feeds: dict[str, SymbolFeed], seq: int, ts: int | None = None) -> None:
    ts = ts or int(CLOCK.now)
    with ROUND:
        for symbol, feed in feeds.items():
            feed.deliver(seq, tick(symbol, seq, ts), ts, now=CLOCK.now)


async def test_connections_with_the_same_symbols_get_one_shared_frame_per_round():
    feeds = {s: SymbolFeed(s) for s in ("A", "B")}
    clients = [Client() for _ in range(3)]
    subs = {c: [live(f, c) for f in feeds.values()] for c in clients}
    for c in clients:
        assert can_share(c.outbox, subs[c]) and caught_up(subs[c])
        local_cohorts().join(c.outbox, subs[c])
    [cohort] = local_cohorts().by_feeds.values()
    round_of(feeds, 1)
    payloads = [c.writes[0] for c in clients]
    assert all(p is payloads[0] for p in payloads)  # built once, written three times
    assert clients[0].seqs() == [("A", 1), ("B", 1)]
    assert all(s.last_seq == 1 for c in clients for s in subs[c])  # kept by the feed
    # Within batch_ms of that write the window is closed: the per-tick path and its timer.
    round_of(feeds, 2)
    assert all(len(c.writes) == 1 for c in clients)
    await until(lambda: all(len(c.writes) == 2 for c in clients))  # the timer's batch
    assert all(c.seqs() == [("A", 1), ("B", 1), ("A", 2), ("B", 2)] for c in clients)
    # A member leaves (unsubscribe, reset, end); the last one takes the cohort with it.
    for c in clients:
        subs[c][0].close()
    assert local_cohorts().by_feeds == {} and feeds["A"].cohorts == []
    assert all(s.cohort is None for c in clients for s in subs[c])
    del cohort


async def test_a_member_that_cannot_take_the_frame_at_once_gets_the_ticks_in_order():
    feeds = {"A": SymbolFeed("A")}
    ok, full, busy = Client(), Client(), Client()
    for c in (ok, full, busy):
        local_cohorts().join(c.outbox, [live(feeds["A"], c)])
    full.full = True
    busy.outbox.put_frame('{"type":"pong"}')  # a reply waits for busy's next write
    round_of(feeds, 1)
    assert ok.seqs() == [("A", 1)] and full.writes == [] and busy.writes == []
    full.full = False
    await until(lambda: full.seqs() and len(busy.frames()) == 2)
    assert full.seqs() == [("A", 1)]
    assert [f["type"] for f in busy.frames()] == ["pong", "tick"]  # the reply first
    for c in (ok, full, busy):
        c.outbox.stop()


async def test_ticks_too_old_to_be_live_close_an_all_member_with_4008():
    feeds = {"A": SymbolFeed("A")}
    c = Client()
    local_cohorts().join(c.outbox, [live(feeds["A"], c)])
    round_of(feeds, 1, ts=int(CLOCK.now) - 5000)
    await asyncio.sleep(0)
    assert c.writes == [] and c.closed == [4008]


async def test_who_may_share_frames():
    feed = SymbolFeed("A")
    c = Client()
    pending = Subscription(feed, c.outbox)
    assert not can_share(c.outbox, [pending])  # its snapshot is on its way
    pending.go_live(5)
    assert can_share(c.outbox, [pending])
    assert not caught_up([pending])  # the snapshot is newer than what the feed delivered
    feed.last_seq = 5
    assert caught_up([pending])
    latest = Client()
    latest_sub = Subscription(feed, latest.outbox, mode=Mode.LATEST)
    latest_sub.go_live(0)
    assert not can_share(latest.outbox, [latest_sub])
    unbatched = Client()
    unbatched.outbox.batch_ms = 0
    assert not can_share(unbatched.outbox, [live(feed, unbatched)])
    no_write = Outbox(max_bytes=1 << 20, max_age_ms=1000)
    no_write.batch_ms = 50
    no_write.attach(c._send)  # a server without the plain write (daphne)
    assert not can_share(no_write, [Subscription(feed, no_write)])
