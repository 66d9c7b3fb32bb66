"""SymbolFeed: one web process's view of one symbol: recent ticks, subscribers, refills.

Each process holds one SymbolFeed per symbol it serves (streaming.hub.Hub owns them).
The feed is the one place that

- keeps the symbol's recent ticks (a ring of at most ``SNAPSHOT_SIZE``, encoded once),
- reads snapshots for subscribers, shared and incremental (below),
- refills ticks the channel layer lost, once for the whole process, and
- hands each live tick to its subscribers (streaming.subscription.Subscription), and
- holds the symbol's order book while it has book subscribers (streaming.book.FeedBook),
  telling each (streaming.subscription.BookSubscription) when it changed.

Snapshots are shared between subscribers. When many clients subscribe to a symbol
(a deploy, a reconnect storm), each would otherwise read, parse and encode the same
300 ticks. Two rules keep that cheap and exact:

- A read that *began after* a subscriber joined the feed covers that subscriber exactly
  as its own read would (see PriceStreamConsumer.do_subscribe), so concurrent
  subscribers share one read.
- A later read starts from the newest snapshot the feed already holds and fetches only
  the ticks after it (an XRANGE from its last seq), so each tick is parsed and encoded
  once per process, not once per subscriber.
"""

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from markets import history, keys
from markets.redis import redis_for
from markets.ticks import Tick

from .book import FeedBook
from .faults import FaultLog

if TYPE_CHECKING:
    from .cohort import Cohort
    from .subscription import BookSubscription, Subscription

logger = logging.getLogger(__name__)
faults = FaultLog(logger)

SNAPSHOT_SIZE = history.SNAPSHOT_SIZE


@dataclass(frozen=True)
class EncodedSnapshot:
    symbol: str
    epoch: str
    last_seq: int  # 0 when the symbol has no history
    tick_texts: tuple[str, ...]  # each tick's JSON, ascending seq
    last_ts: int = 0  # ts of the newest tick, 0 when there is none

    @cached_property
    def text(self) -> str:
        """The whole "snapshot" frame, ready to send (built once, shared by subscribers)."""
        return self._build(self.tick_texts)

    def frame(self, size: int) -> str:
        """The "snapshot" frame of the newest ``size`` ticks."""
        if size >= len(self.tick_texts):
            return self.text
        return self._build(self.tick_texts[len(self.tick_texts) - size :] if size else ())

    def _build(self, texts: tuple[str, ...]) -> str:
        head = json.dumps({"type": "snapshot", "symbol": self.symbol, "epoch": self.epoch})
        return f'{head[:-1]}, "ticks": [{",".join(texts)}]}}'


def encode_snapshot(snap: history.Snapshot) -> EncodedSnapshot:
    return EncodedSnapshot(
        symbol=snap.symbol,
        epoch=snap.epoch,
        last_seq=snap.ticks[-1].seq if snap.ticks else 0,
        tick_texts=tuple(t.to_json() for t in snap.ticks),
        last_ts=snap.ticks[-1].ts if snap.ticks else 0,
    )


async def _extend(base: EncodedSnapshot, size: int) -> EncodedSnapshot | None:
    """``base`` brought up to date with the ticks after it, or None if it cannot be."""
    pipe = redis_for(base.symbol).pipeline(transaction=True)
    pipe.get(keys.epoch_key(base.symbol))
    pipe.xrange(keys.history_key(base.symbol), min=f"({base.last_seq}-0", count=size + 1)
    epoch, entries = await pipe.execute()
    epoch = epoch.decode() if isinstance(epoch, bytes) else (epoch or "")
    newer = [Tick.from_stream_entry(base.symbol, eid, fields) for eid, fields in entries]
    if epoch != base.epoch or len(newer) > size or (newer and newer[0].seq != base.last_seq + 1):
        return None  # a new epoch, trimmed history, or more than a snapshot holds
    if not newer:
        return base
    texts = (*base.tick_texts, *(t.to_json() for t in newer))[-size:]
    return EncodedSnapshot(base.symbol, epoch, newer[-1].seq, texts, newer[-1].ts)


