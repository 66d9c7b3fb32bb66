"""streaming.subscription and the feed's delivery: the seam, modes and failures, no Redis."""

import asyncio
import json

from streaming.feed import EncodedSnapshot, SymbolFeed
from streaming.outbox import Outbox
from streaming.protocol import Mode
from streaming.subscription import Subscription


def tick(seq: int) -> str:
    return f'{{"type":"tick","symbol":"A","seq":{seq},"ts":1}}'


def outbox() -> Outbox:
    return Outbox(max_bytes=1 << 20, max_age_ms=10**12, clock=lambda: 2.0)


def seqs(box: Outbox) -> list[int]:
    out = []
    for frame in box.take()[0]:
        msg = json.loads(frame)
        out += [t["seq"] for t in msg["ticks"]] if msg["type"] == "ticks" else [msg["seq"]]
    return out


def attach(feed: SymbolFeed, box: Outbox, **kw) -> Subscription:
    sub = Subscription(feed, box, **kw)
    feed.subscribers.add(sub)
    return sub


async def test_pending_holds_live_ticks_and_go_live_releases_them_without_duplicates():
    feed, box = SymbolFeed("A"), outbox()
    sub = attach(feed, box)
    for seq in (4, 5, 6):  # arrived while the snapshot (up to 5) was being read
        feed.deliver(seq, tick(seq), 1)
    assert seqs(box) == []
    sub.go_live(5)
    feed.deliver(7, tick(7), 1)
    assert seqs(box) == [6, 7]


async def test_a_hole_at_the_seam_is_filled_from_the_feeds_recent_ticks():
    feed, box = SymbolFeed("A"), outbox()
    feed.latest = EncodedSnapshot("A", "e", 6, tuple(tick(s) for s in range(1, 7)))
    sub = attach(feed, box)
    sub.go_live(3)
    sub.offer(7, tick(7), 1)
    assert seqs(box) == [4, 5, 6, 7]


async def test_a_hole_the_feed_no_longer_holds_closes_an_all_connection_with_1011():
    feed, box = SymbolFeed("A"), outbox()
    closed: list[int] = []
    box.on_close = closed.append
    sub = attach(feed, box)
    sub.go_live(3)
    assert not sub.offer(7, tick(7), 1)  # 4-6 are nowhere: 'all' cannot go on without them
    await asyncio.sleep(0)
    assert closed == [1011] and sub.last_seq == 3


async def test_a_hole_in_latest_mode_is_announced_in_the_next_ticks_skipped():
    feed, box = SymbolFeed("A"), outbox()
    sub = attach(feed, box, mode=Mode.LATEST)
    sub.go_live(3)
    sub.offer(7, tick(7), 1)
    sub.offer(8, tick(8), 1)
    sub.offer(10, tick(10), 1)
    frames = [json.loads(f) for f in box.take()[0]]
    # 4-6 and 9 never came, 7 and 8 were replaced: 10 = 3 + 6 skipped + 1.
    assert [(f["seq"], f.get("skipped", 0)) for f in frames] == [(10, 6)]


async def test_latest_mode_conflates_and_replay_keeps_only_the_newest():
    feed, box = SymbolFeed("A"), outbox()
    sub = attach(feed, box, mode=Mode.LATEST)
    sub.replay([tick(s) for s in (1, 2, 3)], [1, 1, 1])
    sub.go_live(3)
    for seq in (4, 5):
        feed.deliver(seq, tick(seq), 1)
    frames = [json.loads(f) for f in box.take()[0]]
    assert [(f["seq"], f["skipped"]) for f in frames] == [(5, 4)]


async def test_a_subscriber_that_raises_is_removed_and_the_others_still_get_ticks():
    feed = SymbolFeed("A")
    good, bad = outbox(), outbox()
    closed: list[int] = []
    bad.on_close = closed.append
    attach(feed, good).go_live(0)

    class Broken(Subscription):
        __slots__ = ()

        def offer(self, *args, **kwargs) -> bool:
            raise RuntimeError("bug")

    broken = Broken(feed, bad)
    feed.subscribers.add(broken)
    feed.deliver(1, tick(1), 1)
    feed.deliver(2, tick(2), 1)
    await asyncio.sleep(0)
    assert broken not in feed.subscribers
    assert closed == [1011]
    assert seqs(good) == [1, 2]


async def test_history_ticks_are_never_judged_by_age():
    feed = SymbolFeed("A")
    box = Outbox(max_bytes=1 << 20, max_age_ms=1000, clock=lambda: 10**9)
    closed: list[int] = []
    box.on_close = closed.append
    attach(feed, box).go_live(0)
    feed.deliver(1, tick(1), 1, live=False)  # a refill after an outage: ts is old
    await asyncio.sleep(0)
    assert closed == [] and seqs(box) == [1]
