"""uvicorn's websockets-sansio protocol, reading a client no faster than the app does.

uvicorn parses everything one socket read returns (up to 256 KiB) in one callback and
queues every frame for the app. A client flooding small frames (a ping command is 23
bytes on the wire) thus made the event loop parse some 11,000 frames in one go, and
every other client of the process waited: the healthy clients' p99 went from 30 to
200 ms while one connection flooded pings, though the command limiter answered only 20
of them a second (benchmarks/RESULTS.md, round 7).

``PacedWebSocketsProtocol`` parses at most ``SLICE_BYTES`` at a time, and the next
slice only once the app has taken every frame parsed so far; the socket is read again
only when nothing is left. A client's backlog stays in its own socket (and at most one
read here), and parsing it costs the loop a few milliseconds at a time, when the app
asks. ``tickerproject.serve`` runs uvicorn with ``--ws`` pointing here.

It also writes a connection's frames of one turn of the event loop in one write
(``CoalescingTransport``). The fan-out hands a connection each tick of a batch as its
own frame, and a write to a socket is a system call that costs more than framing the
tick: at 50,000 frames/s it was 90% of the web process's CPU (benchmarks/RESULTS.md,
round 9). The frames stay separate WebSocket frames; only the system calls merge.

A text frame on an open connection without extensions (the harness, programs that do
not ask for compression) is framed here: a server's frame is a two-to-ten-byte header
and the payload, which websockets builds through a Frame object, its checks and a
BytesIO per frame. Anything else (compression, close, accept) goes through uvicorn.
The same write is offered to the app as a plain function in the scope's extensions
(``WRITE_EXTENSION``), so the fan-out writes a frame with no coroutine to create and
drive; it says when it cannot write at once, and the app falls back to ``send``.

A close never waits behind the backlog it ends. uvicorn's ``send`` waits for the socket
to drain before anything, the close included, so a client closed for not reading never
got its 4008: the frame waited for a drain that could not come, until the keepalive
timed out and wrote 1011 behind the backlog (issue 19). Here the close frame is written
at once, behind only what the socket and the transport already hold; the client then has
``WS_CLOSE_TIMEOUT`` seconds to read up to it and answer, or its TCP connection is reset
(``transport.close()`` would first wait for a drain that may never come). A client that
does not answer a keepalive ping within ``WS_PING_TIMEOUT`` has stopped reading too: it
is closed the same way with 4008, the code that tells it to resume with ``since``.

It uses uvicorn's and websockets' private state, so it runs only on the releases it was
tested with (``KNOWN_VERSIONS``, pinned alike in pyproject.toml); on any other,
``tickerproject.serve`` runs uvicorn's own protocol instead, with one warning.
"""

import asyncio
import contextlib
import logging
import socket
import struct
import threading
from importlib.metadata import version

from django.conf import settings
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.protocol import OPEN

from streaming.extensions import WRITE_EXTENSION
from streaming.protocol import CloseCode
from telemetry import metrics

logger = logging.getLogger(__name__)

# The releases this module was tested with, as version prefixes (pyproject.toml pins
# the same ranges: uvicorn>=0.55,<0.56 and websockets>=17.4,<17.5).
KNOWN_VERSIONS = {"uvicorn": "0.55", "websockets": "17.4"}

# About 170 ping commands: a few milliseconds of parsing on a slow core.
SLICE_BYTES = 4096
# SO_LINGER on, for 0 s: closing the socket resets the connection and drops what the
# kernel still holds for it, instead of sending it to a client that no longer reads.
RESET_ON_CLOSE = struct.pack("ii", 1, 0)


def installed_versions() -> dict[str, str]:
    return {name: version(name) for name in KNOWN_VERSIONS}


def unknown_versions() -> list[str]:
    """The installed releases of KNOWN_VERSIONS this module was not tested with."""
    return [
        f"{name} {installed}"
        for name, installed in installed_versions().items()
        if installed != KNOWN_VERSIONS[name]
        and not installed.startswith(KNOWN_VERSIONS[name] + ".")
    ]


class _LastWriter(threading.local):
    # The one transport that may hold writes (a write to another flushes it first).
    transport: "CoalescingTransport | None" = None
    # The loop on which the end-of-turn flush of that transport is arranged, if any.
    flush_loop: asyncio.AbstractEventLoop | None = None


_last_writer = _LastWriter()


