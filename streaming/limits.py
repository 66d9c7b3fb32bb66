"""Limits on what one client can make this process do (docs/protocol.md, "Limits").

- ``CommandLimiter``: a token bucket per connection (``WS_COMMAND_RATE`` commands/s,
  bursts of ``WS_COMMAND_BURST``). A command past it is dropped unread, and the
  consumer stops reading for the time one token takes to refill: the flooder's next
  frames stay in its socket and the kernel, not in this process. The drops are told
  in at most one ``rate_limited`` error per second, with a count. A connection that
  keeps flooding for ``WS_FLOOD_CLOSE_SECONDS`` is closed with 1008.
- ``ConnectionLimits``: ASGI middleware capping WebSockets per client address
  (``WS_MAX_CONNECTIONS_PER_IP``) and per process (``WS_MAX_CONNECTIONS``); a refused
  one is accepted and closed at once with 1013 and a reason. It also owns the 1008
  close: the close frame is written, then the socket is dropped without reading the
  megabytes a flooder has queued behind it.
- ``SubscriptionQuota``: subscriptions per user across that user's connections in
  this process (``WS_MAX_SUBSCRIPTIONS_PER_USER``); anonymous clients have only the
  per-connection limit.
"""

import asyncio
import itertools
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any

from django.conf import settings

from telemetry import logs, metrics

from .protocol import CloseCode, ErrorCode, ProtocolError, error_message

logger = logging.getLogger(__name__)

# At most one rate_limited error per this many seconds; a flood ends (for the 1008
# clock) after this long without an excess command.
REPORT_SECONDS = 1.0
# The longest the consumer stops reading for one excess command.
MAX_PAUSE_SECONDS = 1.0
# How long a connection closed with 1008 keeps its (unread) socket after the close
# frame, so the client can read that frame before the connection is reset.
DROP_GRACE_SECONDS = 1.0


class Verdict(Enum):
    RUN = "run"  # execute the command
    DROP = "drop"  # excess: not executed, counted, reported within REPORT_SECONDS
    CLOSE = "close"  # excess for WS_FLOOD_CLOSE_SECONDS: close with 1008


