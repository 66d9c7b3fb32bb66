"""Connection: one WebSocket's subscriptions, its outbox and its writer task.

PriceStreamConsumer parses commands and calls this; everything that is sent goes
through the outbox, so replies, snapshots and ticks keep their order and nothing the
consumer or the fan-out does ever waits on this client's socket.
"""

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from django.conf import settings

from markets import history
from telemetry import metrics

from .auth import ANONYMOUS, Identity
from .cohort import can_share, caught_up, local_cohorts
from .extensions import Write
from .faults import FaultLog
from .guard import Guard, local_guard
from .hub import Hub, local_hub
from .outbox import Outbox
from .protocol import DEFAULT_STREAMS, CloseCode, Command, ErrorCode, ProtocolError, Stream
from .subscription import BookSubscription, Subscription

logger = logging.getLogger(__name__)
faults = FaultLog(logger)

# A connection that could share frames but whose feeds are behind its snapshot tries
# again this often, this many times (streaming.cohort).
REGROUP_RETRY_SECONDS = 0.05
REGROUP_TRIES = 40


class Connection:
    """What one client holds: subscriptions by symbol, and the frames waiting for it."""

    # One per connection, idle ones included: no instance dict (round 11).
    __slots__ = (
        "_close", "_closer", "_regroup_handle", "books", "close_code", "guard", "hub",
        "identity", "outbox", "subs",
    )  # fmt: skip

    def __init__(
        self,
        *,
        send_text: Callable[[str], Coroutine[Any, Any, None]],
        write: Write | None = None,
        close: Callable[[int], Awaitable[None]],
        hub: Hub | None = None,
        guard: Guard | None = None,
        identity: Identity = ANONYMOUS,
    ) -> None:
        self.hub = hub or local_hub()
        self.guard = guard or local_guard()
        # Who the client is; set on connect or by an "auth" command, checked by the guard.
        self.identity = identity
        self.outbox = Outbox(
            max_bytes=settings.OUTBOX_MAX_BYTES, max_age_ms=settings.MAX_TICK_AGE_MS
        )
        self.outbox.on_close = self.end
        self.outbox.on_gone = self._gone
        self.outbox.attach(send_text, write)
        self.subs: dict[str, Subscription] = {}  # the "ticks" stream, by symbol
        # The "book" stream by symbol; None until the first (an idle connection holds no dict).
        self.books: dict[str, BookSubscription] | None = None
        self.close_code: int | None = None
        self._close = close
        self._closer: asyncio.Task | None = None
        self._regroup_handle: asyncio.TimerHandle | None = None
        self.guard.watch(self)

    def send(self, message: dict[str, Any]) -> None:
        self.outbox.put_frame(json.dumps(message))

    # --- commands

    async def subscribe(self, command: Command, symbols: list[str]) -> None:
        """Subscribe to the known ``symbols`` of ``command``; answers and history included."""
        self._leave_cohort()  # its symbols (and maybe batch_ms) change
        if command.batch_ms is not None:
            self.outbox.batch_ms = command.batch_ms
        ticks = Stream.TICKS in command.streams
        new: list[Subscription] = []
        new_books: list[BookSubscription] = []
        try:
            # Join before reading history: a tick published in between is then both in
            # the history read and held by the subscription, and its seq check drops
            # the copy (streaming.subscription).
            for symbol in symbols:
                if ticks and symbol not in self.subs:
                    self.subs[symbol] = sub = await self.hub.subscribe(
                        symbol,
                        lambda feed: Subscription(
                            feed, self.outbox, mode=command.mode, max_rate=command.max_rate,
                            snapshot_size=command.snapshot,
                        ),
                    )  # fmt: skip
                    new.append(sub)
            if Stream.BOOK in command.streams:
                await self._subscribe_books(command, symbols, new_books)
        except Exception as exc:
            self._drop(new)
            self._drop_books(new_books)
            raise _unavailable(exc, command, symbols) from None
        joined_at = time.monotonic()
        answer = {"type": "subscribed", "id": command.id, "symbols": symbols}
        if command.streams != DEFAULT_STREAMS:
            answer["streams"] = list(command.streams)
        self.send(answer)
        for i, sub in enumerate(new):
            try:
                if sub.symbol in command.since:
                    await self._resume(sub, command, joined_at)
                else:
                    await self._snapshot(sub, joined_at, reset=None)
            except Exception as exc:
                # Nothing of these was sent: drop them, so "list" tells the truth.
                failed = [s for s in new[i:] if s.held is not None]
                self._drop(failed)
                self._drop_books(new_books)
                raise _unavailable(exc, command, [s.symbol for s in failed]) from None
        for i, book in enumerate(new_books):
            try:
                # The book as this process holds it (read from Redis by its first subscriber).
                await book.feed.ensure_book()
            except Exception as exc:
                failed_books = new_books[i:]
                self._drop_books(failed_books)
                raise _unavailable(exc, command, [b.symbol for b in failed_books]) from None
            book.start()  # its "book" snapshot, then updates
        self._regroup()

    async def _subscribe_books(
        self, command: Command, symbols: list[str], new: list[BookSubscription]
    ) -> None:
        books = self.books
        if books is None:
            books = self.books = {}
        for symbol in symbols:
            held = books.get(symbol)
            if held is not None:
                if held.depth == command.depth:
                    continue  # held already: no second snapshot
                self._drop_books([held])  # another depth: a fresh snapshot at the new one
            books[symbol] = book = await self.hub.subscribe(
                symbol,
                lambda feed: BookSubscription(
                    feed, self.outbox, depth=command.depth, max_rate=command.max_rate
                ),
            )
            new.append(book)

    async def _snapshot(self, sub: Subscription, joined_at: float, *, reset: str | None) -> None:
        # A read shared with every subscriber that joined before it began.
        snap = await sub.feed.read(joined_at=joined_at)
        if reset is not None:
            self.send({"type": "reset", "symbol": sub.symbol, "reason": reset})
        self.outbox.put_frame(snap.frame(sub.snapshot_size))
        sub.go_live(snap.last_seq)

    async def _resume(self, sub: Subscription, command: Command, joined_at: float) -> None:
        since = command.since[sub.symbol]
        found = await history.resume(
            symbol=sub.symbol, since=since, epoch=command.epochs.get(sub.symbol)
        )
        if found.reset_reason is not None:
            ring = sub.feed.latest
            if ring is not None and ring.epoch != found.epoch:
                # This process still holds the old numbering: every subscriber must reset.
                await self.hub.reset(sub.feed, found.reset_reason)
            await self._snapshot(sub, joined_at, reset=found.reset_reason)
            return
        ticks = found.ticks
        sub.replay([t.to_json() for t in ticks], [t.ts for t in ticks])
        sub.go_live(ticks[-1].seq if ticks else since)

    def unsubscribe(self, symbols: list[str], streams: tuple[Stream, ...] = tuple(Stream)) -> None:
        """Drop ``streams`` (every one unless named) of ``symbols``."""
        if Stream.TICKS in streams:
            self._drop([sub for s in symbols if (sub := self.subs.get(s)) is not None])
        if Stream.BOOK in streams and self.books:
            self._drop_books([book for s in symbols if (book := self.books.get(s)) is not None])
        self._regroup()

    def symbols(self) -> list[str]:
        """Every symbol the connection holds a stream of, sorted."""
        if not self.books:
            return sorted(self.subs)
        return sorted(self.subs.keys() | self.books.keys())

    def streams(self) -> dict[str, list[str]]:
        """The streams held per symbol (``list``)."""
        books = self.books or {}
        return {
            s: [str(stream) for stream, held in ((Stream.TICKS, self.subs), (Stream.BOOK, books))
                if s in held]
            for s in self.symbols()
        }  # fmt: skip

    def depths(self) -> dict[str, int]:
        """The depth of each book held (``list``)."""
        return {s: book.depth for s, book in sorted((self.books or {}).items())}

    def _drop(self, subs: list[Subscription]) -> None:
        for sub in subs:
            if self.subs.get(sub.symbol) is sub:
                del self.subs[sub.symbol]
            self.hub.unsubscribe(sub)

    def _drop_books(self, books: list[BookSubscription]) -> None:
        for book in books:
            if self.books is not None and self.books.get(book.symbol) is book:
                del self.books[book.symbol]
            self.hub.unsubscribe(book)

    # --- shared frames (streaming.cohort)

    def _regroup(self, tries: int = REGROUP_TRIES) -> None:
        """Join the cohort of this connection's symbols, once it can take shared frames."""
        self._regroup_handle = None
        subs = list(self.subs.values())
        if self.close_code is not None or not subs:
            return
        if not can_share(self.outbox, subs):
            return
        if caught_up(subs):
            local_cohorts().join(self.outbox, subs)
        elif tries:
            # A snapshot newer than the ticks this process has delivered: the feed
            # catches up within a round or two.
            self._regroup_handle = asyncio.get_running_loop().call_later(
                REGROUP_RETRY_SECONDS, self._regroup, tries - 1
            )

    def _leave_cohort(self) -> None:
        if self._regroup_handle is not None:
            self._regroup_handle.cancel()
            self._regroup_handle = None
        for sub in self.subs.values():
            if sub.cohort is not None:
                sub.cohort.leave(self.outbox)
                return

    # --- the end

    def detach(self) -> None:
        """Called when the socket is gone: no tick is queued for it any more."""
        self._leave_cohort()
        self._drop(list(self.subs.values()))
        self._drop_books(list((self.books or {}).values()))
        self.outbox.stop()
        self.guard.forget(self)

    def end(self, code: int) -> None:
        """Close with ``code``: 4008 from the outbox (it fell behind), 4401/4403 on access."""
        if self.close_code is not None:
            return
        self.close_code = code
        held = len(self.symbols())
        self.detach()
        if code == CloseCode.SLOW_CONSUMER:
            metrics.SLOW_CONSUMER_CLOSES.inc()
            logger.info("closing a slow consumer (%d) holding %d symbols", code, held)
        # Not awaited: nothing here waits on this client. Our uvicorn protocol writes the
        # close frame at once, behind only what the socket already holds, and resets the
        # connection of a client that has not read up to it within WS_CLOSE_TIMEOUT
        # (tickerproject.uvicorn_ws); daphne's keepalive drops a peer that never reads.
        self._closer = asyncio.ensure_future(self._close(code))
        self._closer.add_done_callback(_ignore_result)

    def _gone(self, exc: BaseException) -> None:
        """Called when writing to the socket failed: the server tells the consumer too."""
        if isinstance(exc, OSError):  # the client left mid-write (uvicorn's ClientDisconnected)
            metrics.CLIENT_GONE_WRITES.inc()
            logger.debug("a client disconnected mid-write: %r", exc)
        else:
            faults.report(f"writer:{type(exc).__name__}", "writing to a client failed: %r", exc)
        self._drop(list(self.subs.values()))
        self._drop_books(list((self.books or {}).values()))


def _unavailable(exc: Exception, command: Command, symbols: list[str]) -> ProtocolError:
    metrics.REDIS_ERRORS.labels("subscribe").inc()
    faults.report(f"unavailable:{type(exc).__name__}", "subscribe failed: %r", exc)
    return ProtocolError(
        ErrorCode.UNAVAILABLE,
        "market data is unavailable right now; subscribe again shortly",
        id=command.id,
        symbols=symbols,
    )


def _ignore_result(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()