class CoalescingTransport:
    """A transport whose writes of one turn of the event loop go out as one write.

    Every write goes through here, in order (frames, pings, pongs, the close), so
    nothing can overtake anything. Flow control is the real transport's: it pauses the
    protocol when a flushed write leaves its buffer over the high-water mark, and
    uvicorn's send waits for that before framing the next message, so at most one
    turn's frames wait here.
    """

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        # Another connection's writes before ours go out now: the fan-out writes each
        # connection's frames of a batch together (streaming.outbox.DeliveryRound), so
        # the first connections need not wait for the whole batch to be written.
        state = _last_writer
        last = state.transport
        if last is not self:
            if last is not None and last._pending and last._loop is self._loop:
                last.flush()
            state.transport = self
        self._pending.append(data)
        # One callback a turn for the whole loop, not one per connection written to:
        # thousands of handles a round were enough, surviving a young collection or
        # two, to bring on a full one every ~12 s (benchmarks/RESULTS.md, round 10).
        if state.flush_loop is not self._loop:
            state.flush_loop = self._loop
            self._loop.call_soon(_flush_last_writer)

    def flush(self) -> None:
        """Write everything held, in one write."""
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()  # what was written before the close still goes, as with a transport
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()  # the FIN follows what was written before it
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


class Inbox:
    """The ASGI events waiting for the app: what uvicorn uses of an asyncio.Queue.

    An asyncio.Queue allocates four deques (its items, getters, putters, and its
    ``join`` event's waiters), about 3 KB that every idle connection held for a queue
    that rarely holds more than one event (benchmarks/RESULTS.md, round 11).
    """

    __slots__ = ("_items", "_waiters")

    def __init__(self) -> None:
        self._items: list = []
        self._waiters: list[asyncio.Future] | None = None  # getters waiting, if any

    def put_nowait(self, item) -> None:
        self._items.append(item)
        if self._waiters:
            # Every getter checks again: one woken but cancelled cannot strand the rest.
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def get(self):
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                self._waiters.remove(waiter)
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


class Flag(asyncio.Event):
    """An asyncio.Event without a deque of waiters made for each (about 750 bytes a
    connection); its waiters, when there are any, are a list. Still an asyncio.Event
    for those who check (streaming.limits)."""

    def __init__(self) -> None:  # not Event's: every method is this class's own
        self._value = False
        self._waiters: list[asyncio.Future] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if not self._value:
            self._value = True
            for waiter in self._waiters or ():
                if not waiter.done():
                    waiter.set_result(True)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            self._waiters.remove(waiter)


