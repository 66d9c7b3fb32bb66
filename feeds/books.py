"""The producer's order books: one authoritative book per owned symbol (issue 21).

The feed loop (feeds.services) hands every BookDraft its sources yield to ``FeedBooks``,
which applies it to the symbol's ``OrderBook`` (markets.book) and, once per publish
batch, publishes per changed symbol one message through markets.books:

- a **snapshot** of the top MAX_DEPTH under a new epoch when the symbol's source has just
  started (a new producer, a source change or restart), when the source synced its book
  again (a snapshot draft after a gap), or when the last publish may or may not have
  happened (Redis failed or refused an update of an epoch it no longer holds);
- otherwise an **update**, the window diff of the top MAX_DEPTH since the last message it
  published. Several drafts in one batch make one update (conflation at the source).

It also counts, in the source's SourceStats: book_updates (drafts applied), resyncs
(snapshot drafts after the first) and crossed (episodes of best bid >= best ask, each
logged once).
"""

import asyncio
import logging
import uuid
from dataclasses import dataclass, field

from markets.book import MAX_DEPTH, BookError, OrderBook, View, is_empty, window_diff
from markets.books import NEEDS_SNAPSHOT, BookMessage, BookPublisher
from markets.publishing import TickPublisher, now_ms
from markets.ticks import Tick, TickDraft

from .sources.base import BookDraft, KindLog, Source

logger = logging.getLogger(__name__)


def new_epoch() -> str:
    """A book epoch: unique, and ordered by time for a human reading logs."""
    return f"{now_ms()}-{uuid.uuid4().hex[:8]}"


@dataclass
class SymbolBook:
    """One owned symbol's book and what was last published of it."""

    source: Source
    book: OrderBook = field(default_factory=OrderBook)
    epoch: str = ""
    sent: View = field(default_factory=lambda: ([], []))  # the view last published
    needs_snapshot: bool = True  # the next message starts a new epoch
    dirty: bool = False  # changed since the last message
    snapshots_seen: int = 0
    crossed: bool = False


class FeedBooks:
    """The books of one feed loop's owned symbols, and their publishing."""

    def __init__(self, publisher: BookPublisher, *, log: KindLog) -> None:
        self.publisher = publisher
        self.log = log
        self.books: dict[str, SymbolBook] = {}

    def start(self, symbol: str, source: Source) -> None:
        """Called when the feed starts ``symbol``'s source: its book starts again."""
        self.books[symbol] = SymbolBook(source)
        if not source.has_book:
            self.books[symbol].dirty = True  # publish "no book" once, under a new epoch

    def stop(self, symbol: str) -> None:
        """Called when the feed stops ``symbol``'s source."""
        self.books.pop(symbol, None)

    def apply(self, draft: BookDraft) -> None:
        """Apply one draft to its symbol's book (ignored if the symbol is not running)."""
        entry = self.books.get(draft.symbol)
        if entry is None or not entry.source.has_book:
            return
        stats = entry.source.stats
        try:
            if draft.snapshot:
                fresh = OrderBook.from_levels(bids=draft.bids, asks=draft.asks)
                entry.book = fresh
                entry.snapshots_seen += 1
                if entry.snapshots_seen > 1:
                    stats.resyncs += 1
                    # Once, then at the 10th, 100th...: a source that keeps resyncing
                    # must not flood the log.
                    self.log.report(
                        f"{draft.symbol}: the {entry.source.name} book was synced again"
                    )
                entry.needs_snapshot = True
            else:
                entry.book.apply(bids=draft.bids, asks=draft.asks)
        except BookError as exc:
            # A source must send plain decimal strings; one that does not is a bug there.
            stats.bad += 1
            self.log.report(f"{draft.symbol}: a book draft with a bad level was skipped", str(exc))
            return
        stats.book_updates += 1
        entry.dirty = True
        crossed = entry.book.crossed()
        if crossed and not entry.crossed:
            stats.crossed += 1
            self.log.report(
                f"{draft.symbol}: the {entry.source.name} book is crossed",
                f"best bid {entry.book.best_bid()} >= best ask {entry.book.best_ask()}",
            )
        elif entry.crossed and not crossed:
            logger.info("%s: the %s book is no longer crossed", draft.symbol, entry.source.name)
        entry.crossed = crossed

    def _message(self, symbol: str, entry: SymbolBook) -> BookMessage | None:
        if not entry.source.has_book:
            return BookMessage(
                symbol=symbol,
                epoch=new_epoch(),
                snapshot=True,
                view=([], []),
                update=([], []),
                available=False,
                reason=entry.source.no_book_reason(),
            )
        view = entry.book.top(MAX_DEPTH)
        if entry.needs_snapshot:
            return BookMessage(symbol, new_epoch(), True, view, view)
        update = window_diff(entry.sent, view)
        if is_empty(update):  # only levels below the top MAX_DEPTH changed
            return None
        return BookMessage(symbol, entry.epoch, False, view, update)

    async def publish(self) -> set[str]:
        """Publish every changed book; returns the symbols whose lease is no longer ours."""
        messages = []
        for symbol, entry in self.books.items():
            if not entry.dirty:
                continue
            entry.dirty = False
            message = self._message(symbol, entry)
            if message is not None:
                messages.append(message)
        refused: set[str] = set()
        if not messages:
            return refused
        try:
            results = await self.publisher.publish(messages)
        except BaseException:
            # Published or not: what subscribers hold is unknown, so start a new epoch.
            for m in messages:
                self._resend(m.symbol)
            raise
        for m, result in zip(messages, results, strict=True):
            entry = self.books.get(m.symbol)
            if entry is None:
                continue
            if result > 0:
                entry.epoch, entry.sent, entry.needs_snapshot = m.epoch, m.view, False
            elif result == NEEDS_SNAPSHOT:
                self.log.report(
                    f"{m.symbol}: Redis no longer holds the book's epoch; sending a snapshot"
                )
                self._resend(m.symbol)
            else:
                refused.add(m.symbol)
        return refused

    def _resend(self, symbol: str) -> None:
        entry = self.books.get(symbol)
        if entry is not None:
            entry.needs_snapshot = entry.dirty = True


async def publish_batch(
    ticks: TickPublisher, books: FeedBooks, batch: list[TickDraft | BookDraft]
) -> tuple[list[Tick], set[str]]:
    """Publish one batch of drafts: its ticks, and its symbols' books once each.

    Returns the ticks published and the symbols whose publish was refused (the lease is
    not ours any more).
    """
    drafts: list[TickDraft] = []
    for d in batch:
        if isinstance(d, BookDraft):
            books.apply(d)
        else:
            drafts.append(d)
    published, refused = await asyncio.gather(ticks.publish(drafts), books.publish())
    done = {t.symbol for t in published}
    return published, refused | ({d.symbol for d in drafts} - done)