class CommandLimiter:
    """One connection's token bucket, its drop count and its flood clock."""

    def __init__(
        self,
        *,
        rate: float,
        burst: int,
        flood_seconds: float,
        report: Callable[[dict[str, Any]], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.flood_seconds = flood_seconds
        self._report = report
        self._clock = clock
        self.tokens = float(burst)
        self._refilled = clock()
        self.dropped = 0  # every excess command, for tests and logs
        self._unreported = 0
        self._last_report = -float("inf")
        self._flood_since: float | None = None
        self._last_drop = -float("inf")
        self._flush: asyncio.TimerHandle | None = None

    @classmethod
    def from_settings(cls, report: Callable[[dict[str, Any]], None]) -> "CommandLimiter":
        return cls(
            rate=settings.WS_COMMAND_RATE,
            burst=settings.WS_COMMAND_BURST,
            flood_seconds=settings.WS_FLOOD_CLOSE_SECONDS,
            report=report,
        )

    def admit(self) -> Verdict:
        """Called with each frame, before it is read: run it, drop it, or close."""
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        if self.tokens >= 1:
            self.tokens -= 1
            return Verdict.RUN
        self.dropped += 1
        self._unreported += 1
        if self._flood_since is None or now - self._last_drop > REPORT_SECONDS:
            self._flood_since = now
        self._last_drop = now
        if now - self._flood_since >= self.flood_seconds:
            return Verdict.CLOSE
        self._report_soon(now)
        return Verdict.DROP

    def pause(self) -> float:
        """Seconds until the next token: how long not to read after a drop."""
        return min(MAX_PAUSE_SECONDS, max(0.0, (1 - self.tokens) / self.rate))

    def flooding_for(self) -> float:
        """How long the current flood has lasted (0 when there is none)."""
        return 0.0 if self._flood_since is None else self._last_drop - self._flood_since

    def cancel(self) -> None:
        """The connection ended: no report is sent any more."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None

    def _report_soon(self, now: float) -> None:
        wait = self._last_report + REPORT_SECONDS - now
        if wait <= 0:
            self._send_report()
        elif self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(wait, self._send_report)

    def _send_report(self) -> None:
        self._flush = None
        if not self._unreported:
            return
        self._last_report = self._clock()
        msg = error_message(
            ErrorCode.RATE_LIMITED,
            f"over {self.rate:g} commands/s (bursts of {self.burst}): "
            f"{self._unreported} command(s) dropped unanswered",
        )
        msg["dropped"] = self._unreported
        msg["retry_after_ms"] = round(self.pause() * 1000)
        self._unreported = 0
        self._report(msg)


# --- Subscriptions per user


class UserSubscriptions:
    """Symbols held by each user across its connections in this process."""

    def __init__(self) -> None:
        self.held: Counter[Any] = Counter()

    def reserve(self, user_id: Any, n: int, *, limit: int) -> bool:
        """Count ``n`` more for ``user_id`` if that stays within ``limit``."""
        if n > 0 and self.held[user_id] + n > limit:
            return False
        self.release(user_id, -n)
        return True

    def release(self, user_id: Any, n: int) -> None:
        self.held[user_id] -= n
        if self.held[user_id] <= 0:
            del self.held[user_id]


user_subscriptions = UserSubscriptions()


def user_key(identity_or_user: Any) -> Any:
    """The id per-user limits count under; None for an anonymous client."""
    user = getattr(identity_or_user, "user", identity_or_user)
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return user.pk


class SubscriptionQuota:
    """One connection's share of its user's subscriptions (streaming.limits.user_subscriptions).

    The consumer calls ``check`` before subscribing and ``sync`` after anything that
    changes what the connection holds; ``sync`` also follows an ``auth`` that changed
    the user, and ``release`` ends it. Anything that dropped subscriptions meanwhile (a
    lost right, a slow consumer) is counted again at the next ``check`` or ``sync``.
    """

    def __init__(self, registry: UserSubscriptions | None = None) -> None:
        self.registry = registry or user_subscriptions
        self.user: Any = None
        self.counted = 0

    def check(self, user: Any, held: int, adding: int, *, id: Any = None) -> None:
        """Raise too_many_symbols if holding ``adding`` more would pass the user's limit."""
        self.sync(user, held)
        if self.user is None or adding <= 0:
            return
        limit = settings.WS_MAX_SUBSCRIPTIONS_PER_USER
        if not self.registry.reserve(self.user, adding, limit=limit):
            raise ProtocolError(
                ErrorCode.TOO_MANY_SYMBOLS,
                f"subscribing would hold more than {limit} symbols across this user's "
                "connections (WS_MAX_SUBSCRIPTIONS_PER_USER)",
                id=id,
            )
        self.counted += adding

    def sync(self, user: Any, held: int) -> None:
        """Count exactly ``held`` symbols for ``user`` (an identity, a user, or None)."""
        key = user_key(user)
        if key != self.user:
            self.release()
            self.user = key
        if self.user is None:
            return
        self.registry.reserve(self.user, held - self.counted, limit=1 << 62)
        self.counted = held

    def release(self) -> None:
        if self.user is not None and self.counted:
            self.registry.release(self.user, self.counted)
        self.counted = 0


# --- Connections per address and per process; the 1008 close


SLOT_KEY = "ticker.limits"


class Slot:
    """One admitted WebSocket: the server's own send and transport, to close hard."""

    __slots__ = ("dropped", "send", "server", "transport")  # one per connection

    def __init__(self, send: Callable[[dict], Awaitable[None]]) -> None:
        self.send = send
        # uvicorn passes its protocol's bound send: that protocol holds the transport.
        self.server = getattr(send, "__self__", None)
        transport = getattr(self.server, "transport", None)
        # Duck-typed: uvloop's transports do not derive from asyncio's.
        self.transport = transport if callable(getattr(transport, "abort", None)) else None
        self.dropped = False

    async def close_and_drop(self, code: int, reason: str) -> None:
        """Send a close frame, stop reading at once, and drop the socket soon after.

        uvicorn resumes reading after a close to wait for the peer's echo: behind a
        flooder's close sit megabytes it would parse first, stalling every client of
        the process for a second or more. Here, in the same event-loop turn as the
        close frame is written, reading is paused again and the server's side is shut
        (FIN after the close frame), so the client can read the 1008; DROP_GRACE_SECONDS
        later the connection is aborted (the kernel resets it over the unread bytes).
        Nothing the client queued is ever read. A client that is not reading either
        (its socket full: the close frame cannot go out) is aborted at once.
        """
        self.dropped = True
        message = {"type": "websocket.close", "code": code, "reason": reason}
        writable = getattr(self.server, "writable", None)
        transport = self.transport
        if transport is None or not isinstance(writable, asyncio.Event):
            # Another server: a normal close, bounded in time; it reads as it reads.
            await _quietly(asyncio.wait_for(self.send(message), timeout=5))
            return
        if not writable.is_set():
            transport.abort()
            return
        # uvicorn's send does not wait when writable: the frame is written and reading
        # paused again with no event-loop turn (so no read) in between.
        await _quietly(self.send(message))
        try:
            transport.pause_reading()
            if transport.can_write_eof():
                transport.write_eof()
        except Exception as exc:  # already closing: nothing left to stop
            logger.debug("pausing a dropped connection: %r", exc)
        asyncio.get_running_loop().call_later(DROP_GRACE_SECONDS, transport.abort)


async def _quietly(aw: Awaitable[None]) -> None:
    try:
        await aw
    except Exception as exc:  # the client is gone already: nothing to close
        logger.debug("close while dropping: %r", exc)


DISCONNECTED = {"type": "websocket.disconnect", "code": CloseCode.POLICY_VIOLATION}


class ConnectionLimits:
    """ASGI middleware: WebSocket caps per client address and per process, and the Slot.

    The client address is ``scope["client"]``: the peer, or the forwarded address when
    uvicorn's --proxy-headers trusts the proxy (FORWARDED_ALLOW_IPS). A refused
    connection is accepted and closed with 1013 (try again later) and a reason, which
    a browser's ``CloseEvent`` shows; an HTTP refusal of the handshake would not.
    """

    def __init__(self, app: Callable) -> None:
        self.app = app
        self.per_address: Counter[str | None] = Counter()
        self.total = 0

    def refusal(self, address: str | None) -> str | None:
        if self.total >= settings.WS_MAX_CONNECTIONS:
            return "server at its connection limit; try again later"
        if self.per_address[address] >= settings.WS_MAX_CONNECTIONS_PER_IP:
            return "too many connections from this address; try again later"
        return None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "websocket":
            return await self.app(scope, receive, send)
        client = scope.get("client")
        address = client[0] if client else None
        # Every log line about this connection carries its id (telemetry.logs).
        logs.connection_id.set(new_connection_id())
        reason = self.refusal(address)
        if reason is not None:
            metrics.WS_CLOSES.labels(str(CloseCode.TRY_AGAIN_LATER), "server").inc()
            await refuse(receive, send, reason)
            return None
        slot = Slot(send)

        async def guarded_receive() -> dict:
            # After a 1008 drop nothing more is read: the app sees the end at once.
            if slot.dropped:
                return DISCONNECTED
            return await receive()

        self.per_address[address] += 1
        self.total += 1
        try:
            return await self.app({**scope, SLOT_KEY: slot}, guarded_receive, send)
        finally:
            self.total -= 1
            self.per_address[address] -= 1
            if self.per_address[address] <= 0:
                del self.per_address[address]


_ids = itertools.count(1)
_process_tag = f"{os.getpid():x}"


def new_connection_id() -> str:
    """Unique within the host: the process id and a counter, e.g. ``1f3a-42``."""
    return f"{_process_tag}-{next(_ids)}"


async def refuse(receive: Callable, send: Callable, reason: str) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": CloseCode.TRY_AGAIN_LATER, "reason": reason})


async def close_for_flooding(consumer: Any) -> None:
    """Close a connection that kept flooding with 1008, then drop its socket unread."""
    conn = consumer.conn
    if conn.close_code is not None:
        return
    logger.info(
        "closing a connection from %s that flooded commands for %.0f s (%d dropped)",
        (consumer.scope.get("client") or ("?",))[0],
        consumer.limiter.flooding_for(),
        consumer.limiter.dropped,
    )
    consumer.limiter.cancel()
    slot: Slot | None = consumer.scope.get(SLOT_KEY)
    if slot is None:  # no ConnectionLimits in front: an ordinary close
        conn.end(CloseCode.POLICY_VIOLATION)
        return
    conn.close_code = CloseCode.POLICY_VIOLATION
    conn.detach()
    await slot.close_and_drop(CloseCode.POLICY_VIOLATION, "command rate limit exceeded")
