"""The alert evaluator: judges every tick of the symbols that have active alerts, once.

It runs in a Celery worker (alerts.tasks), not in a browser, so an alert fires whether
or not any dashboard is open. One loop at a time holds the evaluator lease (Redis); the
others wait as standbys and take over within ALERT_EVALUATOR_LEASE_SECONDS.

**Reading.** Ticks come from the symbols' history streams (markets.history; entry id
``<seq>-0``) with XREAD, from a cursor per symbol kept in the database
(``EvaluatorCursor``: epoch and last judged seq). XREAD blocks until a tick arrives, so
a crossing is judged within milliseconds of being published.

**Crossing.** A tick is *above* an alert's price when ``price >= X`` and *below* when
``price < X``. "Crosses above X" fires on a tick that is above after the alert's previous
judged tick was below; "crosses below X" the other way round. The side of the last tick
is kept per alert (``last_side``): it is set from the last price when the alert is
created or edited (alerts.services), and an alert whose side is still unknown (its
symbol had no tick yet) takes it from its first tick without firing. Ticks at or before
``armed_after_seq`` (the last seq when the alert was created or edited) are not judged
against it. A one-shot alert switches itself off when it fires; a ``repeat`` alert fires
again at the next crossing, which needs the price to go back first.

**Exactly once.** For each batch of a symbol's ticks that changes anything, one short
database transaction writes the events (the user's alert history), the alerts' new state
and the cursor, and the cursor moves by compare-and-set (``WHERE last_seq = <the stored
cursor>``). A batch that changes nothing is not stored at once (the cursor is written at
least every CHECKPOINT_SECONDS): judging is a pure function of the stored state and the
ticks, so judging those ticks again changes nothing again. Another
evaluator that judged the same batch (after a failover, or a stalled lease holder) finds
the cursor moved and rolls back, and a crash before the commit leaves everything as it
was, so the batch is judged again from the same state. Either way each crossing is
stored once. The unique (alert, epoch, seq) constraint on events is a second fence.

**Rights.** An alert fires only while its owner may see its symbol
(markets.entitlements), or a revoked user would go on learning a restricted symbol's
prices through their alerts. Judging itself reads no rights (it runs per batch of ticks);
a batch that fires events on a restricted symbol checks the owners' rights as the
database has them inside the transaction that stores the events, after the cursor's
write (on SQLite that write holds the lock, so a revocation commits either before the
check or after the events), and the alerts of owners who lost the right are switched off
instead (alerts.services, ``off_reason = "forbidden"``), the batch judged again without
them. Every ENTITLEMENT_RECHECK_SECONDS the evaluator also switches off every active
alert whose owner lost the right (``switch_off_unentitled``), so the dashboard says so
without waiting for a crossing.

**Delivery.** After the commit, each event goes to its user's channel-layer group
(alerts.delivery); web processes relay it to the user's open dashboards as an ``alert``
message (streaming.alerts). Delivery is at most once: an event whose send fails, or
whose evaluator dies between commit and send, is still in the history
(GET /api/alerts/history), which the dashboard reads when it loads.
"""

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable

import redis
from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import close_old_connections, transaction
from django.utils import timezone

from markets import keys as market_keys
from markets.entitlements import unentitled
from markets.redis import by_shard, new_sync_client, sync_redis_for
from markets.ticks import Tick
from telemetry.metrics import REDIS_ERRORS

from . import services
from .delivery import channel_event, user_group_name
from .keys import evaluator_lease_key
from .models import AlertEvent, EvaluatorCursor, PriceAlert

logger = logging.getLogger(__name__)

# The cursor is stored with every change (an event, an alert's new side) and otherwise at
# least this often, so the database sees few writes while prices move without crossing.
CHECKPOINT_SECONDS = 5.0


def side_of(price: float, threshold: float) -> str:
    return "above" if price >= threshold else "below"


def crosses(direction: str, last_side: str, side: str) -> bool:
    """Whether moving from ``last_side`` to ``side`` is a crossing in ``direction``."""
    return bool(last_side) and last_side != side and side == direction


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


def sync_redis() -> redis.Redis:
    """A client of REDIS_URL of the evaluator's own (markets.redis builds every client)."""
    return new_sync_client()


class Conflict(Exception):
    """Another evaluator moved the cursor first: this batch was judged already."""


