"""FeedBook: one web process's order book of one symbol, and the frames it sends from it.

Each SymbolFeed (streaming.feed) that has book subscribers holds one FeedBook: the
symbol's top ``MAX_DEPTH`` levels as the producer published them (markets.books, the
channel layer's ``book.message``), numbered by the book's own ``seq`` in its ``epoch``.

- Live: a ``book.message`` with the next seq is applied; one with a lower seq is a copy.
- Anything that breaks continuity (a seq hole, an update of another epoch, the first
  subscriber) re-reads the book from Redis, once for the whole process, while later
  messages wait in order behind the read; a snapshot message of a new epoch replaces
  the book at once.

Subscribers are never sent the producer's deltas. Each book subscription
(streaming.subscription.BookSubscription) remembers the view it last sent (its
``seq`` and top ``depth`` levels) and is sent ``window_diff(view, current top-depth)``
(markets.book), so however many updates were merged in between (a slow socket, a
``max_rate``, a refill) the client ends up holding exactly the current top ``depth``.
That update is the same for every subscriber with the same depth and last-sent seq,
so it is built and encoded once here and shared (the frame cache below), which keeps a
delivered book update about as cheap as a delivered tick.
"""

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from markets.book import MAX_DEPTH, BookError, OrderBook, View, checksum, window_diff
from markets.books import BookState, read_book
from telemetry import metrics

from .faults import FaultLog

logger = logging.getLogger(__name__)
faults = FaultLog(logger)

# What a book snapshot says when the symbol's source has no book (or none was published).
NO_BOOK_REASON = "no_book"
# Messages kept in order behind a read from Redis; past this the read is simply done again.
MAX_WAITING = 10_000


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


class FeedBook:
    """The symbol's current book in this process, with shared views and frames."""

    def __init__(self, symbol: str, *, on_change: Callable[[], None]) -> None:
        self.symbol = symbol
        self.book = OrderBook()
        self.epoch = ""  # "" until read (and while the symbol has no book)
        self.seq = 0
        self.ts = 0
        self.loaded = False
        self.available = False
        self.reason = NO_BOOK_REASON
        # Called after every change subscribers should hear of (the feed's fan-out).
        self._on_change = on_change
        # Views and frames of the current seq, shared by every subscriber: depth ->
        # (view, checksum); depth -> snapshot text; (depth, from seq) -> update text.
        self._views: dict[int, tuple[View, int]] = {}
        self._snapshots: dict[int, str] = {}
        self._updates: dict[tuple[int, int], str | None] = {}
        # The read from Redis in flight, and the messages that arrived meanwhile.
        self._read: asyncio.Task | None = None
        self._waiting: list[dict] = []
        self.refills = 0

    # --- reads from Redis

    async def ensure_loaded(self) -> None:
        """Called by a new subscriber: returns once the book was read at least once."""
        if not self.loaded:
            await asyncio.shield(self._start_read("subscribe"))

    def refresh(self) -> None:
        """Called after a channel-layer outage: read the book again (if it was read)."""
        if self.loaded:
            self._start_read("gap")

    def _start_read(self, why: str) -> asyncio.Task:
        """The one read from Redis of this process (started if none is in flight)."""
        if self._read is None or self._read.done():
            self.refills += 1
            metrics.BOOK_REFILLS.labels(why).inc()
            self._read = asyncio.ensure_future(self._read_and_replay())
            self._read.add_done_callback(_retrieve_exception)
        return self._read

    async def _read_and_replay(self) -> None:
        try:
            state = await read_book(symbol=self.symbol)
        except Exception as exc:
            metrics.REDIS_ERRORS.labels("book").inc()
            faults.report("read", "reading the %s book failed: %s", self.symbol, exc, exc=exc)
            # The messages that waited go with this read; the next message reads again.
            self._waiting = []
            raise
        self._replace_from(state)
        waiting, self._waiting = self._waiting, []
        for i, event in enumerate(waiting):
            if not self._apply(event):
                # Still a break after the read (the read was older than the message):
                # read again, with this message and the rest waiting behind it.
                self._waiting = waiting[i:] + self._waiting
                self._read = None
                self._start_read("gap")
                break
        self._on_change()

    def _replace_from(self, state: BookState | None) -> None:
        if state is None:
            # No producer has published a book of the symbol (yet): an empty, unavailable
            # one; the producer's first snapshot (a new epoch) replaces it.
            self._replace("", 0, 0, [], [], available=False)
        else:
            self._replace(
                state.epoch, state.seq, state.ts, state.bids, state.asks,
                available=state.has_book, reason=state.reason,
            )  # fmt: skip
        self.loaded = True

    def _replace(
        self, epoch: str, seq: int, ts: int, bids: list, asks: list, *, available: bool = True,
        reason: str = "",
    ) -> None:  # fmt: skip
        self.book = OrderBook.from_levels(bids=bids, asks=asks)
        self.epoch, self.seq, self.ts = epoch, seq, ts
        self.available = available
        self.reason = "" if available else (reason or NO_BOOK_REASON)
        self._changed()

    # --- live messages

    def on_message(self, event: dict) -> None:
        """Called with each ``book.message`` of the symbol (the hub's receive loop)."""
        if self._read is not None and not self._read.done():
            self._wait(event)  # applied in order once the read is in
            return
        if not self.loaded:
            return  # nobody asked for the book yet: the first subscriber reads it
        seq = self.seq
        if not self._apply(event):
            self._wait(event)
            self._start_read("gap" if event.get("epoch") == self.epoch else "epoch")
        elif self.seq != seq:
            self._on_change()

    def _apply(self, event: dict) -> bool:
        """Apply ``event`` if it continues the book (copies are dropped); False on a break."""
        try:
            epoch, seq = event["epoch"], event["seq"]
            if event.get("snapshot"):
                if not (epoch == self.epoch and seq <= self.seq):
                    self._replace(
                        epoch, seq, event["ts"], event["bids"], event["asks"],
                        available=event.get("available", True), reason=event.get("reason", ""),
                    )  # fmt: skip
                return True
            if epoch != self.epoch or seq > self.seq + 1:
                # A hole (the layer lost messages), or a delta of an epoch whose snapshot
                # this process missed: the book in Redis is the truth.
                metrics.BOOK_SEQ_BREAKS.inc()
                return False
            if seq <= self.seq:
                return True  # a copy (a read from Redis overtook it)
            self.book.apply(bids=event["bids"], asks=event["asks"])
        except (BookError, KeyError, TypeError, ValueError) as exc:
            # A malformed message must not stop the feed: the book is read again.
            faults.report("bad", "a %s book message was refused: %r", self.symbol, exc)
            return False
        self.seq, self.ts = seq, event["ts"]
        self._changed()
        return True

    def _wait(self, event: dict) -> None:
        if len(self._waiting) < MAX_WAITING:
            self._waiting.append(event)

    def _changed(self) -> None:
        self._views.clear()
        self._snapshots.clear()
        self._updates.clear()

    # --- what subscribers are sent

    def view(self, depth: int) -> tuple[View, int]:
        """The current top ``depth`` levels and their checksum (built once per seq)."""
        cached = self._views.get(depth)
        if cached is None:
            top = self.book.top(min(depth, MAX_DEPTH))
            cached = self._views[depth] = (top, checksum(*top))
        return cached

    def snapshot(self, depth: int) -> tuple[str, View]:
        """The ``book`` frame of the current top ``depth``, and that view."""
        (bids, asks), crc = self.view(depth)
        text = self._snapshots.get(depth)
        if text is None:
            message: dict[str, Any] = {
                "type": "book", "symbol": self.symbol, "seq": self.seq, "epoch": self.epoch,
                "ts": self.ts, "depth": depth, "bids": bids, "asks": asks, "checksum": crc,
                "available": self.available,
            }  # fmt: skip
            if not self.available:
                message["reason"] = self.reason
            text = self._snapshots[depth] = _dumps(message)
            metrics.DELIVERY.book_frames_built += 1
        return text, (bids, asks)

    def update(self, depth: int, from_seq: int, from_view: View) -> tuple[str | None, View]:
        """The ``book_update`` frame from ``from_view`` (sent at ``from_seq``) to now.

        None when the top ``depth`` did not change (the client's seq then stays where
        it is, and the next update's ``prev_seq`` still names it).
        """
        current, crc = self.view(depth)
        key = (depth, from_seq)
        if key in self._updates:
            return self._updates[key], current
        bids, asks = window_diff(from_view, current)
        text = None
        if bids or asks:
            text = _dumps({
                "type": "book_update", "symbol": self.symbol, "seq": self.seq,
                "prev_seq": from_seq, "ts": self.ts, "bids": bids, "asks": asks,
                "checksum": crc,
            })  # fmt: skip
            metrics.DELIVERY.book_frames_built += 1
        self._updates[key] = text
        return text, current

    def age_ms(self, now: float) -> float:
        return now - self.ts if self.ts else 0.0


def _retrieve_exception(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()
