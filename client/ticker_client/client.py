"""The client: one WebSocket to ``/ws/prices/``, kept open, resumed, and read as events.

The reference behaviour is the dashboard's own stream client
(frontend/static/frontend/protocol-client.js); the protocol is docs/protocol.md and its
AsyncAPI document at ``/api/asyncapi.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random as _random
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from .book import LocalBook
from .errors import AuthError, ClientClosed, ConnectFailed, TickerClientError
from .events import (
    BookChanged,
    BookResync,
    ClientStats,
    Connected,
    Disconnected,
    Event,
    Gap,
    Message,
    Mode,
    Rejected,
    Reset,
    ServerError,
    Snapshot,
    SubscribeResult,
    Tick,
    Unsubscribed,
)

__all__ = ["CloseCode", "TickerClient", "backoff_delay"]

USER_AGENT = "ticker-client/0.1"
DEFAULT_DEPTH = 10
MAX_DEPTH = 50

logger = logging.getLogger("ticker_client")


class CloseCode:
    """Close codes with a meaning for the client (docs/protocol.md, "Close codes")."""

    NORMAL = 1000
    POLICY_VIOLATION = 1008  # kept flooding past the command rate limit: pause, then retry
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013  # a connection cap: back off
    SLOW_CONSUMER = 4008  # fell behind in "all" mode: reconnect at once and resume
    UNAUTHORIZED = 4401  # no retry: the same credentials would be refused again
    FORBIDDEN = 4403  # token revoked or expired, user deactivated: no retry


DENIED = (CloseCode.UNAUTHORIZED, CloseCode.FORBIDDEN)
# Refused handshakes that a retry cannot fix (a foreign Origin answers 403).
DENIED_HTTP = (401, 403)


def backoff_delay(
    attempt: int,
    *,
    base: float = 0.5,
    cap: float = 15.0,
    random: Callable[[], float] = _random.random,
) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0-based).

    Exponential, capped, with "equal jitter" (half fixed, half random), as the dashboard
    does: a herd of clients dropped by one server restart spreads out, and no client
    retries in a tight loop.
    """
    ceiling = min(cap, base * 2 ** max(0, attempt))
    return ceiling / 2 + random() * ceiling / 2


@dataclass(frozen=True, slots=True)
class _Options:
    mode: Mode = "all"
    max_rate: float | None = None
    snapshot: int | None = None


@dataclass(frozen=True, slots=True)
class _BookOptions:
    depth: int = DEFAULT_DEPTH
    max_rate: float | None = None


@dataclass(slots=True)
class _Pending:
    """A command sent on the current connection, waiting for its answer."""

    action: str
    symbols: tuple[str, ...] = ()
    unsettled: set[str] = field(default_factory=set)
    answered: bool = False
    future: asyncio.Future[Any] | None = None
    sent_at: float = 0.0


@dataclass(slots=True)
class _Waiter:
    """A subscribe() call waiting until each of its symbols is subscribed or refused."""

    unsettled: set[str]
    future: asyncio.Future[SubscribeResult]
    subscribed: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)

    def settle(self, symbol: str, code: str | None) -> None:
        if symbol not in self.unsettled:
            return
        self.unsettled.discard(symbol)
        if code is None:
            self.subscribed.append(symbol)
        else:
            self.refused[symbol] = code
        if not self.unsettled and not self.future.done():
            self.future.set_result(SubscribeResult(tuple(self.subscribed), dict(self.refused)))


class _AuthRefused(Exception):
    pass


# Queued after the last event when the client stops: wakes the reader.
_END = object()


class TickerClient:
    """An auto-reconnecting, resuming client of the ticker price stream.

    Use it as an async context manager and read it with ``async for``::

        async with TickerClient("ws://127.0.0.1:8000/ws/prices/", token="tk_...") as client:
            await client.subscribe(["BTC-USD", "ETH-USD"])
            async for tick in client:  # Tick objects, each exactly once, in seq order
                print(tick.symbol, tick.seq, tick.price)

    ``async for event in client.events()`` yields the :class:`Snapshot`, :class:`Reset`,
    :class:`Gap`, :class:`Connected`, :class:`Disconnected` and other events as well.
    Read with one iterator at a time.

    What it does by itself:

    - authenticates with ``token`` as ``Authorization: Bearer`` on the handshake, or
      (``auth="command"``) with the ``auth`` command first;
    - reconnects after any drop with exponential backoff and jitter (at once after a
      4008 slow-consumer close; no sooner than ``policy_pause`` after a 1008), and
      resubscribes with ``since``/``epochs`` so the server replays what was missed;
    - on ``reset`` forgets the symbol's position and rebuilds from the snapshot that
      follows;
    - drops any tick it has already yielded (counted in ``stats.duplicates``) and reports
      a hole in a symbol's ``seq`` as a :class:`Gap`;
    - raises :class:`AuthError` from the iterator on 4401/4403 (no retry loop), and
      :class:`ConnectFailed` after ``max_attempts`` failed attempts in a row (default:
      retry for ever).

    Ticks wait in a queue of ``queue_size`` events; while it is full the client stops
    reading its socket, so a program that falls behind in ``all`` mode is closed by the
    server with 4008 and resumes without a loss once it catches up.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        auth: Literal["header", "command"] = "header",
        origin: str | None = None,
        batch_ms: int | None = None,
        base_delay: float = 0.5,
        max_delay: float = 15.0,
        policy_pause: float = 10.0,
        max_attempts: int | None = None,
        queue_size: int = 10_000,
        open_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        max_symbols_per_command: int = 50,
        random: Callable[[], float] = _random.random,
        connect_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if auth not in ("header", "command"):
            raise ValueError("auth must be 'header' or 'command'")
        self.url = url
        self._token = token
        self._auth = auth
        self._origin = origin or _origin_of(url)
        self._batch_ms = batch_ms
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._policy_pause = policy_pause
        self._max_attempts = max_attempts
        self._open_timeout = open_timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._chunk = max(1, max_symbols_per_command)
        self._random = random
        self._connect_kwargs = dict(connect_kwargs or {})

        self.stats = ClientStats()
        self._wanted: dict[str, _Options] = {}
        self._last_seq: dict[str, int] = {}
        self._epochs: dict[str, str] = {}
        # Unbounded, so the end marker always fits; _put() keeps it to queue_size events.
        self._queue: asyncio.Queue[Event | object] = asyncio.Queue()
        self._queue_size = max(1, queue_size)
        self._space = asyncio.Event()
        self._closed = False
        self._ws: ClientConnection | None = None
        self._live = asyncio.Event()  # open, authenticated, resubscribed
        self._done = asyncio.Event()  # closed, or stopped by a fatal error
        self._error: BaseException | None = None
        self._runner: asyncio.Task[None] | None = None
        self._next_id = 1
        self._pending: dict[int, _Pending] = {}
        self._confirmed: set[str] = set()
        self._waiters: list[_Waiter] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ever_connected = False
        # Books: wanted (asked for again on reconnect), held (checked on every message),
        # and those waiting for a fresh snapshot after a mismatch (updates ignored).
        self._wanted_books: dict[str, _BookOptions] = {}
        self._books: dict[str, LocalBook] = {}
        self._resyncing: set[str] = set()
        self._book_waiters: dict[str, list[asyncio.Future[LocalBook | None]]] = {}

    # --- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> TickerClient:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def start(self) -> None:
        """Start connecting in the background (``async with`` does it)."""
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="ticker-client")

    async def close(self) -> None:
        """Close the connection for good; iterators end, waiting calls raise ClientClosed."""
        self._closed = True
        self._done.set()
        self._queue.put_nowait(_END)
        runner, self._runner = self._runner, None
        if runner is not None and not runner.done():
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        self._fail_waiting(ClientClosed("the client was closed"))

    @property
    def connected(self) -> bool:
        """Whether a connection is open and resubscribed."""
        return self._live.is_set()

    @property
    def symbols(self) -> list[str]:
        """The symbols the client wants (and asks for again after each reconnect)."""
        return list(self._wanted)

    def last_seq(self, symbol: str) -> int | None:
        """The ``seq`` of the last tick yielded (or snapshot tick seen) for ``symbol``."""
        return self._last_seq.get(symbol)

    def epoch(self, symbol: str) -> str | None:
        return self._epochs.get(symbol)

    @property
    def book_symbols(self) -> list[str]:
        """The symbols whose books the client wants (and asks for again on reconnect)."""
        return list(self._wanted_books)

    def book(self, symbol: str) -> LocalBook | None:
        """The client's current book of ``symbol`` (checked), None until its snapshot."""
        return self._books.get(symbol)

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until a connection is open, authenticated and resubscribed."""
        self.start()
        async with asyncio.timeout(timeout):
            while not self._live.is_set():
                self._raise_if_done()
                await _first(self._live.wait(), self._done.wait())
        self._raise_if_done()

    # --- commands --------------------------------------------------------------------

    async def subscribe(
        self,
        symbols: Iterable[str],
        *,
        mode: Mode = "all",
        max_rate: float | None = None,
        snapshot: int | None = None,
        batch_ms: int | None = None,
        wait: bool = True,
        timeout: float | None = 30.0,
    ) -> SubscribeResult | None:
        """Subscribe to ``symbols`` (kept across reconnects).

        ``mode``: ``"all"`` (every tick, gap-free) or ``"latest"`` (the newest per symbol,
        at most ``max_rate`` a second). ``snapshot``: 0..300 ticks of history in the
        :class:`Snapshot` (server default 300). ``batch_ms`` (0..1000) applies to the
        whole connection: the server may then group ticks in ``ticks`` frames (the client
        yields them one by one all the same). Symbols already wanted keep their options;
        unsubscribe first to change them.

        With ``wait`` (the default) it returns once the server has answered for every
        symbol: which were subscribed and which refused (``unknown_symbol``,
        ``forbidden``, ...; refused symbols are forgotten). Before the first connection
        it waits for it. ``timeout`` raises TimeoutError (the symbols stay wanted).
        """
        if mode not in ("all", "latest"):
            raise ValueError("mode must be 'all' or 'latest'")
        if max_rate is not None and mode != "latest":
            raise ValueError("max_rate needs mode='latest'")
        if batch_ms is not None:
            self._batch_ms = batch_ms
        wanted = list(dict.fromkeys(symbols))
        fresh = [s for s in wanted if s not in self._wanted]
        options = _Options(mode=mode, max_rate=max_rate, snapshot=snapshot)
        for symbol in fresh:
            self._wanted[symbol] = options
        waiter: _Waiter | None = None
        if wait:
            loop = asyncio.get_running_loop()
            waiter = _Waiter(unsettled=set(wanted), future=loop.create_future())
            self._waiters.append(waiter)
            for symbol in wanted:
                if symbol in self._confirmed:
                    waiter.settle(symbol, None)
        ws = self._ws
        if fresh and ws is not None and self._live.is_set():
            await self._send_subscribe(ws, fresh, options)
        self.start()
        if waiter is None:
            return None
        try:
            async with asyncio.timeout(timeout):
                return await _first(waiter.future, self._done.wait(), result_of=0)
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            self._raise_if_done()

    async def unsubscribe(self, symbols: Iterable[str], *, timeout: float | None = 10.0) -> None:
        """Stop wanting ``symbols``; no tick of theirs is yielded after this returns."""
        gone = [s for s in dict.fromkeys(symbols) if s in self._wanted]
        for symbol in gone:
            self._forget(symbol)
        ws = self._ws
        if not gone or ws is None or not self._live.is_set():
            return
        futures = []
        for chunk in _chunks(gone, self._chunk):
            futures.append(await self._command(ws, {"action": "unsubscribe", "symbols": chunk}))
        with contextlib.suppress(ConnectionError, ConnectionClosed, ClientClosed):
            async with asyncio.timeout(timeout):
                await asyncio.gather(*futures)

    async def subscribe_book(
        self,
        symbols: Iterable[str],
        *,
        depth: int = DEFAULT_DEPTH,
        max_rate: float | None = None,
        wait: bool = True,
        timeout: float | None = 30.0,
    ) -> dict[str, LocalBook | None]:
        """Keep a local book of each of ``symbols`` (kept across reconnects).

        ``depth`` (1..50): the book holds exactly the best ``depth`` levels per side.
        ``max_rate``: at most this many updates a second per symbol (the server merges
        the rest: a book is state, nothing is lost). Every message is checked: its
        ``prev_seq`` must be the book's seq and its checksum the book's after applying
        it; on a mismatch the client subscribes to the book again (counted in
        :attr:`stats` and logged) and yields :class:`BookResync`. Each change is
        yielded by :meth:`events` as :class:`BookChanged`; read the book any time with
        :meth:`book`.

        With ``wait``, returns once each symbol's first snapshot is in (its book) or it
        was refused (None; the symbol is forgotten).
        """
        if not 1 <= depth <= MAX_DEPTH:
            raise ValueError(f"depth must be from 1 to {MAX_DEPTH}")
        wanted = list(dict.fromkeys(symbols))
        options = _BookOptions(depth=depth, max_rate=max_rate)
        fresh = [s for s in wanted if self._wanted_books.get(s) != options]
        for symbol in fresh:
            self._wanted_books[symbol] = options
            self._books.pop(symbol, None)
        loop = asyncio.get_running_loop()
        futures = {}
        if wait:
            for symbol in wanted:
                future: asyncio.Future[LocalBook | None] = loop.create_future()
                if symbol in self._books:
                    future.set_result(self._books[symbol])
                else:
                    self._book_waiters.setdefault(symbol, []).append(future)
                futures[symbol] = future
        ws = self._ws
        if fresh and ws is not None and self._live.is_set():
            await self._send_book_subscribe(ws, fresh, options)
        self.start()
        if not wait:
            return {}
        try:
            async with asyncio.timeout(timeout):
                await _first(asyncio.gather(*futures.values()), self._done.wait())
        finally:
            for symbol, future in futures.items():
                waiting = self._book_waiters.get(symbol, [])
                if future in waiting:
                    waiting.remove(future)
            self._raise_if_done()
        return {s: f.result() for s, f in futures.items()}

    async def unsubscribe_book(
        self, symbols: Iterable[str], *, timeout: float | None = 10.0
    ) -> None:
        """Stop keeping the books of ``symbols`` (their ticks, if wanted, go on)."""
        gone = [s for s in dict.fromkeys(symbols) if s in self._wanted_books]
        for symbol in gone:
            self._forget_book(symbol)
        ws = self._ws
        if not gone or ws is None or not self._live.is_set():
            return
        futures = []
        for chunk in _chunks(gone, self._chunk):
            command = {"action": "unsubscribe", "symbols": chunk, "streams": ["book"]}
            futures.append(await self._command(ws, command))
        with contextlib.suppress(ConnectionError, ConnectionClosed, ClientClosed):
            async with asyncio.timeout(timeout):
                await asyncio.gather(*futures)

    async def ping(self, *, timeout: float | None = 10.0) -> float:
        """Round-trip time of a ``ping`` command, in seconds."""
        await self.wait_connected(timeout)
        ws = self._require_ws()
        loop = asyncio.get_running_loop()
        started = loop.time()
        future = await self._command(ws, {"action": "ping"})
        async with asyncio.timeout(timeout):
            await future
        return loop.time() - started

    async def list_subscriptions(self, *, timeout: float | None = 10.0) -> list[str]:
        """The symbols the server holds for this connection (the ``list`` command)."""
        await self.wait_connected(timeout)
        future = await self._command(self._require_ws(), {"action": "list"})
        async with asyncio.timeout(timeout):
            return list(await future)

    # --- reading ---------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Tick]:
        return self.ticks()

    async def ticks(self) -> AsyncIterator[Tick]:
        """Every tick of the wanted symbols, each exactly once, in ``seq`` order per symbol.

        Snapshot ticks are not yielded (they are history; see :meth:`events`).
        """
        async for event in self.events():
            if isinstance(event, Tick):
                yield event

    async def events(self) -> AsyncIterator[Event]:
        """Ticks and the events around them (see ticker_client.events), in arrival order.

        Ends when the client is closed; raises :class:`AuthError` or
        :class:`ConnectFailed` (after yielding everything received before) when the
        client stops by itself.
        """
        self.start()
        while True:
            if self._closed:
                return  # closed by the program: what is left is not wanted
            item = await self._queue.get()
            self._space.set()
            if item is _END:
                self._queue.put_nowait(_END)  # for any other reader
                if self._error is not None:
                    raise self._error
                return
            yield item  # type: ignore[misc]

    # --- the connection loop ---------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        try:
            while True:
                code: int | None = None
                reason = ""
                useful = False
                try:
                    ws = await connect(
                        self.url,
                        origin=self._origin,  # type: ignore[arg-type]
                        additional_headers=self._headers(),
                        user_agent_header=USER_AGENT,
                        open_timeout=self._open_timeout,
                        ping_interval=self._ping_interval,
                        ping_timeout=self._ping_timeout,
                        max_size=2**24,
                        **self._connect_kwargs,
                    )
                except InvalidStatus as exc:
                    status = exc.response.status_code
                    if status in DENIED_HTTP:
                        raise AuthError(status, f"handshake refused with HTTP {status}") from exc
                    reason = f"handshake refused with HTTP {status}"
                except (OSError, TimeoutError, InvalidHandshake) as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                else:
                    code, reason, useful = await self._serve(ws)
                self.stats.close_codes[code] = self.stats.close_codes.get(code, 0) + 1
                if code in DENIED:
                    raise AuthError(code, reason or "refused")  # type: ignore[arg-type]
                if useful:
                    attempt = 0
                if code == CloseCode.SLOW_CONSUMER and useful:
                    delay = 0.0  # nothing is lost: resume at once
                else:
                    delay = backoff_delay(
                        attempt, base=self._base_delay, cap=self._max_delay, random=self._random
                    )
                    attempt += 1
                    if code == CloseCode.POLICY_VIOLATION:
                        delay = max(delay, self._policy_pause)
                if self._max_attempts is not None and attempt >= self._max_attempts:
                    raise ConnectFailed(
                        f"{attempt} connection attempts in a row failed; last: {reason}"
                    )
                await self._put(Disconnected(code=code, reason=reason, retry_in=delay))
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            raise
        except _AuthRefused as exc:
            self._stop(AuthError("unauthorized", str(exc)))
        except BaseException as exc:  # AuthError, ConnectFailed, or a bug: tell the reader
            self._stop(exc)

    def _stop(self, exc: BaseException) -> None:
        self._error = exc
        self._done.set()
        self._queue.put_nowait(_END)  # after everything received before: read first
        self._fail_waiting(exc)

    async def _put(self, event: Event) -> None:
        """Queue ``event`` for the reader; waits (and so stops reading the socket) while
        ``queue_size`` events are waiting."""
        while self._queue.qsize() >= self._queue_size:
            self._space.clear()
            await self._space.wait()
        self._queue.put_nowait(event)

    def _headers(self) -> dict[str, str]:
        if self._token and self._auth == "header":
            return {"Authorization": f"Bearer {self._token}"}
        return {}

    async def _serve(self, ws: ClientConnection) -> tuple[int | None, str, bool]:
        """Read one connection until it closes: (close code, reason, whether it served)."""
        self._ws = ws
        self._pending.clear()
        self._confirmed.clear()
        self._served = False
        self._auth_refused: str | None = None
        if self._ever_connected:
            self.stats.reconnects += 1
        self._ever_connected = True
        await self._put(Connected(url=self.url, reconnects=self.stats.reconnects))
        opener = asyncio.create_task(self._open(ws))
        try:
            async for frame in ws:
                self.stats.frames += 1
                if isinstance(frame, str):
                    await self._dispatch(ws, frame)
        except ConnectionClosed:
            pass
        finally:
            self._live.clear()
            self._ws = None
            opener.cancel()
            for task in list(self._tasks):
                task.cancel()
            for pending in self._pending.values():
                if pending.future is not None and not pending.future.done():
                    pending.future.set_exception(ConnectionError("closed before the answer"))
                    pending.future.exception()  # retrieved: no "never retrieved" warning
            self._pending.clear()
            self._confirmed.clear()
            with contextlib.suppress(Exception):
                await ws.close()
        if self._auth_refused is not None:
            raise _AuthRefused(self._auth_refused)
        rcvd = ws.protocol.close_rcvd
        if rcvd is None:
            return None, "connection lost", self._served
        return rcvd.code, rcvd.reason, self._served

    async def _open(self, ws: ClientConnection) -> None:
        """Authenticate (auth="command") and subscribe again to every wanted symbol."""
        try:
            if self._token and self._auth == "command":
                future = await self._command(ws, {"action": "auth", "token": self._token})
                async with asyncio.timeout(self._open_timeout):
                    await future
            self._live.set()
            groups: dict[_Options, list[str]] = {}
            for symbol, options in self._wanted.items():
                groups.setdefault(options, []).append(symbol)
            for options, symbols in groups.items():
                await self._send_subscribe(ws, symbols, options)
            # Books are state: each comes afresh (a snapshot) on every connection.
            self._books.clear()
            self._resyncing.clear()
            book_groups: dict[_BookOptions, list[str]] = {}
            for symbol, book_options in self._wanted_books.items():
                book_groups.setdefault(book_options, []).append(symbol)
            for book_options, symbols in book_groups.items():
                await self._send_book_subscribe(ws, symbols, book_options)
        except (ConnectionClosed, TimeoutError):
            await ws.close()
        except TickerClientError as exc:
            self._auth_refused = str(exc)
            await ws.close()

    async def _send_subscribe(
        self, ws: ClientConnection, symbols: list[str], options: _Options
    ) -> None:
        for chunk in _chunks(symbols, self._chunk):
            command: dict[str, Any] = {"action": "subscribe", "symbols": chunk}
            since = {s: self._last_seq[s] for s in chunk if s in self._last_seq}
            if since:
                command["since"] = since
                # An empty epoch (a snapshot of a symbol that had not ticked yet) names
                # no numbering: sent back, the server would take it for a changed one.
                epochs = {s: self._epochs[s] for s in since if self._epochs.get(s)}
                if epochs:
                    command["epochs"] = epochs
            if options.mode != "all":
                command["mode"] = options.mode
            if options.max_rate is not None:
                command["max_rate"] = options.max_rate
            if options.snapshot is not None:
                command["snapshot"] = options.snapshot
            if self._batch_ms is not None:
                command["batch_ms"] = self._batch_ms
            with contextlib.suppress(ConnectionClosed):
                await self._command(ws, command, symbols=tuple(chunk))

    async def _send_book_subscribe(
        self, ws: ClientConnection, symbols: list[str], options: _BookOptions
    ) -> None:
        for chunk in _chunks(symbols, self._chunk):
            command: dict[str, Any] = {
                "action": "subscribe",
                "symbols": chunk,
                "streams": ["book"],
                "depth": options.depth,
            }
            if options.max_rate is not None:
                command["max_rate"] = options.max_rate
            with contextlib.suppress(ConnectionClosed):
                await self._command(ws, command, symbols=tuple(chunk), kind="subscribe_book")

    async def _command(
        self,
        ws: ClientConnection,
        command: dict[str, Any],
        *,
        symbols: tuple[str, ...] = (),
        kind: str | None = None,
    ) -> asyncio.Future[Any]:
        """Send ``command`` with a fresh id; a future for its answer."""
        command_id = self._next_id
        self._next_id += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[command_id] = _Pending(
            action=kind or command["action"],
            symbols=symbols,
            unsettled=set(symbols),
            future=future,
        )
        await ws.send(json.dumps({**command, "id": command_id}, separators=(",", ":")))
        return future

    def _require_ws(self) -> ClientConnection:
        ws = self._ws
        if ws is None:
            raise ConnectionError("not connected")
        return ws

    # --- incoming frames -------------------------------------------------------------

    async def _dispatch(self, ws: ClientConnection, frame: str) -> None:
        try:
            msg = json.loads(frame)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        kind = msg.get("type")
        if kind == "tick":
            await self._accept(msg)
        elif kind == "ticks":
            for tick in msg.get("ticks") or ():
                await self._accept(tick)
        elif kind == "snapshot":
            await self._on_snapshot(msg)
        elif kind == "book":
            await self._on_book(ws, msg)
        elif kind == "book_update":
            await self._on_book_update(ws, msg)
        elif kind == "reset":
            await self._on_reset(msg)
        elif kind == "subscribed":
            self._served = True
            self._on_subscribed(msg)
        elif kind == "unsubscribed":
            await self._on_unsubscribed(msg)
        elif kind == "pong":
            self._served = True
            self._answer(msg.get("id"), msg.get("ts"))
        elif kind == "subscriptions":
            self._answer(msg.get("id"), msg.get("symbols") or [])
        elif kind == "authenticated":
            self._answer(msg.get("id"), msg.get("user"))
        elif kind == "error":
            await self._on_error(ws, msg)
        else:
            await self._put(Message(type=str(kind), raw=msg))

    def _answer(self, command_id: Any, value: Any) -> None:
        pending = self._pending.pop(command_id, None) if isinstance(command_id, int) else None
        if pending is not None and pending.future is not None and not pending.future.done():
            pending.future.set_result(value)

    async def _accept(self, raw: Any) -> None:
        try:
            tick = Tick.from_message(raw)
        except (KeyError, TypeError, ValueError):
            return
        symbol = tick.symbol
        if symbol not in self._wanted:
            return  # in flight when the program unsubscribed
        self._served = True
        last = self._last_seq.get(symbol)
        if last is not None:
            if tick.seq <= last:
                self.stats.duplicates += 1
                return
            expected = last + 1 + tick.skipped
            if tick.seq > expected:
                self.stats.gaps += 1
                await self._put(Gap(symbol=symbol, expected=last + 1, got=tick.seq))
        self._last_seq[symbol] = tick.seq
        self.stats.ticks += 1
        self.stats.skipped += tick.skipped
        await self._put(tick)

    async def _on_snapshot(self, msg: dict[str, Any]) -> None:
        symbol = msg.get("symbol")
        if not isinstance(symbol, str) or symbol not in self._wanted:
            return
        ticks: list[Tick] = []
        for raw in msg.get("ticks") or ():
            with contextlib.suppress(KeyError, TypeError, ValueError):
                ticks.append(Tick.from_message(raw))
        ticks.sort(key=lambda t: t.seq)
        epoch = msg.get("epoch")
        if isinstance(epoch, str):
            self._epochs[symbol] = epoch
        else:
            self._epochs.pop(symbol, None)
        if ticks:
            self._last_seq[symbol] = ticks[-1].seq
        else:
            self._last_seq.pop(symbol, None)
        self._served = True
        await self._put(Snapshot(symbol=symbol, epoch=str(epoch or ""), ticks=tuple(ticks)))

    async def _on_book(self, ws: ClientConnection, msg: dict[str, Any]) -> None:
        symbol = msg.get("symbol")
        if not isinstance(symbol, str) or symbol not in self._wanted_books:
            return  # in flight when the program unsubscribed
        self._served = True
        try:
            book = LocalBook.from_snapshot(msg)
            expected = int(msg["checksum"])
        except (KeyError, TypeError, ValueError, ArithmeticError):
            await self._resync(ws, symbol, "malformed", 0, 0)
            return
        if book.checksum() != expected:
            self.stats.checksum_failures += 1
            await self._resync(ws, symbol, "checksum", expected, book.checksum())
            return
        self._books[symbol] = book
        self._resyncing.discard(symbol)
        self.stats.book_snapshots += 1
        for future in self._book_waiters.pop(symbol, []):
            if not future.done():
                future.set_result(book)
        await self._put(BookChanged(symbol=symbol, seq=book.seq, snapshot=True, book=book))

    async def _on_book_update(self, ws: ClientConnection, msg: dict[str, Any]) -> None:
        symbol = msg.get("symbol")
        book = self._books.get(symbol) if isinstance(symbol, str) else None
        if book is None or symbol in self._resyncing or symbol not in self._wanted_books:
            return  # unsubscribed, or a fresh snapshot is on its way
        try:
            seq, prev_seq, expected = int(msg["seq"]), int(msg["prev_seq"]), int(msg["checksum"])
            if prev_seq != book.seq:
                self.stats.prev_seq_breaks += 1
                await self._resync(ws, book.symbol, "prev_seq", book.seq, prev_seq)
                return
            book.apply(msg["bids"], msg["asks"])
        except (KeyError, TypeError, ValueError, ArithmeticError):
            await self._resync(ws, book.symbol, "malformed", book.seq, 0)
            return
        got = book.checksum()
        if got != expected:
            self.stats.checksum_failures += 1
            await self._resync(ws, book.symbol, "checksum", expected, got)
            return
        book.seq = seq
        book.ts = int(msg.get("ts") or 0)
        self.stats.book_updates += 1
        self.stats.book_conflated += max(0, seq - prev_seq - 1)
        await self._put(BookChanged(symbol=book.symbol, seq=seq, snapshot=False, book=book))

    async def _resync(
        self, ws: ClientConnection, symbol: str, reason: str, expected: int, got: int
    ) -> None:
        """Drop the book and subscribe to it again: a fresh snapshot follows."""
        self.stats.book_resyncs += 1
        logger.warning(
            "%s: book message did not check out (%s: expected %s, got %s); subscribing again",
            symbol, reason, expected, got,
        )  # fmt: skip
        self._books.pop(symbol, None)
        self._resyncing.add(symbol)
        options = self._wanted_books[symbol]
        self._spawn(self._resubscribe_book(ws, symbol, options))
        await self._put(BookResync(symbol=symbol, reason=reason, expected=expected, got=got))

    async def _resubscribe_book(
        self, ws: ClientConnection, symbol: str, options: _BookOptions
    ) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._command(
                ws, {"action": "unsubscribe", "symbols": [symbol], "streams": ["book"]}
            )
            await self._send_book_subscribe(ws, [symbol], options)

    async def _on_reset(self, msg: dict[str, Any]) -> None:
        symbol = msg.get("symbol")
        if not isinstance(symbol, str) or symbol not in self._wanted:
            return
        self._last_seq.pop(symbol, None)
        self._epochs.pop(symbol, None)
        self.stats.resets += 1
        await self._put(Reset(symbol=symbol, reason=str(msg.get("reason", ""))))

    def _on_subscribed(self, msg: dict[str, Any]) -> None:
        symbols = [s for s in msg.get("symbols") or () if isinstance(s, str)]
        command_id = msg.get("id")
        pending = self._pending.get(command_id) if isinstance(command_id, int) else None
        if pending is not None:
            pending.answered = True
            pending.unsettled.difference_update(symbols)
            if not pending.unsettled:
                self._pending.pop(command_id, None)
        for symbol in symbols:
            if symbol in self._wanted:
                self._confirmed.add(symbol)
                self._settle(symbol, None)

    async def _on_unsubscribed(self, msg: dict[str, Any]) -> None:
        symbols = tuple(s for s in msg.get("symbols") or () if isinstance(s, str))
        reason = msg.get("reason")
        if isinstance(reason, str):
            # Dropped by the server (a right was lost): asking again would be refused.
            for symbol in symbols:
                self._forget(symbol)
                self._forget_book(symbol)
            await self._put(Unsubscribed(symbols=symbols, reason=reason))
        else:
            self._confirmed.difference_update(symbols)
            self._answer(msg.get("id"), list(symbols))

    async def _on_error(self, ws: ClientConnection, msg: dict[str, Any]) -> None:
        code = str(msg.get("code", "unknown"))
        message = str(msg.get("message", ""))
        command_id = msg.get("id")
        symbols = tuple(s for s in msg.get("symbols") or () if isinstance(s, str))
        pending = self._pending.get(command_id) if isinstance(command_id, int) else None
        if pending is not None and pending.action == "auth":
            self._pending.pop(command_id, None)
            if pending.future is not None and not pending.future.done():
                pending.future.set_exception(AuthError(code, message))
        elif pending is not None and pending.action == "subscribe":
            if code == "unavailable":
                # Not subscribed for now (the server lost Redis): ask again shortly.
                retry = symbols or tuple(pending.unsettled)
                pending.unsettled.difference_update(retry)
                self._spawn(self._retry_subscribe(ws, retry))
            else:
                refused = symbols if code in ("forbidden", "unknown_symbol") else ()
                if not refused and not pending.answered:
                    refused = tuple(pending.unsettled)  # nothing of the command was served
                pending.unsettled.difference_update(refused)
                gone = [s for s in refused if s in self._wanted]
                for symbol in gone:
                    self._forget(symbol)
                for symbol in refused:
                    self._settle(symbol, code)
                if gone:
                    await self._put(Rejected(tuple(gone), code, message))
            if not pending.unsettled:
                self._pending.pop(command_id, None)
        elif pending is not None and pending.action == "subscribe_book":
            if code == "unavailable":
                retry = symbols or tuple(pending.unsettled)
                pending.unsettled.difference_update(retry)
                self._spawn(self._retry_book_subscribe(ws, retry))
            else:
                refused = symbols if code in ("forbidden", "unknown_symbol") else ()
                if not refused and not pending.answered:
                    refused = tuple(pending.unsettled)
                pending.unsettled.difference_update(refused)
                gone = [s for s in refused if s in self._wanted_books]
                for symbol in gone:
                    self._forget_book(symbol)
                if gone:
                    await self._put(Rejected(tuple(gone), code, message))
            if not pending.unsettled:
                self._pending.pop(command_id, None)
        elif pending is not None:
            self._pending.pop(command_id, None)
            if pending.future is not None and not pending.future.done():
                pending.future.set_exception(TickerClientError(f"{code}: {message}"))
        await self._put(ServerError(code, message, command_id, symbols, raw=msg))

    async def _retry_subscribe(self, ws: ClientConnection, symbols: tuple[str, ...]) -> None:
        await asyncio.sleep(backoff_delay(1, base=self._base_delay, random=self._random))
        groups: dict[_Options, list[str]] = {}
        for symbol in symbols:
            if symbol in self._wanted and symbol not in self._confirmed:
                groups.setdefault(self._wanted[symbol], []).append(symbol)
        for options, chunk in groups.items():
            await self._send_subscribe(ws, chunk, options)

    async def _retry_book_subscribe(self, ws: ClientConnection, symbols: tuple[str, ...]) -> None:
        await asyncio.sleep(backoff_delay(1, base=self._base_delay, random=self._random))
        groups: dict[_BookOptions, list[str]] = {}
        for symbol in symbols:
            if symbol in self._wanted_books and symbol not in self._books:
                groups.setdefault(self._wanted_books[symbol], []).append(symbol)
        for options, chunk in groups.items():
            await self._send_book_subscribe(ws, chunk, options)

    # --- bookkeeping -----------------------------------------------------------------

    def _forget_book(self, symbol: str) -> None:
        self._wanted_books.pop(symbol, None)
        self._books.pop(symbol, None)
        self._resyncing.discard(symbol)
        for future in self._book_waiters.pop(symbol, []):
            if not future.done():
                future.set_result(None)

    def _forget(self, symbol: str) -> None:
        self._wanted.pop(symbol, None)
        self._last_seq.pop(symbol, None)
        self._epochs.pop(symbol, None)
        self._confirmed.discard(symbol)

    def _settle(self, symbol: str, code: str | None) -> None:
        for waiter in list(self._waiters):
            waiter.settle(symbol, code)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _fail_waiting(self, exc: BaseException) -> None:
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_exception(exc)
                waiter.future.exception()

    def _raise_if_done(self) -> None:
        if self._done.is_set():
            raise self._error or ClientClosed("the client was closed")


def _origin_of(url: str) -> str:
    """The Origin the server expects from a program: the page's scheme and host."""
    parts = urlsplit(url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return f"{scheme}://{parts.netloc}"


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def _first(*aws: Any, result_of: int | None = None) -> Any:
    """Wait for the first of ``aws`` to finish and cancel the rest; the result of
    ``aws[result_of]`` if that one finished."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
    if result_of is not None and tasks[result_of] in done:
        return tasks[result_of].result()
    return None
