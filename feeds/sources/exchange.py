"""What the exchange adapters share: connect, subscribe, read, reconnect.

One WebSocket connection per symbol (the ``websockets`` library, which also answers the
server's ping frames by itself). Every failure to connect, a dropped connection, a
refused or unconfirmed subscription and a frame above ``MAX_MESSAGE_BYTES`` (the library
closes the connection with 1009) ends in the same place: wait with exponential backoff
and full jitter, connect again and subscribe again. A connection that stayed up for
``HEALTHY_SECONDS`` resets the backoff, so the exchange's planned disconnects (Binance's
24 h limit) reconnect at once. Malformed and unexpected messages are counted and skipped.

A message may give several drafts (ticks and order-book drafts), and an adapter may run
one background step at a time (Binance's REST book snapshot) while the connection keeps
being read: the reader wakes up for whichever comes first, the next frame or the step's
end, so frames that arrive meanwhile are buffered by the adapter, not left unread.
"""

import abc
import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Coroutine

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from markets.ticks import TickDraft

from .base import DOWN, STARTING, UP, Backoff, BookDraft, KindLog, Source

Draft = TickDraft | BookDraft

logger = logging.getLogger(__name__)

# The largest frame an adapter accepts; exchange market-data messages are well below.
MAX_MESSAGE_BYTES = 256 * 1024
# A subscription not confirmed within this long counts as failed.
SUBSCRIBE_TIMEOUT_SECONDS = 10.0
# A connection up this long resets the backoff.
HEALTHY_SECONDS = 10.0
OPEN_TIMEOUT_SECONDS = 10.0


class Reconnect(Exception):
    """Raised by a message handler to end the connection and connect again."""


