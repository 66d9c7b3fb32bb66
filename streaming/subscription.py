"""Subscription: one connection's hold on one symbol, from pending to live.

A subscription starts *pending*: it has joined the symbol's feed, so live ticks reach
it, but its snapshot or replay is still on its way; it holds those ticks. go_live()
takes the seq the history reached and releases the held ticks through the same seq
check as every later tick, so the seam has no gap and no duplicate.

The feed hands every tick after the one it last delivered to every subscriber
(streaming.feed), so history plus the held ticks leave no hole; the seq check is the
one place a hole would still be handled, in every mode: ``all`` fills it from the
feed's recent ticks (or closes the connection, 1011, when the feed no longer holds
them), ``latest`` announces it in the next tick's ``skipped``. Cohort members skip the
per-tick path, so a subscription joins one only when it is exactly where its feed is
(streaming.cohort.caught_up).
"""

import logging
from typing import TYPE_CHECKING

from markets.book import View
from telemetry.metrics import DELIVERY

from .feed import SymbolFeed
from .outbox import BOOK_SLOT_PREFIX, Outbox
from .protocol import Mode

if TYPE_CHECKING:
    from .cohort import Cohort

logger = logging.getLogger(__name__)


class Subscription:
    """Pending -> live, the last seq sent, the delivery mode, and the outbox it feeds."""

    __slots__ = (
        "cohort", "feed", "held", "last_seq", "max_rate", "mode", "outbox", "snapshot_size",
    )  # fmt: skip

    def __init__(
        self,
        feed: SymbolFeed,
        outbox: Outbox,
        *,
        mode: Mode = Mode.ALL,
        max_rate: float | None = None,
        snapshot_size: int = 300,
    ) -> None:
        self.feed = feed
        self.outbox = outbox
        self.mode = mode
        self.max_rate = max_rate
        self.snapshot_size = snapshot_size
        self.last_seq = 0  # seq of the last tick sent (in history or live)
        # The cohort (streaming.cohort) that takes this subscription's ticks, if any.
        self.cohort: Cohort | None = None
        # Live ticks (seq, text, ts) held while history is on its way; None once live.
        self.held: list[tuple[int, str, int]] | None = []
        if mode is Mode.LATEST:
            outbox.add_slot(feed.symbol, max_rate=max_rate)

    @property
    def symbol(self) -> str:
        return self.feed.symbol

    @property
    def is_live(self) -> bool:
        return self.held is None

    def offer(
        self, seq: int, text: str, ts: int, live: bool = True, now: float | None = None
    ) -> bool:
        """Called by the feed with each tick; False once the connection is slow.

        ``live`` is False for ticks the feed fetched from history (a refill after an
        outage): those are never judged by their age.
        """
        held = self.held
        if held is not None:
            held.append((seq, text, ts))
            return True
        last = self.last_seq
        if seq <= last:
            return True  # already sent in a snapshot or replay
        if last and seq != last + 1 and not self._bridge(last, seq):
            return False
        self.last_seq = seq
        if self.mode is Mode.ALL:
            if live:
                return self.outbox.put_tick(text, ts, now)
            self.outbox.put_history([text])
            return True
        self.outbox.put_latest(self.feed.symbol, text, ts)
        return True

    def _bridge(self, last: int, seq: int) -> bool:
        """Called when the next tick is not ``last + 1``; False if the connection ends.

        The feed delivers contiguous ticks and refills what the layer lost, so this is
        rare: the layer lost the first ticks of a new feed, before any was delivered.
        """
        if self.mode is Mode.LATEST:
            self.outbox.skip_latest(self.feed.symbol, seq - last - 1)
            return True
        texts = self.feed.cached_range(after_seq=last, before_seq=seq)
        if texts is None:
            # 'all' promises every tick or a close: the client resumes with 'since'.
            if not self.outbox.closing:
                logger.error(
                    "%s: ticks %d..%d are missing for a subscriber; closing it (1011)",
                    self.symbol, last + 1, seq - 1,
                )  # fmt: skip
                self.outbox.fail(LookupError(f"{self.symbol} ticks {last + 1}..{seq - 1}"))
            return False
        self.outbox.put_history(texts)
        return True

    def replay(self, texts: list[str], tss: list[int]) -> None:
        """Queue history after a resume point: all of it, or in ``latest`` only the newest."""
        if self.mode is Mode.ALL:
            self.outbox.put_history(texts)
        else:
            for text, ts in zip(texts, tss, strict=True):
                self.outbox.put_latest(self.feed.symbol, text, ts)

    def go_live(self, last_seq: int) -> bool:
        """Called once history up to ``last_seq`` is queued; False if that made it slow."""
        self.last_seq = last_seq
        held, self.held = self.held or [], None
        ok = True
        for seq, text, ts in held:
            ok = self.offer(seq, text, ts) and ok
        return ok

    def rewind(self) -> bool:
        """Called when history must be sent again (a reset): hold live ticks until then.

        Returns False for a subscription still waiting for its first history: whoever
        is sending that one will also take it live.
        """
        if self.held is not None:
            return False
        if self.cohort is not None:
            self.cohort.leave(self.outbox)  # pending again: ticks take the per-tick path
        self.held = []
        return True

    def close(self) -> None:
        if self.cohort is not None:
            self.cohort.leave(self.outbox)
        self.held = None
        if self.mode is Mode.LATEST:
            self.outbox.drop_slot(self.feed.symbol)


