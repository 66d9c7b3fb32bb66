"""PriceStreamConsumer: the WebSocket end of the price protocol (docs/protocol.md)."""

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.sessions import InstanceSessionWrapper
from django.conf import settings

from . import history
from .fanout import local_fanout
from .protocol import MAX_MESSAGE_BYTES, Command, ErrorCode, ProtocolError, parse_command
from .publishing import now_ms
from .selectors import active_tickers
from .snapshots import snapshot_reader
from .ticks import Tick

logger = logging.getLogger(__name__)


def frame_sender(send: Callable[[dict], Awaitable[None]]) -> Callable[[dict], Awaitable[None]]:
    """The ASGI send to use for tick frames: below channels' session wrapper if present.

    InstanceSessionWrapper.send reads the session's state and Django settings on every
    message, yet acts only on ``http.response.start``; for a ``websocket.send`` it just
    calls the send it wraps. Tick frames go straight there, everything else keeps the
    full middleware path.
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
    """Streams ticks of the symbols a client subscribes to, gap-free and in seq order."""

    async def connect(self) -> None:
        """Called when the WebSocket handshake arrives."""
        # symbol -> seq of the last tick this client has been sent; the keys are
        # the subscriptions.
        self.last_seq: dict[str, int] = {}
        self.symbol_limit: int = settings.MAX_SYMBOLS_PER_CONNECTION
        self.batch_ms = 0
        self._batch: list[str] = []
        self._flush_task: asyncio.Task | None = None
        self._send_frame = frame_sender(self.base_send)
        self._snapshots = snapshot_reader()
        self._fanout = local_fanout()
        # symbol -> live ticks that arrived while its snapshot or replay was on its way
        self._pending: dict[str, list[dict]] = {}
        await self.accept()

    async def disconnect(self, code: int) -> None:
        """Called when the socket closes, for any reason."""
        if getattr(self, "_flush_task", None) is not None:
            self._flush_task.cancel()
        for symbol in list(getattr(self, "last_seq", ())):
            await self._fanout.discard(symbol, self)

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
            await getattr(self, f"do_{command.action}")(command)
        except ProtocolError as exc:
            await self.send_json(exc.as_message())

    async def do_subscribe(self, command: Command) -> None:
        known = await active_tickers(tickers=command.symbols)
        symbols = [s for s in command.symbols if s in known]
        unknown = [s for s in command.symbols if s not in known]
        new = [s for s in symbols if s not in self.last_seq]
        if len(self.last_seq) + len(new) > self.symbol_limit:
            raise ProtocolError(
                ErrorCode.TOO_MANY_SYMBOLS,
                f"subscribing would hold {len(self.last_seq) + len(new)} symbols; "
                f"the limit per connection is {self.symbol_limit}",
                id=command.id,
            )
        if command.batch_ms is not None:
            self.batch_ms = command.batch_ms
        # Join before reading history: a tick published in between is then both in
        # the history read and held in _pending, and the seq check drops the copy.
        for symbol in new:
            self._pending[symbol] = []
            self.last_seq[symbol] = 0
            await self._fanout.add(symbol, self)
        joined_at = time.monotonic()
        try:
            if symbols:
                await self.send_json({"type": "subscribed", "id": command.id, "symbols": symbols})
            for symbol in new:
                if symbol in command.since:
                    await self.send_resume(
                        symbol, command.since[symbol], command.epochs.get(symbol), joined_at
                    )
                else:
                    await self.send_snapshot(symbol, joined_at)
                await self._release_pending(symbol)
        finally:
            for symbol in new:
                await self._release_pending(symbol)
        if unknown:
            raise ProtocolError(
                ErrorCode.UNKNOWN_SYMBOL,
                f"unknown symbol(s): {', '.join(unknown)}",
                id=command.id,
                symbols=unknown,
            )

    async def _release_pending(self, symbol: str) -> None:
        """Deliver the live ticks held back while ``symbol``'s history was sent."""
        for event in self._pending.pop(symbol, ()):
            await self.tick_message(event)

    async def send_snapshot(self, symbol: str, joined_at: float) -> None:
        # A read shared with every subscriber that joined before it began.
        snap = await self._snapshots.read(symbol=symbol, joined_at=joined_at)
        self.last_seq[symbol] = snap.last_seq
        await self.send(text_data=snap.text)

    async def send_resume(
        self, symbol: str, since: int, epoch: str | None, joined_at: float
    ) -> None:
        found = await history.resume(symbol=symbol, since=since, epoch=epoch)
        if found.reset_reason is not None:
            await self.send_json({"type": "reset", "symbol": symbol, "reason": found.reset_reason})
            await self.send_snapshot(symbol, joined_at)
            return
        self.last_seq[symbol] = since
        self.send_ticks(found.ticks)
        await self.flush()

    def send_ticks(self, ticks: list[Tick]) -> None:
        for tick in ticks:
            self.last_seq[tick.symbol] = tick.seq
            self._batch.append(tick.to_json())

    async def flush(self) -> None:
        """Send what is waiting: one frame per tick, or one "ticks" frame when batching."""
        self._flush_task = None
        texts, self._batch = self._batch, []
        if not texts:
            return
        if self.batch_ms:
            texts = ['{"type":"ticks","ticks":[' + ",".join(texts) + "]}"]
        for text in texts:
            await self._send_frame({"type": "websocket.send", "text": text})

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.batch_ms / 1000)
        await self.flush()

    async def do_unsubscribe(self, command: Command) -> None:
        for symbol in command.symbols:
            # Drop it locally first so a tick already in flight is not delivered.
            self._pending.pop(symbol, None)
            if self.last_seq.pop(symbol, None) is not None:
                await self._fanout.discard(symbol, self)
        await self.send_json({"type": "unsubscribed", "id": command.id, "symbols": command.symbols})

    async def do_list(self, command: Command) -> None:
        await self.send_json(
            {"type": "subscriptions", "id": command.id, "symbols": sorted(self.last_seq)}
        )

    async def do_ping(self, command: Command) -> None:
        await self.send_json({"type": "pong", "id": command.id, "ts": now_ms()})

    async def tick_message(self, event: dict[str, Any]) -> None:
        """Called by LocalFanout with each tick of a symbol this connection holds."""
        symbol, seq = event["symbol"], event["seq"]
        pending = self._pending.get(symbol)
        if pending is not None:
            pending.append(event)
            return
        last = self.last_seq.get(symbol)
        if last is None or seq <= last:
            return  # unsubscribed, or already sent in a snapshot or replay
        if last and seq > last + 1:
            # The channel layer dropped some (a full queue): fill the hole, from this
            # process's recent ticks when it has them, else from history in Redis.
            texts = self._snapshots.cached_range(symbol=symbol, after_seq=last, before_seq=seq)
            if texts is None:
                missed = await history.ticks_after(
                    symbol=symbol, after_seq=last, limit=seq - last - 1
                )
                texts = [t.to_json() for t in missed if t.seq < seq]
            self._batch.extend(texts)
        self.last_seq[symbol] = seq
        # The publisher encoded the JSON once for every subscriber.
        self._batch.append(event["text"])
        if not self.batch_ms:
            await self.flush()
        elif self._flush_task is None:
            self._flush_task = asyncio.ensure_future(self._flush_later())