class ExchangeSource(Source):
    """Subclasses build the URL and subscribe messages and turn messages into drafts."""

    # No message at all for this long means the connection is stalled (None: rely on
    # the library's ping/pong keepalive only).
    stall_seconds: float | None = None
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    # The largest frame accepted (an order-book snapshot may need more than a tick).
    max_message_bytes: int = MAX_MESSAGE_BYTES

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.subscribed = False
        self.problems = KindLog(logger, f"{self.name} {self.symbol}")
        self.background: asyncio.Task | None = None
        self._recv: asyncio.Task | None = None
        # Set by a handler that returns drafts and wants a new connection after them
        # (Coinbase's book resync: the drafts that broke the book are published first).
        self.reconnect_after: str | None = None

    @abc.abstractmethod
    def url(self) -> str: ...

    @abc.abstractmethod
    def subscribe_messages(self) -> list[dict]:
        """What to send right after connecting."""

    @abc.abstractmethod
    def handle(self, message: dict) -> Draft | list[Draft] | None:
        """One decoded message: a draft (or several) to publish, or None. Sets
        ``self.subscribed`` when the exchange confirms; raises ``Reconnect`` to start over."""

    def on_connect(self) -> None:
        """Called before subscribing on each new connection."""
        self.subscribed = False
        self.reconnect_after = None

    def start_background(self, step: Coroutine) -> None:
        """Run ``step`` beside the reader; ``background_done`` is called when it ends.

        One at a time; it is cancelled when the connection ends.
        """
        assert self.background is None, "one background step at a time"
        self.background = asyncio.ensure_future(step)

    def background_done(self, task: asyncio.Task) -> Draft | list[Draft] | None:
        """Called when the background step ended (its result or exception is in ``task``)."""
        return None

    async def close(self) -> None:
        """Called once when the source stops: release what it holds (an HTTP client)."""

    def _cancel_pending(self) -> None:
        for task in (self.background, self._recv):
            if task is None:
                continue
            if task.done():
                if not task.cancelled():
                    task.exception()  # retrieved: a step that failed unseen is not a warning
            else:
                task.cancel()
        self.background = self._recv = None

    def bad(self, kind: str, detail: str = "") -> None:
        self.stats.bad += 1
        self.problems.report(f"malformed message: {kind}", detail)

    def ignored(self, kind: str) -> None:
        self.stats.ignored += 1
        self.problems.report(f"unexpected message ignored: {kind}")

    def error(self, text: str) -> None:
        self.stats.errors += 1
        self.stats.last_error = text[:300]
        self.problems.report("error from the exchange", text[:300])

    async def ticks(self) -> AsyncIterator[Draft]:
        try:
            # Closed explicitly, so the connection is closed when the source stops, not
            # whenever the event loop finalizes an abandoned generator.
            async with contextlib.aclosing(self._connections()) as items:
                async for item in items:
                    yield item
        finally:
            self._cancel_pending()
            await self.close()

    async def _connections(self) -> AsyncIterator[Draft]:
        backoff = Backoff(base=self.backoff_base, cap=self.backoff_cap)
        loop = asyncio.get_running_loop()
        first = True
        while True:
            if not first:
                self.stats.reconnects += 1
                delay = backoff.next_delay()
                logger.info("%s %s: reconnecting in %.2fs", self.name, self.symbol, delay)
                await asyncio.sleep(delay)
            first = False
            self.stats.state = STARTING if self.stats.reconnects == 0 else DOWN
            opened_at = None
            try:
                async with connect(
                    self.url(),
                    max_size=self.max_message_bytes,
                    open_timeout=OPEN_TIMEOUT_SECONDS,
                    close_timeout=2,
                    # Binance pings every 20 s and the library answers; our own pings
                    # find a dead TCP connection that neither side closed.
                    ping_interval=20,
                    ping_timeout=20,
                    compression=None,
                ) as ws:
                    opened_at = loop.time()
                    self.on_connect()
                    for message in self.subscribe_messages():
                        await ws.send(json.dumps(message))
                    async for item in self._read(ws, opened_at):
                        yield item
            except Reconnect as exc:
                self.problems.report("reconnecting", str(exc))
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else (exc.sent.code if exc.sent else None)
                if code == 1009:
                    self.bad("frame above the size limit", f"{self.max_message_bytes} bytes")
                self.problems.report("connection closed", f"code {code}")
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                self.stats.last_error = f"connect: {type(exc).__name__}: {exc}"[:300]
                self.problems.report("cannot connect", f"{type(exc).__name__}: {exc}")
            finally:
                self._cancel_pending()
            self.stats.state = DOWN
            if opened_at is not None and loop.time() - opened_at >= HEALTHY_SECONDS:
                backoff.reset()

    async def _next_frame(self, ws: ClientConnection, timeout: float | None):
        """The next frame, or None if the background step ended first.

        Raises TimeoutError when neither came within ``timeout``. Without a background
        step this is a plain ``recv``; with one, the pending ``recv`` is kept (never
        cancelled) for the next call, so no frame is lost.
        """
        if self.background is None and self._recv is None:
            async with asyncio.timeout(timeout):
                return await ws.recv()
        if self._recv is None:
            self._recv = asyncio.ensure_future(ws.recv())
        waiting = {self._recv} if self.background is None else {self._recv, self.background}
        done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if self._recv in done:
            recv, self._recv = self._recv, None
            return recv.result()
        if self.background is not None and self.background in done:
            return None
        raise TimeoutError

    def _emit(self, result: Draft | list[Draft] | None) -> list[Draft]:
        if result is None:
            return []
        drafts = result if isinstance(result, list) else [result]
        # Book drafts are counted by the feed loop as it applies them (book_updates).
        self.stats.ticks += sum(1 for item in drafts if not isinstance(item, BookDraft))
        return drafts

    async def _read(self, ws: ClientConnection, opened_at: float) -> AsyncIterator[Draft]:
        loop = asyncio.get_running_loop()
        while True:
            timeout = self.stall_seconds
            if not self.subscribed:
                remaining = opened_at + SUBSCRIBE_TIMEOUT_SECONDS - loop.time()
                if remaining <= 0:
                    raise Reconnect("subscription not confirmed in time")
                timeout = remaining if timeout is None else min(timeout, remaining)
            try:
                raw = await self._next_frame(ws, timeout)
            except TimeoutError:
                if self.subscribed:
                    raise Reconnect(f"no message for {self.stall_seconds:.0f}s") from None
                continue  # the subscription deadline is checked at the top
            if raw is None:  # the background step ended
                task, self.background = self.background, None
                for item in self._emit(self.background_done(task)):
                    yield item
                continue
            self.stats.messages += 1
            try:
                message = json.loads(raw)
            except ValueError:
                self.bad("not JSON")
                continue
            if not isinstance(message, dict):
                self.bad("not a JSON object")
                continue
            result = self.handle(message)
            if self.subscribed and self.stats.state != UP:
                self.stats.state = UP
                logger.info("%s %s: subscribed", self.name, self.symbol)
            for item in self._emit(result):
                yield item
            if self.reconnect_after is not None:
                raise Reconnect(self.reconnect_after)
