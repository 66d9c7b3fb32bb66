"""Guard: what each connection may see, checked on subscribe and again every few seconds.

Exchanges license market data per user, so losing a right must take effect on open
connections, not only on the next connect (Centrifugo's channel tokens with expiry are
the model). Every ``ENTITLEMENT_RECHECK_SECONDS`` this process's guard, in one thread
hop for all its connections:

- closes with 4403 every connection whose token was revoked or expired, whose session
  ended, or whose user was deactivated;
- drops each subscription to a symbol its user may no longer see, and tells the client
  with ``{"type": "unsubscribed", "symbols": [...], "reason": "forbidden"}``; the
  connection and its other subscriptions carry on.

A user's rights are read once per round and reused by subscribes in between, so a
subscribe costs no database read of its own, unless the cached rights would refuse it:
a refusal is confirmed with a fresh read, so a right granted just now works at once.

The loop is supervised (telemetry.loops): a failed round (the database away) is logged
once, counted in ``ticker_loop_failures_total{loop="guard"}`` and tried again next
period; a bug that escapes the loop restarts it with backoff. It reports itself to
telemetry.probes as the loop ``guard`` (running, failing, stopped; its last round's
time), so /api/health/ says ``degraded`` when revocations are no longer enforced.
"""

import asyncio
import contextvars
import logging
import time
from typing import TYPE_CHECKING

from channels.db import database_sync_to_async
from django.conf import settings

from accounts.selectors import usable_token_ids
from markets.entitlements import NO_RIGHTS, Rights, rights_of
from telemetry import metrics, probes
from telemetry.loops import Rounds, supervise

from .auth import Identity, identify_session
from .faults import FaultLog
from .known import known_symbols
from .loops import PerLoop
from .protocol import CloseCode

if TYPE_CHECKING:
    from .connection import Connection

logger = logging.getLogger(__name__)

FORBIDDEN_REASON = "forbidden"
# Its name in telemetry.probes, the metrics' loop label and /api/health/.
LOOP_NAME = "guard"