class SymbolFeed:
    """This process's recent ticks of one symbol, and the subscriptions they go to."""

    def __init__(self, symbol: str, *, size: int = SNAPSHOT_SIZE) -> None:
        self.symbol = symbol
        self.size = size
        self.subscribers: set[Subscription] = set()
        # Book subscriptions, and the book they are sent from (None while there are none).
        self.book_subscribers: set[BookSubscription] = set()
        self.book: FeedBook | None = None
        # Cohorts (streaming.cohort) whose connections hold this symbol: each gets a tick
        # once, for all its members, whose subscriptions skip the per-tick path.
        self.cohorts: list[Cohort] = []
        # The newest snapshot read, extended by live ticks: the ring of recent ticks.
        self.latest: EncodedSnapshot | None = None
        # The numbering (history epoch) of the ticks this process delivers: the newest
        # read's, or one the hub checked against Redis (Hub._on_tick); "" while unknown.
        self.epoch = ""
        # seq of the newest tick this feed has handed to its subscribers, 0 for none yet,
        # and that tick's ts: a live tick at or below both is a copy (Hub._on_tick).
        # Only deliver() moves them: every subscriber, live or pending, has been handed
        # every tick up to here, so a copy the hub drops is one nobody needs.
        self.last_seq = 0
        self.known_ts = 0
        # time.monotonic() when the last subscriber left; None while it has any.
        self.idle_since: float | None = None
        # Set by the hub once this process is in the symbol's group: live ticks arrive.
        self.joined = False
        # When (epoch ms) the hub last received a live tick of this symbol (at first: when
        # the feed was made), and that tick's ts: what health checks compare with the
        # producer's (telemetry.probes).
        self.received_ms = time.time() * 1000
        self.last_ts: int | None = None
        self._read: tuple[float, asyncio.Task[EncodedSnapshot]] | None = None

    # --- books

    def add_book_subscriber(self, sub: "BookSubscription") -> FeedBook:
        """Called when a book subscription joins: the book it is sent from."""
        if self.book is None:
            self.book = FeedBook(self.symbol, on_change=self.deliver_book)
        self.book_subscribers.add(sub)
        return self.book

    async def ensure_book(self) -> None:
        """Called by a new book subscriber: returns once the book was read (shared read)."""
        if self.book is not None:
            await self.book.ensure_loaded()

    def discard_book_subscriber(self, sub: "BookSubscription") -> None:
        self.book_subscribers.discard(sub)
        if not self.book_subscribers:
            # Nobody here is sent the book: stop keeping it (a new subscriber reads it).
            self.book = None

    def on_book_message(self, event: dict) -> None:
        """Called by the hub with each ``book.message`` of this symbol."""
        if self.book is not None:
            self.book.on_message(event)

    def deliver_book(self, now: float | None = None) -> None:
        """Tell every book subscriber the book changed (each sends what it may)."""
        if now is None:
            now = time.time() * 1000.0  # once for all of them
        failed: list[tuple[BookSubscription, Exception]] = []
        for sub in self.book_subscribers:
            try:
                sub.offer(now)
            except Exception as exc:
                failed.append((sub, exc))
        for sub, exc in failed:
            faults.report(
                f"deliver-book:{type(exc).__name__}",
                "delivering a %s book failed; the subscriber is dropped and closed (1011)",
                self.symbol, exc=exc,
            )  # fmt: skip
            self.book_subscribers.discard(sub)
            sub.outbox.fail(exc)

    def has_subscribers(self) -> bool:
        return bool(self.subscribers or self.book_subscribers)

    # --- snapshots

    async def read(self, *, joined_at: float) -> EncodedSnapshot:
        """A snapshot read that began at or after ``joined_at`` (time.monotonic())."""
        latest = self.latest
        if self.joined and latest is not None and latest.last_seq >= self.last_seq:
            # The ring holds every tick up to the newest this process received (or a
            # read newer still), and a subscriber that has joined gets every later one
            # live: the ring *is* a read that began after the join, without asking Redis.
            return latest
        current = self._read
        if current is None or current[0] < joined_at:
            # Its own task, so a subscriber that disconnects does not cancel the others' read.
            task = asyncio.ensure_future(self._read_snapshot())
            task.add_done_callback(_retrieve_exception)
            current = self._read = (time.monotonic(), task)
        return await asyncio.shield(current[1])

    async def _read_snapshot(self) -> EncodedSnapshot:
        base = self.latest
        snap = await _extend(base, self.size) if base is not None else None
        if snap is None:
            snap = encode_snapshot(await history.snapshot(symbol=self.symbol, size=self.size))
        latest = self.latest
        # Reads may finish out of order; keep the newest as the next base.
        if latest is None or snap.last_seq >= latest.last_seq or snap.epoch != latest.epoch:
            self.latest = snap
            self.epoch = snap.epoch
        # A read newer than the ticks delivered so far does not move last_seq: only its
        # own subscribers' history reaches that far. Subscribers of an older read still
        # pending (reads end in any order), or live ones, need those ticks when they
        # arrive; taking them for copies lost them silently (issue 19).
        return snap

    def observe(self, *, seq: int, text: str, ts: int) -> None:
        """Extend the newest snapshot with a live tick this process received."""
        latest = self.latest
        if latest is not None and not latest.epoch:
            # A snapshot read before the symbol's first tick names no epoch, and a live
            # tick does not say its own: extended, it sent later subscribers ticks under
            # the epoch "", which a client resumes as "the current one" and so never
            # learns of a new epoch (issue 22). The next read asks Redis instead.
            self.latest = None
            return
        # Only the next seq keeps it contiguous; a tick after a hole is ignored.
        if latest is not None and seq == latest.last_seq + 1:
            texts = (*latest.tick_texts, text)[-self.size :]
            self.latest = EncodedSnapshot(self.symbol, latest.epoch, seq, texts, ts)

    def cached_range(self, *, after_seq: int, before_seq: int) -> list[str] | None:
        """The ticks with after_seq < seq < before_seq if this feed holds them all."""
        latest = self.latest
        if latest is None or latest.last_seq < before_seq - 1:
            return None
        first_seq = latest.last_seq - len(latest.tick_texts) + 1
        if first_seq > after_seq + 1:
            return None
        start = after_seq + 1 - first_seq
        return list(latest.tick_texts[start : start + (before_seq - after_seq - 1)])

    def forget(self) -> None:
        """Drop the ring (a new epoch): the next read starts from scratch."""
        self.latest = None
        self.epoch = ""
        self.last_seq = 0
        self.known_ts = 0
        self._read = None

    # --- live ticks

    def deliver(
        self, seq: int, text: str, ts: int, *, live: bool = True, now: float | None = None
    ) -> None:
        """Hand the next tick to every subscriber (one that falls behind closes itself).

        ``now`` (epoch ms) saves each subscriber's outbox reading the clock.
        """
        self.last_seq, self.known_ts = seq, ts
        self.observe(seq=seq, text=text, ts=ts)
        failed: list[tuple[Subscription, Exception]] = []
        for cohort in self.cohorts:
            cohort.add(text, ts, live)
        for sub in self.subscribers:
            if sub.cohort is not None:
                sub.last_seq = seq  # its cohort has the tick
                continue
            try:
                sub.offer(seq, text, ts, live, now)
            except Exception as exc:
                failed.append((sub, exc))
        if failed:
            # One broken subscriber must not stop the others' ticks, nor fail on every tick.
            for sub, exc in failed:
                faults.report(
                    f"deliver:{type(exc).__name__}",
                    "delivering a %s tick failed; the subscriber is dropped and closed (1011)",
                    self.symbol, exc=exc,
                )  # fmt: skip
                self.subscribers.discard(sub)
                sub.outbox.fail(exc)

    def deliver_history(self, ticks: list[Tick]) -> None:
        """Hand ticks fetched from history (a refill, a catch-up) to every subscriber."""
        for tick in ticks:
            if tick.seq > self.last_seq:
                self.deliver(tick.seq, tick.to_json(), tick.ts, live=False)

    def continues_after(self) -> int:
        """The seq live ticks go on from: the last delivered or, before the first, the
        newest snapshot read (0 when neither); a later live tick means a hole."""
        if self.last_seq:
            return self.last_seq
        latest = self.latest
        return latest.last_seq if latest is not None else 0

    async def missed(self, *, after_seq: int, before_seq: int) -> list[Tick]:
        """The ticks between ``after_seq`` and ``before_seq``, from history."""
        return await history.ticks_after(
            symbol=self.symbol, after_seq=after_seq, limit=before_seq - after_seq - 1
        )


def _retrieve_exception(task: asyncio.Task) -> None:
    # Every waiter may have gone; do not let asyncio log the error as unretrieved.
    if not task.cancelled():
        task.exception()
