"""Fired price alerts to the dashboards of their users: the web process's alert relay.

The evaluator (alerts.evaluator, in a Celery worker) sends each fired alert to its
user's channel-layer group (alerts.delivery.user_group_name). In each web process, one
``AlertRelay`` per event loop holds one channel that joins the group of every user with
an open, authenticated connection here, and writes each message to those connections'
outboxes, in order with everything else they are sent. Anonymous connections cost
nothing: the relay starts with the first signed-in one.

``PriceStreamWithAlerts`` is the consumer that streaming.routing serves: the price
protocol of streaming.consumer plus these hooks, kept here so the hot path's modules
stay as they are. A connection joins when it opens with a session or token, or when
an ``auth`` command names its user; it leaves when it ends.

An alert is written to a connection only if its user may see the alert's symbol, by the
guard's check (streaming.guard, the one a subscribe passes): the evaluator fires no
alert for an owner without the right (alerts.evaluator, "Rights"), and this keeps an
event fired just before a revocation from reaching a socket after it.
"""

import asyncio
import logging
import time
from collections import defaultdict

from channels.layers import get_channel_layer
from django.conf import settings

from alerts.delivery import ALERT_EVENT_TYPE, user_group_name

from .connection import Connection
from .consumer import PriceStreamConsumer
from .faults import FaultLog
from .guard import local_guard
from .loops import PerLoop
from .protocol import Command

logger = logging.getLogger(__name__)

RETRY_FIRST_SECONDS = 0.1
RETRY_MAX_SECONDS = 2.0


class AlertRelay:
    """This event loop's member of the user groups of its signed-in connections."""

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.channel: str | None = None
        self.users: dict[int, set[Connection]] = defaultdict(set)
        self.delivered = 0
        self.refused = 0  # alerts not written: the connection's user lost the right
        self.faults = FaultLog(logger)
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._renewed_at = time.monotonic()

    async def attach(self, conn: Connection) -> None:
        """Deliver the alerts of ``conn``'s user to it from now on (if it has a user)."""
        identity = conn.identity
        if not identity.authenticated or conn.close_code is not None:
            return
        user_id = identity.user.pk
        async with self._lock:
            if self.channel is None:
                self.channel = await self.layer.new_channel()
            if not self.users.get(user_id):
                await self.layer.group_add(user_group_name(user_id), self.channel)
            self.users[user_id].add(conn)
            if self._task is None or self._task.done():
                self._task = asyncio.ensure_future(self._receive_forever())

    def detach(self, conn: Connection) -> None:
        """Stop delivering to ``conn``; the group is left when its user has none here."""
        for user_id, conns in list(self.users.items()):
            if conn in conns:
                conns.discard(conn)
                if not conns:
                    del self.users[user_id]
                    task = asyncio.ensure_future(self._leave(user_id))
                    task.add_done_callback(_ignore_result)

    async def _leave(self, user_id: int) -> None:
        async with self._lock:
            if self.channel is not None and not self.users.get(user_id):
                await self.layer.group_discard(user_group_name(user_id), self.channel)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=2)
            self._task = None

    async def _receive_forever(self) -> None:
        delay = RETRY_FIRST_SECONDS
        while True:
            try:
                event = await self.layer.receive(self.channel)
                delay = RETRY_FIRST_SECONDS
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The layer is down: retry, then join again (a group may have expired).
                self.faults.report("alert-receive", "alert relay receive failed: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                await self._rejoin()
                continue
            if event.get("type") == ALERT_EVENT_TYPE:
                await self._deliver(event)
            if time.monotonic() - self._renewed_at > settings.CHANNEL_GROUP_RENEW_SECONDS:
                await self._rejoin()

    async def _deliver(self, event: dict) -> None:
        symbol = event.get("symbol")
        for conn in list(self.users.get(event.get("user_id"), ())):
            if conn.close_code is not None:
                continue
            try:
                refused = bool(symbol) and bool(
                    await local_guard().forbidden(conn.identity, [symbol])
                )
            except Exception as exc:
                # Rights unknown (the database away): not written; the history has it.
                self.faults.report("alert-rights", "alert rights check failed: %s", exc)
                refused = True
            if refused:
                self.refused += 1
            elif conn.close_code is None:
                conn.outbox.put_frame(event["text"])
                self.delivered += 1

    async def _rejoin(self) -> None:
        try:
            for user_id in list(self.users):
                await self.layer.group_add(user_group_name(user_id), self.channel)
            self._renewed_at = time.monotonic()
        except Exception as exc:
            self.faults.report("alert-rejoin", "alert relay could not rejoin: %s", exc)


_faults = FaultLog(logger)
# The relay of the running event loop (one per web process in production).
local_relay = PerLoop(AlertRelay)


async def close_local_relay() -> None:
    """Stop this loop's relay, if it has one (tests: one event loop per test)."""
    relay = local_relay.pop()
    if relay is not None:
        await relay.aclose()


class PriceStreamWithAlerts(PriceStreamConsumer):
    """The price protocol, plus the ``alert`` messages of the connection's user."""

    def ended(self, failed: bool) -> None:
        """Called when the consumer ends: its user's alerts are no longer sent here."""
        super().ended(failed)
        conn = getattr(self, "conn", None)
        if conn is not None:
            local_relay().detach(conn)

    async def connect(self) -> None:
        await super().connect()
        await self._join_alerts()

    async def do_auth(self, command: Command) -> None:
        await super().do_auth(command)  # raises, changing nothing, for a bad token
        local_relay().detach(self.conn)  # the user may have changed
        await self._join_alerts()

    async def _join_alerts(self) -> None:
        try:
            await local_relay().attach(self.conn)
        except Exception as exc:
            # Prices still flow; this connection just gets no live alerts (the history has them).
            _faults.report("alert-attach", "could not join alert delivery: %s", exc)


def _ignore_result(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()
