"""PriceStreamConsumer: the WebSocket end of protocol v1 (docs/protocol.md)."""

import json
import logging
from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from .protocol import MAX_MESSAGE_BYTES, Command, ErrorCode, ProtocolError, parse_command
from .publishing import TICK_EVENT_TYPE, now_ms
from .selectors import active_tickers
from .symbols import symbol_group_name

logger = logging.getLogger(__name__)


class PriceStreamConsumer(AsyncJsonWebsocketConsumer):
    """Streams ticks of the symbols a client subscribes to."""

    async def connect(self) -> None:
        """Called when the WebSocket handshake arrives."""
        self.subscriptions: set[str] = set()
        self.symbol_limit: int = settings.MAX_SYMBOLS_PER_CONNECTION
        await self.accept()

    async def disconnect(self, code: int) -> None:
        """Called when the socket closes, for any reason."""
        for symbol in getattr(self, "subscriptions", ()):
            await self.channel_layer.group_discard(symbol_group_name(symbol), self.channel_name)

    async def dispatch(self, message: dict) -> None:
        """Called for every ASGI and channel-layer event."""
        # channels >= 4.2 closes stale DB connections on a thread before every
        # handler; the tick path never touches the ORM, so skip that hop for it.
        if message["type"] == TICK_EVENT_TYPE:
            await self.tick_message(message)
        else:
            await super().dispatch(message)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Called with each frame from the client."""
        try:
            if text_data is None:
                raise ProtocolError(ErrorCode.BAD_REQUEST, "binary frames are not accepted")
            if len(text_data) > MAX_MESSAGE_BYTES or len(text_data.encode()) > MAX_MESSAGE_BYTES:
                raise ProtocolError(
                    ErrorCode.MESSAGE_TOO_LARGE,
                    f"a command may be at most {MAX_MESSAGE_BYTES} bytes",
                )
            try:
                raw = json.loads(text_data)
            except ValueError:
                raise ProtocolError(ErrorCode.BAD_JSON, "the frame is not valid JSON") from None
            command = parse_command(raw, symbol_limit=self.symbol_limit)
            await self.handle_command(command)
        except ProtocolError as exc:
            await self.send_json(exc.as_message())

    async def handle_command(self, command: Command) -> None:
        """Called with each valid command."""
        handler = getattr(self, f"do_{command.action}")
        await handler(command)

    async def do_subscribe(self, command: Command) -> None:
        known = await active_tickers(tickers=command.symbols)
        symbols = [s for s in command.symbols if s in known]
        unknown = [s for s in command.symbols if s not in known]
        new = [s for s in symbols if s not in self.subscriptions]
        if len(self.subscriptions) + len(new) > self.symbol_limit:
            raise ProtocolError(
                ErrorCode.TOO_MANY_SYMBOLS,
                f"subscribing would hold {len(self.subscriptions) + len(new)} symbols; "
                f"the limit per connection is {self.symbol_limit}",
                id=command.id,
            )
        for symbol in new:
            await self.channel_layer.group_add(symbol_group_name(symbol), self.channel_name)
            self.subscriptions.add(symbol)
        if symbols:
            await self.send_json({"type": "subscribed", "id": command.id, "symbols": symbols})
        if unknown:
            raise ProtocolError(
                ErrorCode.UNKNOWN_SYMBOL,
                f"unknown symbol(s): {', '.join(unknown)}",
                id=command.id,
                symbols=unknown,
            )

    async def do_unsubscribe(self, command: Command) -> None:
        for symbol in command.symbols:
            if symbol in self.subscriptions:
                # Drop it locally first so a tick already in flight is not delivered.
                self.subscriptions.discard(symbol)
                await self.channel_layer.group_discard(symbol_group_name(symbol), self.channel_name)
        await self.send_json({"type": "unsubscribed", "id": command.id, "symbols": command.symbols})

    async def do_list(self, command: Command) -> None:
        await self.send_json(
            {"type": "subscriptions", "id": command.id, "symbols": sorted(self.subscriptions)}
        )

    async def do_ping(self, command: Command) -> None:
        await self.send_json({"type": "pong", "id": command.id, "ts": now_ms()})

    async def tick_message(self, event: dict[str, Any]) -> None:
        """Called for each tick published to a group this connection joined."""
        if event["symbol"] in self.subscriptions:
            # The publisher encoded the JSON once for every subscriber.
            await self.send(text_data=event["text"])