class Guard:
    """This event loop's entitlement checks: rights on subscribe, revocation in between."""

    def __init__(self, *, interval: float) -> None:
        self.interval = interval
        self.connections: set[Connection] = set()
        self.faults = FaultLog(logger)
        self.revoked = 0  # connections closed with 4403
        self.dropped = 0  # subscriptions dropped for a lost right
        self._rights: dict[int, tuple[float, Rights]] = {}
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.rounds = Rounds(LOOP_NAME, period_s=interval)

    def watch(self, conn: "Connection") -> None:
        """Called when a connection opens."""
        self.connections.add(conn)
        if self._task is None or self._task.done():
            self._loop = asyncio.get_running_loop()
            # Not in the context of the connection that started it (its log lines).
            self._task = self._loop.create_task(
                supervise(LOOP_NAME, self._check_forever, faults=self.faults, rounds=self.rounds),
                context=contextvars.Context(),
            )
            probes.register_loop(LOOP_NAME, self, "status")

    def forget(self, conn: "Connection") -> None:
        """Called when a connection ends."""
        self.connections.discard(conn)

    async def aclose(self) -> None:
        probes.unregister_loop(LOOP_NAME, self)
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=2)
            self._task = None

    def status(self) -> probes.LoopStatus | None:
        """The loop's state for health checks (telemetry.probes); None once its event loop
        is closed (a test's)."""
        if self._loop is None or self._loop.is_closed():
            return None
        alive = self._task is not None and not self._task.done()
        busy = any(c.close_code is None for c in list(self.connections))
        return self.rounds.status(alive=alive, busy=busy)

    # --- reads for subscribe

    async def forbidden(self, identity: Identity, tickers: list[str]) -> list[str]:
        """Those of ``tickers`` that ``identity``'s user may not see."""
        restricted = await known_symbols().restricted()
        wanted = [t for t in tickers if t in restricted]
        if not wanted:
            return []
        rights, fresh = await self.rights(identity)
        refused = [t for t in wanted if not rights.allows(restricted[t])]
        if refused and not fresh:
            # Cached rights may allow, never refuse: a right granted since the last round
            # must work at once (a user told "not permitted" after the grant would not
            # know to retry). Refusals are rare and commands are rate-limited, so the
            # extra read is bounded.
            rights, _ = await self.rights(identity, fresh=True)
            refused = [t for t in refused if not rights.allows(restricted[t])]
        return refused

    async def rights(self, identity: Identity, *, fresh: bool = False) -> tuple[Rights, bool]:
        """``identity``'s rights, and whether they were read from the database just now."""
        if not identity.authenticated:
            return NO_RIGHTS, True
        cached = self._rights.get(identity.user.pk)
        if not fresh and cached is not None and time.monotonic() - cached[0] < self.interval:
            return cached[1], False
        rights = await database_sync_to_async(rights_of)(identity.user)
        self._rights[identity.user.pk] = (time.monotonic(), rights)
        return rights, True

    # --- the periodic check

    async def _check_forever(self) -> None:
        # A failed round (the database away) is logged once, counted, and the next round
        # tries again; the loop ends when no connection is left (watch() starts it again).
        # Anything else that escapes is supervise()'s: logged, counted, restarted.
        while self.connections:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.rounds.failed(exc)
                self.faults.report(
                    f"check:{type(exc).__name__}", "entitlement check failed: %r", exc, exc=exc
                )
            else:
                self.rounds.succeeded()

    async def check(self) -> None:
        """One round over every open connection (also called directly by tests)."""
        conns = [c for c in self.connections if c.close_code is None]
        if not conns:
            return
        restricted = await known_symbols().restricted()
        identities = {c.identity for c in conns if c.identity.authenticated}
        if not identities and not (restricted and any(c.subs or c.books for c in conns)):
            return
        valid, rights = await database_sync_to_async(_verify)(identities)
        now = time.monotonic()
        # Only users connected here now: the cache never outgrows this process's users.
        self._rights = {user_id: (now, r) for user_id, r in rights.items()}
        for conn in conns:
            identity = conn.identity
            if identity.authenticated and identity not in valid:
                self.revoked += 1
                metrics.REVOKED.inc()
                logger.info(
                    "closing a connection of %s: its credentials are no longer valid",
                    identity.user,
                )
                conn.end(CloseCode.FORBIDDEN)
                continue
            user_rights = (
                rights.get(identity.user.pk, NO_RIGHTS) if identity.authenticated else (NO_RIGHTS)
            )
            # Ticks and books of a symbol obey the same right: both streams are dropped.
            lost = [
                s
                for s in conn.symbols()
                if s in restricted and not user_rights.allows(restricted[s])
            ]
            if lost:
                self.dropped += len(lost)
                conn.unsubscribe(lost)
                conn.send({"type": "unsubscribed", "id": None, "symbols": lost,
                           "reason": FORBIDDEN_REASON})  # fmt: skip


def _verify(identities: set[Identity]) -> tuple[set[Identity], dict[int, Rights]]:
    """Which identities still hold, and each of their users' rights (synchronous)."""
    usable = usable_token_ids(token_ids={i.token_id for i in identities if i.token_id})
    valid: set[Identity] = set()
    rights: dict[int, Rights] = {}
    sessions: dict[str, Identity] = {}
    for identity in identities:
        if identity.token_id is not None:
            ok = identity.token_id in usable
        elif identity.session_key is not None:
            if identity.session_key not in sessions:
                sessions[identity.session_key] = identify_session(identity.session_key)
            now = sessions[identity.session_key]
            ok = now.authenticated and now.user.pk == identity.user.pk
        else:
            ok = False
        if ok:
            valid.add(identity)
            if identity.user.pk not in rights:
                rights[identity.user.pk] = rights_of(identity.user)
    return valid, rights


# This event loop's guard.
local_guard = PerLoop(lambda: Guard(interval=settings.ENTITLEMENT_RECHECK_SECONDS))
