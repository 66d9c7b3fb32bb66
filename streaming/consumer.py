"""PriceStreamConsumer: the WebSocket end of the price protocol (docs/protocol.md)."""

import json
from collections.abc import Awaitable, Callable

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.sessions import InstanceSessionWrapper
from django.conf import settings

from markets.publishing import now_ms

from .connection import Connection
from .known import known_symbols
from .protocol import MAX_MESSAGE_BYTES, Command, ErrorCode, ProtocolError, parse_command


def frame_sender(send: Callable[[dict], Awaitable[None]]) -> Callable[[dict], Awaitable[None]]:
    """The ASGI send to use for outbox frames: below channels' session wrapper if present.

    InstanceSessionWrapper.send reads the session's state and Django settings on every
    message, yet acts only on ``http.response.start``; for a ``websocket.send`` it just
    calls the send it wraps. Frames go straight there; accept and close keep the full
    middleware path.
    """
    wrapper = getattr(send, "__self__", None)
    if (
        isinstance(wrapper, InstanceSessionWrapper)
        and "websocket.send" not in wrapper.save_message_types
        and "websocket.send" not in wrapper.cookie_response_message_types
    ):
        return wrapper.real_send
    return send


class PriceStreamConsumer(AsyncJsonWebsocketConsumer):
    """Parses a client's commands and wires them to its streaming.connection.Connection."""

    # Ticks reach connections through the process's Hub, so a connection needs no
    # channel of its own (nor a receive on the channel layer per connection).
    channel_layer_alias = None

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # However the consumer ends (even by a bug), no tick is queued for it again.
            conn = getattr(self, "conn", None)
            if conn is not None:
                conn.detach()

    async def dispatch(self, message: dict) -> None:
        """Called with each ASGI message: no database cleanup per message.

        channels runs close_old_connections() on a thread before every handler. No
        handler here touches the database except through KnownSymbols, whose
        occasional read cleans up around itself, so the hop is skipped: it was a
        thread round trip per connect, per command and per disconnect.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        """Called when the WebSocket handshake arrives."""
        self.symbol_limit: int = settings.MAX_SYMBOLS_PER_CONNECTION
        await self.accept()
        send_frame = frame_sender(self.base_send)

        async def send_text(text: str) -> None:
            await send_frame({"type": "websocket.send", "text": text})

        self.conn = Connection(send_text=send_text, close=self._close_with)

    async def _close_with(self, code: int) -> None:
        await self.close(code=code)

    async def disconnect(self, code: int) -> None:
        """Called when the socket closes, for any reason."""
        if hasattr(self, "conn"):
            self.conn.detach()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Called with each frame from the client."""
        if self.conn.close_code is not None:
            return  # closing: its commands no longer matter
        try:
            await self._execute(text_data)
        except ProtocolError as exc:
            self.conn.send(exc.as_message())

    async def _execute(self, text_data: str | None) -> None:
        if text_data is None:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "binary frames are not accepted")
        if len(text_data) > MAX_MESSAGE_BYTES or len(text_data.encode()) > MAX_MESSAGE_BYTES:
            raise ProtocolError(
                ErrorCode.MESSAGE_TOO_LARGE,
                f"a command may be at most {MAX_MESSAGE_BYTES} bytes",
            )
        try:
            raw = json.loads(text_data)
        except (ValueError, RecursionError):
            raise ProtocolError(ErrorCode.BAD_JSON, "the frame is not valid JSON") from None
        command = parse_command(raw, symbol_limit=self.symbol_limit)
        await getattr(self, f"do_{command.action}")(command)

    async def do_subscribe(self, command: Command) -> None:
        known = await known_symbols().active(command.symbols)
        symbols = [s for s in command.symbols if s in known]
        unknown = [s for s in command.symbols if s not in known]
        held = self.conn.subs
        total = len(held) + sum(1 for s in symbols if s not in held)
        if total > self.symbol_limit:
            raise ProtocolError(
                ErrorCode.TOO_MANY_SYMBOLS,
                f"subscribing would hold {total} symbols; "
                f"the limit per connection is {self.symbol_limit}",
                id=command.id,
            )
        if symbols:
            await self.conn.subscribe(command, symbols)
        if unknown:
            raise ProtocolError(
                ErrorCode.UNKNOWN_SYMBOL,
                f"unknown symbol(s): {', '.join(unknown)}",
                id=command.id,
                symbols=unknown,
            )

    async def do_unsubscribe(self, command: Command) -> None:
        # Dropped at once: a tick already on its way is not delivered.
        self.conn.unsubscribe(command.symbols)
        self.conn.send({"type": "unsubscribed", "id": command.id, "symbols": command.symbols})

    async def do_list(self, command: Command) -> None:
        self.conn.send({"type": "subscriptions", "id": command.id, "symbols": self.conn.symbols()})

    async def do_ping(self, command: Command) -> None:
        self.conn.send({"type": "pong", "id": command.id, "ts": now_ms()})