class BookSubscription:
    """One connection's hold on one symbol's book: the view it last sent, and its slot.

    The outbox holds one slot per book subscription (streaming.outbox, a ``book`` slot):
    the feed marks it when the book changes, and when the slot may be written (the
    socket has room, ``max_rate`` and ``batch_ms`` allow) the outbox asks next_frame()
    for what to send *then*: a ``book`` snapshot first and after a new epoch, otherwise
    one ``book_update`` from the view last sent to the current one (streaming.book). So
    a slow reader is never closed and never queues stale deltas: it gets fewer, merged
    updates, each checked by ``prev_seq`` and the checksum.
    """

    __slots__ = ("depth", "epoch", "feed", "key", "live", "max_age_ms", "outbox", "seq", "view")

    def __init__(
        self, feed: SymbolFeed, outbox: Outbox, *, depth: int, max_rate: float | None = None
    ) -> None:
        self.feed = feed
        self.outbox = outbox
        self.depth = depth
        self.max_age_ms = outbox.max_age_ms
        # What the client holds: the epoch, seq and view of the last book frame sent
        # (None: nothing yet, a snapshot goes first).
        self.epoch: str | None = None
        self.seq = 0
        self.view: View | None = None
        # False until the connection has answered the subscribe: nothing goes before that.
        self.live = False
        self.key = BOOK_SLOT_PREFIX + feed.symbol
        outbox.add_book_slot(self.key, self, max_rate=max_rate)

    @property
    def symbol(self) -> str:
        return self.feed.symbol

    def start(self) -> None:
        """Called once the subscribe is answered and the book read: the snapshot goes."""
        self.live = True
        self.offer()

    def offer(self, now: float | None = None) -> None:
        """Called by the feed when the book changed (or a first snapshot is due)."""
        self.outbox.put_book(self.key, now)

    def next_frame(self, now: float) -> str | None:
        """Called by the outbox when this book may be written: the frame to write, if any."""
        book = self.feed.book
        if book is None or not book.loaded or not self.live:
            return None
        if self.view is None or self.epoch != book.epoch:
            text, view = book.snapshot(self.depth)
            DELIVERY.book_snapshots += 1
        elif self.seq == book.seq:
            return None
        else:
            if book.ts and now - book.ts > self.max_age_ms:
                # This process is behind: what it holds must not be shown as live. The
                # next update goes from the view sent to the then current book.
                DELIVERY.book_stale += 1
                return None
            text, view = book.update(self.depth, self.seq, self.view)
            if text is None:
                return None  # the top `depth` did not change: nothing to tell
            DELIVERY.book_updates += 1
            DELIVERY.book_conflated += book.seq - self.seq - 1
        self.epoch, self.seq, self.view = book.epoch, book.seq, view
        return text

    def fresh_frame(self, stale: str) -> str:
        """Called when the frame ``stale`` waited too long for the socket: a ``book``
        snapshot of the book as it is now goes instead (the client replaces its book)."""
        book = self.feed.book
        if book is None or not book.loaded or self.outbox.closing:
            return stale  # unsubscribed meanwhile: nothing fresher to say
        text, view = book.snapshot(self.depth)
        self.epoch, self.seq, self.view = book.epoch, book.seq, view
        DELIVERY.book_snapshots += 1
        DELIVERY.book_stale += 1
        return text

    def close(self) -> None:
        self.outbox.drop_slot(self.key)
