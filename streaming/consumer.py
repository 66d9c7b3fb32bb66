"""PriceStreamConsumer: the WebSocket end of the price protocol (docs/protocol.md)."""

import asyncio
import functools
import logging
import time

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from markets.publishing import now_ms
from telemetry import metrics

from .auth import ANONYMOUS, Identity, identify_token
from .connection import Connection
from .extensions import write_extension
from .known import known_symbols
from .limits import CommandLimiter, SubscriptionQuota, Verdict, close_for_flooding
from .protocol import (
    DEFAULT_STREAMS,
    CloseCode,
    Command,
    ErrorCode,
    ProtocolError,
    decode_frame,
    parse_command,
)

logger = logging.getLogger(__name__)
# The action label of commands that could not be parsed, and of unread (rate-limited) ones.
INVALID_ACTION = "invalid"
UNREAD_ACTION = "unread"


class PriceStreamConsumer(AsyncJsonWebsocketConsumer):
    """Parses a client's commands and wires them to its streaming.connection.Connection."""

    # Ticks reach connections through the process's Hub, so a connection needs no
    # channel of its own (nor a receive on the channel layer per connection).
    channel_layer_alias = None
    # streaming.limits, made with the first frame.
    limiter: CommandLimiter | None = None
    quota: SubscriptionQuota | None = None
    # Set by connect() and disconnect(), for the close line and ticker_ws_closes_total.
    opened_at: float | None = None
    peer_close_code: int | None = None

    @classmethod
    def as_asgi(cls, **initkwargs):
        """channels' as_asgi, but a plain function returning the consumer's coroutine:
        no frame of it is held for the connection's life."""

        def app(scope, receive, send):
            return cls(**initkwargs)(scope, receive, send)

        app.consumer_class = cls
        app.consumer_initkwargs = initkwargs
        app._asgi_single_callable = True  # for asgiref, which cannot tell from the signature
        functools.update_wrapper(app, cls, updated=())
        return app

    async def __call__(self, scope, receive, send) -> None:
        """Called once per connection: its events, one at a time, until it ends.

        AsyncConsumer.__call__ without a channel layer, in one task: channels'
        await_many_dispatch ran each receive in a task of its own, under asyncio.wait,
        and every idle connection held that task, its context and its waits (about
        2 KB; benchmarks/RESULTS.md, round 11).
        """
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        failed = True
        try:
            try:
                while True:
                    await self.dispatch(await receive())
            except StopConsumer:
                pass
            failed = False
        finally:
            self.ended(failed)

    def ended(self, failed: bool) -> None:
        """Called when the consumer ends, however it ends (even by a bug)."""
        self._closed(failed)
        # No tick is queued for it again.
        conn = getattr(self, "conn", None)
        if conn is not None:
            conn.detach()
        if self.limiter is not None:
            self.limiter.cancel()
        if self.quota is not None:
            self.quota.release()

    def _closed(self, failed: bool) -> None:
        """The lifecycle line and metrics of a connection that was opened."""
        if self.opened_at is None:
            return
        conn = getattr(self, "conn", None)
        code = conn.close_code if conn is not None else None
        if code is not None:
            by = "server"
        elif failed:
            code, by = 1011, "error"
        else:
            code, by = self.peer_close_code or 1005, "client"
        metrics.WS_CONNECTIONS.dec()
        metrics.WS_CLOSES.labels(str(code), by).inc()
        logger.info(
            "websocket closed: code %s by %s after %.1f s, %d symbols held",
            code, by, time.monotonic() - self.opened_at, len(conn.subs) if conn else 0,
            extra={"close_code": code, "closed_by": by},
        )  # fmt: skip
        self.opened_at = None

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
        identity: Identity = self.scope.get("identity", ANONYMOUS)
        await self.accept()
        self.opened_at = time.monotonic()
        metrics.WS_CONNECTIONS.inc()
        client = self.scope.get("client")
        logger.info(
            "websocket open from %s as %s",
            client[0] if client else "?",
            identity.user.get_username() if identity.authenticated else "anonymous",
        )
        send = self.base_send

        async def send_text(text: str) -> None:
            await send({"type": "websocket.send", "text": text})

        self.conn = Connection(
            send_text=send_text,
            write=write_extension(self.scope),
            close=self._close_with,
            identity=identity,
        )
        self._auth_deadline: asyncio.TimerHandle | None = None
        if identity.failure is not None:
            self.conn.send(ProtocolError(ErrorCode.UNAUTHORIZED, identity.failure).as_message())
            self.conn.end(CloseCode.UNAUTHORIZED)
        elif settings.WS_REQUIRE_AUTH and not identity.authenticated:
            # An anonymous client has this long to send "auth" (streaming.auth).
            self._auth_deadline = asyncio.get_running_loop().call_later(
                settings.AUTH_TIMEOUT_SECONDS, self.conn.end, CloseCode.UNAUTHORIZED
            )

    async def _close_with(self, code: int) -> None:
        await self.close(code=code)

    async def disconnect(self, code: int) -> None:
        """Called when the socket closes, for any reason."""
        self.peer_close_code = code
        if getattr(self, "_auth_deadline", None) is not None:
            self._auth_deadline.cancel()
        if hasattr(self, "conn"):
            self.conn.detach()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Called with each frame from the client."""
        if self.conn.close_code is not None:
            return  # closing: its commands no longer matter
        if self.limiter is None:
            self.limiter = CommandLimiter.from_settings(self.conn.send)
            self.quota = SubscriptionQuota()
        verdict = self.limiter.admit()
        if verdict is Verdict.DROP:
            metrics.WS_COMMANDS.labels(UNREAD_ACTION, ErrorCode.RATE_LIMITED.value).inc()
            # Not read, not answered (but counted in a rate_limited error), and nothing
            # more is read from this client until a token is back: while this handler
            # waits, the server keeps the flooder's frames in its socket.
            await asyncio.sleep(self.limiter.pause())
            return
        if verdict is Verdict.CLOSE:
            await close_for_flooding(self)
            return
        self._action = INVALID_ACTION
        try:
            await self._execute(text_data)
        except ProtocolError as exc:
            metrics.WS_COMMANDS.labels(self._action, str(exc.code)).inc()
            self.conn.send(exc.as_message())
        else:
            metrics.WS_COMMANDS.labels(self._action, "ok").inc()
        finally:
            # What the user holds across its connections (streaming.limits).
            self.quota.sync(self.conn.identity, len(self.conn.symbols()))

    async def _execute(self, text_data: str | None) -> None:
        command = parse_command(decode_frame(text_data), symbol_limit=self.symbol_limit)
        self._action = command.action
        if (
            command.action != "auth"
            and settings.WS_REQUIRE_AUTH
            and not self.conn.identity.authenticated
        ):
            self.conn.end(CloseCode.UNAUTHORIZED)
            return
        await getattr(self, f"do_{command.action}")(command)

    async def do_auth(self, command: Command) -> None:
        identity = await database_sync_to_async(identify_token)(command.token)
        if identity is None:
            raise ProtocolError(
                ErrorCode.UNAUTHORIZED,
                "the token is not valid (unknown, revoked or expired)",
                id=command.id,
            )
        if self._auth_deadline is not None:
            self._auth_deadline.cancel()
            self._auth_deadline = None
        self.conn.identity = identity
        self.conn.send(
            {"type": "authenticated", "id": command.id, "user": identity.user.get_username()}
        )

    async def do_subscribe(self, command: Command) -> None:
        known = await known_symbols().active(command.symbols)
        unknown = [s for s in command.symbols if s not in known]
        forbidden = await self.conn.guard.forbidden(
            self.conn.identity, [s for s in command.symbols if s in known]
        )
        symbols = [s for s in command.symbols if s in known and s not in forbidden]
        held = set(self.conn.symbols())  # a symbol counts once, whatever streams it has
        total = len(held) + sum(1 for s in symbols if s not in held)
        if total > self.symbol_limit:
            raise ProtocolError(
                ErrorCode.TOO_MANY_SYMBOLS,
                f"subscribing would hold {total} symbols; "
                f"the limit per connection is {self.symbol_limit}",
                id=command.id,
            )
        self.quota.check(self.conn.identity, len(held), total - len(held), id=command.id)
        if symbols:
            await self.conn.subscribe(command, symbols)
        if forbidden:
            # Served apart from the rest of the command: the client may not see these.
            self.conn.send(
                ProtocolError(
                    ErrorCode.FORBIDDEN,
                    f"not entitled to: {', '.join(forbidden)}",
                    id=command.id,
                    symbols=forbidden,
                ).as_message()
            )
        if unknown:
            raise ProtocolError(
                ErrorCode.UNKNOWN_SYMBOL,
                f"unknown symbol(s): {', '.join(unknown)}",
                id=command.id,
                symbols=unknown,
            )

    async def do_unsubscribe(self, command: Command) -> None:
        # Dropped at once: a tick or book update already on its way is not delivered.
        self.conn.unsubscribe(command.symbols, command.streams)
        answer = {"type": "unsubscribed", "id": command.id, "symbols": command.symbols}
        if command.streams != DEFAULT_STREAMS:
            answer["streams"] = list(command.streams)
        self.conn.send(answer)

    async def do_list(self, command: Command) -> None:
        self.conn.send(
            {
                "type": "subscriptions",
                "id": command.id,
                "symbols": self.conn.symbols(),
                "streams": self.conn.streams(),
                "depth": self.conn.depths(),
            }
        )

    async def do_ping(self, command: Command) -> None:
        self.conn.send({"type": "pong", "id": command.id, "ts": now_ms()})