class ChannelLayerDelivery:
    """Sends events to their users' groups from a thread of its own (its own event loop)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)

    def __call__(self, events: list[AlertEvent]) -> None:
        async def send_all() -> None:
            for event in events:
                await self.layer.group_send(user_group_name(event.user_id), channel_event(event))

        try:
            self.loop.run_until_complete(send_all())
        except Exception as exc:
            # Stored all the same: the history shows it (at most once, live).
            logger.warning("alert delivery failed (%s: %s)", type(exc).__name__, exc)

    def close(self) -> None:
        self.loop.close()


class Evaluator:
    """Judges ticks against alerts; ``step()`` is one XREAD and the batches it returned."""

    def __init__(
        self,
        *,
        client: redis.Redis | None = None,
        deliver: Callable[[list[AlertEvent]], None] | None = None,
        batch: int = 1000,
    ) -> None:
        self.redis = client or sync_redis()
        self.deliver = deliver if deliver is not None else ChannelLayerDelivery()
        self.batch = batch
        # Called inside the transaction, before the commit (tests inject crashes here).
        self.before_commit: Callable[[list[AlertEvent]], None] | None = None
        self.fired = 0
        self.conflicts = 0
        self.ticks = 0
        self.idle = True
        # Per symbol: (epoch, seq) judged up to, which may be ahead of the stored cursor
        # when the ticks since changed nothing, and when the cursor was last stored.
        self.positions: dict[str, tuple[str, int]] = {}
        self.checkpointed: dict[str, float] = {}
        self.switched_off = 0  # alerts switched off for a lost right
        self._swept_at = float("-inf")

    # --- what to read

    def watched_symbols(self) -> list[str]:
        return sorted(set(PriceAlert.objects.filter(active=True).values_list("symbol", flat=True)))

    def _by_host(self, symbols: list[str]) -> list[tuple[redis.Redis, list[str]]]:
        """``symbols`` with the client of the host holding their keys (markets.redis); on
        one Redis all of them with ``self.redis``."""
        if len(settings.REDIS_SHARD_URLS) == 1:
            return [(self.redis, symbols)]
        return [(sync_redis_for(g[0]), g) for g in by_shard(symbols).values()]

    def _epochs(self, symbols: list[str]) -> dict[str, str]:
        epochs: dict[str, str] = {}
        for client, group in self._by_host(symbols):
            pipe = client.pipeline(transaction=False)
            for symbol in group:
                pipe.get(market_keys.epoch_key(symbol))
            epochs.update((s, _text(e)) for s, e in zip(group, pipe.execute(), strict=True))
        return epochs

    def _cursors(self, symbols: list[str], epochs: dict[str, str]) -> dict[str, EvaluatorCursor]:
        """Each symbol's cursor, made where missing, moved to its current epoch where that
        changed (Redis lost the counter), and moved past ticks no active alert can see."""
        cursors = {c.symbol: c for c in EvaluatorCursor.objects.filter(symbol__in=symbols)}
        # The lowest seq an active alert may still judge, per symbol (0: from the start).
        floors: dict[str, int] = {}
        armed = PriceAlert.objects.filter(symbol__in=symbols, active=True)
        for symbol, epoch, after in armed.values_list("symbol", "epoch", "armed_after_seq"):
            after = after if epoch == epochs[symbol] else 0
            floors[symbol] = min(floors.get(symbol, after), after)
        for symbol in symbols:
            epoch = epochs[symbol]
            cursor = cursors.get(symbol)
            if cursor is None:
                cursor, _ = EvaluatorCursor.objects.get_or_create(
                    symbol=symbol, defaults={"epoch": epoch, "last_seq": floors.get(symbol, 0)}
                )
            if epoch and cursor.epoch != epoch:
                self._new_epoch(cursor, epoch)
            floor = floors.get(symbol, 0)
            if cursor.last_seq < floor:
                # Nothing at or below the lowest armed seq is judged: skip it, by CAS.
                EvaluatorCursor.objects.filter(
                    pk=cursor.pk, epoch=cursor.epoch, last_seq=cursor.last_seq
                ).update(last_seq=floor, updated=timezone.now())
            cursor.refresh_from_db()
            cursors[symbol] = cursor
        return cursors

    def _new_epoch(self, cursor: EvaluatorCursor, epoch: str) -> None:
        """The symbol's seq counter restarted: judge the new numbering from its start."""
        logger.warning("alerts: %s has a new seq epoch %s; cursor restarts", cursor.symbol, epoch)
        with transaction.atomic():
            EvaluatorCursor.objects.filter(pk=cursor.pk).exclude(epoch=epoch).update(
                epoch=epoch, last_seq=0, updated=timezone.now()
            )
            PriceAlert.objects.filter(symbol=cursor.symbol).exclude(epoch=epoch).update(
                epoch=epoch, armed_after_seq=0
            )

    # --- one round

    def step(self, *, block_ms: int = 500) -> int:
        """Read what the cursors have not judged yet (waiting up to ``block_ms`` for it),
        judge it, and return how many alerts fired."""
        if time.monotonic() - self._swept_at >= settings.ENTITLEMENT_RECHECK_SECONDS:
            self.switched_off += services.switch_off_unentitled()
            self._swept_at = time.monotonic()
        symbols = self.watched_symbols()
        self.idle = not symbols
        if not symbols:
            return 0
        epochs = self._epochs(symbols)
        cursors = self._cursors(symbols, epochs)
        by_key = {market_keys.history_key(s): s for s in symbols}
        hosts = self._by_host(symbols)

        def read(client: redis.Redis, group: list[str], block: int | None) -> list:
            # From where this evaluator judged up to (maybe past the stored cursor).
            streams = {market_keys.history_key(s): f"{self._start(s, cursors[s])}-0" for s in group}
            return client.xread(streams, count=self.batch, block=block) or []

        if len(hosts) == 1:
            reply = read(*hosts[0], block_ms or None)
        else:
            # Several hosts (markets.redis): a look at each without waiting; if none had
            # anything, each waits its share of ``block_ms`` in turn until one has.
            reply = [entry for client, group in hosts for entry in read(client, group, None)]
            waits = hosts if block_ms and not reply else []
            for client, group in waits:
                reply = read(client, group, max(1, block_ms // len(hosts)))
                if reply:
                    break
        fired = 0
        for key, entries in reply:
            symbol = by_key[_text(key)]
            ticks = [Tick.from_stream_entry(symbol, eid, fields) for eid, fields in entries]
            fired += self.judge(symbol, epochs[symbol], ticks)
        return fired

    def _start(self, symbol: str, cursor: EvaluatorCursor) -> int:
        mine = self.positions.get(symbol)
        if mine is not None and mine[0] == cursor.epoch and mine[1] > cursor.last_seq:
            return mine[1]
        return cursor.last_seq

    def judge(self, symbol: str, epoch: str, ticks: list[Tick]) -> int:
        """Judge ``ticks`` (ascending seq) of ``symbol``; store what changed in one short
        transaction that moves the cursor by compare-and-set; deliver after it."""
        cursor = EvaluatorCursor.objects.get(symbol=symbol)
        if cursor.epoch != epoch:
            self.conflicts += 1
            return 0
        mine = self.positions.get(symbol)
        start = cursor.last_seq
        if mine is not None and mine[0] == epoch and mine[1] > start:
            start = mine[1]  # judged up to here already, with nothing to store
        ticks = [t for t in ticks if t.seq > start]
        if not ticks:
            return 0
        events, changed = self._judge(symbol, epoch, ticks)
        now = time.monotonic()
        due = now - self.checkpointed.get(symbol, 0.0) >= CHECKPOINT_SECONDS
        if events or changed or due:
            try:
                with transaction.atomic():
                    # The write first: on SQLite it takes the write lock at once.
                    moved = EvaluatorCursor.objects.filter(
                        pk=cursor.pk, epoch=epoch, last_seq=cursor.last_seq
                    ).update(last_seq=ticks[-1].seq, updated=timezone.now())
                    if moved != 1:
                        raise Conflict
                    if events:
                        events, changed = self._entitled(symbol, epoch, ticks, events, changed)
                    for alert in changed:
                        # Written only if the user did not edit it meanwhile (``updated``
                        # is its version): an edit re-arms it from the price at that moment.
                        PriceAlert.objects.filter(pk=alert.pk, updated=alert.updated).update(
                            last_side=alert.last_side, active=alert.active,
                            fired_count=alert.fired_count, last_fired=alert.last_fired,
                        )  # fmt: skip
                    if events:
                        events = AlertEvent.objects.bulk_create(events)
                    if self.before_commit is not None:
                        self.before_commit(events)
            except Conflict:
                # Another evaluator judged these first; start again from its cursor.
                self.conflicts += 1
                self.positions.pop(symbol, None)
                return 0
            except Exception:
                self.positions.pop(symbol, None)
                raise
            self.checkpointed[symbol] = now
        self.positions[symbol] = (epoch, ticks[-1].seq)
        self.ticks += len(ticks)
        self.fired += len(events)
        if events:
            self.deliver(events)
        return len(events)

    def _entitled(
        self,
        symbol: str,
        epoch: str,
        ticks: list[Tick],
        events: list[AlertEvent],
        changed: list[PriceAlert],
    ) -> tuple[list[AlertEvent], list[PriceAlert]]:
        """``events`` and ``changed`` without the alerts of owners who may not see
        ``symbol`` now, which are switched off ("Rights"). Called in the transaction."""
        owners = get_user_model()._default_manager.in_bulk({e.user_id for e in events})
        refused = {
            user_id for user_id, _ in unentitled((owner, symbol) for owner in owners.values())
        }
        refused |= {e.user_id for e in events} - set(owners)
        if not refused:
            return events, changed
        self.switched_off += services.switch_off_forbidden(
            PriceAlert.objects.filter(symbol=symbol, user_id__in=refused)
        )
        return self._judge(symbol, epoch, ticks, skip_users=refused)

    def _judge(
        self, symbol: str, epoch: str, ticks: list[Tick], *, skip_users: set[int] = frozenset()
    ) -> tuple[list[AlertEvent], list[PriceAlert]]:
        """The events ``ticks`` fire and the alerts whose state they change (nothing stored).

        Judging is a pure function of the stored alert state and the ticks, so ticks that
        changed nothing need not be recorded at once: judged again (after a crash, or by
        another evaluator from the stored cursor) they change nothing again.
        """
        now = timezone.now()
        events: list[AlertEvent] = []
        changed: list[PriceAlert] = []
        alerts = PriceAlert.objects.filter(symbol=symbol, active=True).exclude(
            user_id__in=skip_users
        )
        for alert in alerts.order_by("id"):
            threshold = float(alert.price)
            armed_after = alert.armed_after_seq if alert.epoch == epoch else 0
            before = (alert.last_side, alert.active, alert.fired_count)
            for tick in ticks:
                if tick.seq <= armed_after:
                    continue
                side = side_of(tick.price, threshold)
                if crosses(alert.direction, alert.last_side, side):
                    events.append(
                        AlertEvent(
                            user_id=alert.user_id, alert=alert, symbol=symbol,
                            direction=alert.direction, threshold=alert.price,
                            price=tick.price, seq=tick.seq, epoch=epoch, tick_ts=tick.ts,
                            fired_at=now,
                        )
                    )  # fmt: skip
                    alert.fired_count += 1
                    alert.last_fired = now
                    if not alert.repeat:
                        alert.active = False
                alert.last_side = side
                if not alert.active:
                    break
            if (alert.last_side, alert.active, alert.fired_count) != before:
                changed.append(alert)
        return events, changed

    def close(self) -> None:
        close = getattr(self.deliver, "close", None)
        if close is not None:
            close()


# --- one evaluator at a time

_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


class EvaluatorLease:
    """The Redis lease that lets one evaluator loop run at a time (the rest are standbys).

    Correctness does not rest on it (the cursors' compare-and-set does); it keeps the
    standbys from doing the same work and contending for the database.
    """

    def __init__(self, client: redis.Redis, *, token: str, ttl_seconds: float) -> None:
        self.token = token
        self.ttl_ms = int(ttl_seconds * 1000)
        self._renew = client.register_script(_RENEW_LUA)
        self._release = client.register_script(_RELEASE_LUA)

    def hold(self) -> bool:
        """Take the lease, or extend it if it is ours; False while another loop holds it."""
        return bool(self._renew(keys=[evaluator_lease_key()], args=[self.token, self.ttl_ms]))

    def release(self) -> None:
        self._release(keys=[evaluator_lease_key()], args=[self.token])


def run_evaluator_blocking(stop: threading.Event, *, worker: str = "") -> None:
    """Evaluate until ``stop`` is set, while holding the lease; wait as a standby otherwise."""
    client = sync_redis()
    ttl = settings.ALERT_EVALUATOR_LEASE_SECONDS
    lease = EvaluatorLease(client, token=f"{worker}:{uuid.uuid4().hex}", ttl_seconds=ttl)
    evaluator = Evaluator(client=client)
    block_ms = max(50, int(ttl * 1000 / 4))
    holding = False
    failing = 0  # rounds failed in a row: logged once, with the first one's traceback
    try:
        while not stop.is_set():
            close_old_connections()
            try:
                held = lease.hold()
                if failing:  # Redis answered
                    logger.warning("alerts: Redis answers again after %d failed rounds", failing)
                    failing = 0
                if not held:
                    if holding:
                        logger.warning("alerts: evaluator lease lost; standing by")
                    holding = False
                    stop.wait(ttl / 3)
                    continue
                if not holding:
                    logger.info("alerts: evaluating (%s)", worker)
                holding = True
                evaluator.step(block_ms=block_ms)
                if evaluator.idle:
                    stop.wait(block_ms / 1000)
            except Exception as exc:
                if isinstance(exc, redis.RedisError):
                    REDIS_ERRORS.labels("alerts").inc()
                if not failing:
                    # A Redis failover fails every round until it ends: once, not per round.
                    logger.exception("alerts: evaluation round failed; trying again every 1 s")
                failing += 1
                stop.wait(1.0)
    finally:
        try:
            lease.release()
        except redis.RedisError:
            pass
        evaluator.close()
        client.close()