class PacedWebSocketsProtocol(WebSocketsSansIOProtocol):
    """WebSocketsSansIOProtocol that parses a slice at a time, as the app reads, and
    writes a loop turn's frames at once."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # What an idle connection holds, made lighter (benchmarks/conn_memory.py).
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Flag()
        self.writable.set()
        self._unparsed = bytearray()
        # How long a client has, once the server sent its close, to read up to it and
        # answer; then its connection is reset (uvicorn's own is 10 s, then a close()).
        self.close_timeout = settings.WS_CLOSE_TIMEOUT

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Called when the connection is handed over: its writes are coalesced from now."""
        super().connection_made(transport)
        self.transport = CoalescingTransport(self.transport, self.loop)

    def data_received(self, data: bytes) -> None:
        """Called when the socket has data: keep it, and parse while the app keeps up."""
        self._unparsed += data
        self._parse_some()

    def _parse_some(self) -> None:
        if self.conn.parser_exc is not None or self.transport.is_closing():
            self._unparsed.clear()  # the connection is over; nothing more is read
            return
        # An open connection is parsed as the app reads. The handshake, and what follows
        # the server's close (the app reads no more, but the client's close must be
        # seen), are parsed whatever the queue holds: a slice per turn of the loop.
        paced = self.handshake_complete and not self.close_sent
        if self._unparsed and (self.queue.empty() or not paced):
            chunk = bytes(self._unparsed[:SLICE_BYTES])
            del self._unparsed[:SLICE_BYTES]
            super().data_received(chunk)
            if self._unparsed and not (paced and not self.queue.empty()):
                self.loop.call_soon(self._parse_some)
        if self._unparsed:
            if not self.read_paused:
                self.read_paused = True
                self.transport.pause_reading()
        elif self.read_paused and (self.queue.empty() or self.close_sent):
            self.read_paused = False
            self.transport.resume_reading()

    def handle_connect(self, event) -> None:
        """Called with the handshake request: the scope also offers WRITE_EXTENSION."""
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][WRITE_EXTENSION] = {"write": self.write_text}

    def write_text(self, payload: bytes) -> bool:
        """Write a text frame of UTF-8 ``payload`` now, if it can go without waiting.

        False when it cannot (the socket is full, the connection is closing, or it
        uses an extension such as compression): the caller then sends it through
        the ASGI ``send``, which waits as it should. Raises ClientDisconnected as
        ``send`` does. No coroutine per frame: the fan-out writes thousands a turn.
        """
        conn = self.conn
        if (
            not self.writable.is_set()
            or self.close_sent
            or conn.state is not OPEN
            or conn.extensions
            or conn.expect_continuation_frame
        ):
            return False
        if self.disconnected:
            raise ClientDisconnected()
        self.transport.write(text_frame(payload))
        return True

    async def send(self, message) -> None:
        """Called by the app for each event: a plain text frame is framed right here,
        and a close goes out at once, however full the socket is."""
        kind = message["type"]
        if kind == "websocket.send":
            text = message.get("text")
            if text is not None and self.write_text(text.encode()):
                return
            if self.close_sent and self.handshake_complete and self.initial_response is None:
                raise ClientDisconnected()  # the server closed it (keepalive): gone
        elif kind == "websocket.close" and self._open():
            self.close_now(message.get("code", 1000), message.get("reason") or "")
            return
        elif kind == "websocket.accept":
            await super().send(message)
            if self.handshake_complete:
                # Answered: nothing reads the handshake's headers again (the scope has its
                # own copy), and they were a few KB held for the connection's life. The
                # request is emptied too: websockets' parser keeps it in its frame.
                self.request.headers.clear()
                self.request = self.response = None
            return
        return await super().send(message)

    def _open(self) -> bool:
        return (
            self.handshake_complete
            and self.initial_response is None
            and not self.close_sent
            and not self.disconnected
        )

    def close_now(self, code: int, reason: str = "", *, app_code: int | None = None) -> None:
        """Write the close frame now, and reset the connection if the client has not
        answered it within ``close_timeout``. The app is told with ``app_code``
        (``code`` unless given), as uvicorn tells it of the close it asked for."""
        if self.transport.is_closing():
            return
        self.stop_keepalive()
        try:
            self.conn.send_close(code, reason)
        except InvalidState:  # the client's close came first
            raise ClientDisconnected() from None
        told = code if app_code is None else app_code
        self.queue.put_nowait({"type": "websocket.disconnect", "code": told, "reason": reason})
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        # Read on, unpaced: the client's answer must be seen.
        self.loop.call_soon(self._parse_some)
        self.close_timer = self.loop.call_later(self.close_timeout, self.reset_connection)

    def reset_connection(self) -> None:
        """Called when a client has not answered the server's close in time: reset its
        TCP connection, dropping what it never read (close() would wait for a drain)."""
        self.close_timer = None
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
        self.transport.abort()

    def keepalive_timeout(self) -> None:
        """Called when the client has not answered a ping within ws_ping_timeout: it
        stopped reading, so it is closed as a slow consumer (4008: resume with since)."""
        self.pong_timer = None
        self.pending_ping_payload = None
        if self.close_sent or self.transport.is_closing():
            return
        metrics.SLOW_CONSUMER_CLOSES.inc()
        logger.info("closing a client that did not answer a ping in %s s (4008)", self.ping_timeout)
        # The app hears what happened on its side: the client went silent (1006).
        with contextlib.suppress(ClientDisconnected):
            self.close_now(CloseCode.SLOW_CONSUMER, "keepalive ping timeout", app_code=1006)

    async def receive(self):
        """Called by the app for its next event: parse the next slice once it has all."""
        message = await self.queue.get()
        if self.queue.empty():
            self._parse_some()
        return message


def _flush_last_writer() -> None:
    """Called at the end of a loop turn that wrote: the last writer's writes go out."""
    state = _last_writer
    loop = asyncio.get_running_loop()
    if state.flush_loop is loop:
        state.flush_loop = None
    last = state.transport
    if last is not None and last._pending and last._loop is loop:
        last.flush()


def text_frame(payload: bytes) -> bytes:
    """An unmasked, final text frame of ``payload`` (RFC 6455, 5.2), as a server sends it."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x81, n) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload
