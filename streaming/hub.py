"""Hub: each web process receives a tick once and hands it to its symbol's feed.

With one channel-layer member per connection, every tick would cost one channel-layer
message per subscriber (benchmarks/RESULTS.md, rounds 3 and 4). Instead one member per
process joins each symbol's group (markets.symbols.symbol_group_name), and the hub
passes the pre-encoded tick to that symbol's SymbolFeed, which queues it in each
subscriber's outbox. Nothing here awaits a socket.

The hub's two loops never end on an error:

- the receive loop retries a failing channel layer with backoff; when it answers
  again, the hub rejoins every group and catches each feed up from history once per
  process, or resets its subscribers where history no longer reaches back;
- the housekeeping loop renews group membership well before the layer's
  ``group_expiry`` and lets go of feeds nobody has watched for a while.
"""

import asyncio
import contextvars
import json
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from channels.layers import get_channel_layer
from django.conf import settings

from markets import history
from markets.books import BOOK_EVENT_TYPE
from markets.publishing import TICK_EVENT_TYPE
from markets.symbols import symbol_group_name
from telemetry import metrics, probes
from telemetry.loops import supervise

from .faults import FaultLog
from .feed import SymbolFeed
from .loops import PerLoop
from .outbox import ROUND
from .subscription import BookSubscription, Subscription

logger = logging.getLogger(__name__)

S = TypeVar("S", Subscription, BookSubscription)

RETRY_FIRST_SECONDS = 0.1
RETRY_MAX_SECONDS = 1.0
# How often the hub adds its counts to the metrics (telemetry.metrics.flush).
REPORT_SECONDS = 1.0


class Hub:
    """This event loop's single group member per symbol, and its feeds."""

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.feeds: dict[str, SymbolFeed] = {}
        self.channel: str | None = None
        self.faults = FaultLog(logger)
        self.recoveries = 0
        self.resets = 0
        self.refills = 0
        self.stale_ticks = 0
        self.renewed_at = 0.0
        self.renew_seconds = settings.CHANNEL_GROUP_RENEW_SECONDS
        self.idle_seconds = settings.FEED_IDLE_SECONDS
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []
        # Feeds whose numbering may have restarted (a tick far behind the last one).
        self._suspect: set[str] = set()
        # Whether ticks reach this process later than MAX_TICK_AGE_MS (it is behind).
        self.behind = False
        self.behind_episodes = 0
        self.max_age_ms = settings.MAX_TICK_AGE_MS
        # The receive loop's state for health checks: "running" or "recovering".
        self.receive_state = "running"
        self.receive_state_since = _wall_ms()
        self._reported_symbols: set[str] = set()
        probes.register_delivery(self, "delivery")

    # --- subscriptions

    async def subscribe(self, symbol: str, make: Callable[[SymbolFeed], S]) -> S:
        """Join ``symbol``'s group if needed; ticks (or book changes) published from now on
        reach the result."""
        async with self._lock:
            if self.channel is None:
                self.channel = await self._new_channel()
            feed = self.feeds.get(symbol)
            if feed is None:
                await self.layer.group_add(symbol_group_name(symbol), self.channel)
                feed = self.feeds[symbol] = SymbolFeed(symbol)
                feed.joined = True
            sub = make(feed)
            if isinstance(sub, BookSubscription):
                feed.add_book_subscriber(sub)
            else:
                feed.subscribers.add(sub)
            feed.idle_since = None
            if not self._tasks:
                # A context of their own: the loops serve every connection, so their log
                # lines must not carry the id of the one that happened to start them.
                loop = asyncio.get_running_loop()
                self._tasks = [
                    loop.create_task(self._supervise(fn), context=contextvars.Context())
                    for fn in (self._receive_forever, self._housekeep_forever, self._report_forever)
                ]
            return sub

    def unsubscribe(self, sub: Subscription | BookSubscription) -> None:
        """Stop delivering to ``sub`` at once; the group is left later if nobody returns."""
        feed = sub.feed
        if isinstance(sub, BookSubscription):
            feed.discard_book_subscriber(sub)
        else:
            feed.subscribers.discard(sub)
        sub.close()
        if not feed.has_subscribers():
            feed.idle_since = time.monotonic()

    async def aclose(self) -> None:
        """Stop the loops (tests and shutdown); subscriptions stop receiving ticks."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Bounded: a Redis read being cancelled may take a while to unwind.
            await asyncio.wait(self._tasks, timeout=2)
        self._tasks = []

    # --- the loops

    async def _supervise(self, loop_fn: Callable[[], Any]) -> None:
        """Run ``loop_fn`` forever: a bug that escapes it is logged once and it restarts."""
        await supervise(loop_fn.__name__.strip("_"), loop_fn, faults=self.faults)

    async def _new_channel(self) -> str:
        if hasattr(self.layer, "receive_many"):
            # markets.layer: a channel of the hub's own, read in batches.
            return self.layer.new_batch_channel("hub")
        return await self.layer.new_channel()

    async def _receive(self) -> list[dict]:
        if hasattr(self.layer, "receive_many"):
            # Every tick queued since the last read in one round trip; a read cancelled
            # in flight (only at shutdown) may lose ticks, which _refill would fetch.
            return await self.layer.receive_many(self.channel)
        return [await self.layer.receive(self.channel)]

    async def _receive_forever(self) -> None:
        while True:
            try:
                events = await self._receive()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._recover_after(exc)
                continue
            # Each connection's ticks of the batch leave together (streaming.outbox).
            with ROUND:
                for event in events:
                    kind = event.get("type")
                    if kind == TICK_EVENT_TYPE:
                        await self._on_tick(event)
                    elif kind == BOOK_EVENT_TYPE:
                        self._on_book(event)
            if self._suspect:
                await self._check_suspects()

    async def _recover_after(self, exc: Exception) -> None:
        """Retry until the layer answers, then rejoin every group and catch every feed up."""
        started = time.monotonic()
        metrics.CHANNEL_LAYER_ERRORS.labels("receive").inc()
        self._set_receive_state("recovering")
        logger.error("channel layer receive failed (%s: %s); retrying", type(exc).__name__, exc)
        delay = RETRY_FIRST_SECONDS
        attempts = 0
        while True:
            attempts += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)
            try:
                await self._rejoin()
                for feed in list(self.feeds.values()):
                    await self._catch_up(feed)
                    if feed.book is not None:
                        feed.book.refresh()  # its messages of the outage are lost too
            except asyncio.CancelledError:
                raise
            except Exception as retry_exc:
                metrics.CHANNEL_LAYER_ERRORS.labels("recover").inc()
                self.faults.report("recover", "channel layer still failing: %s", retry_exc)
                continue
            self.recoveries += 1
            metrics.RECOVERIES.inc()
            self._set_receive_state("running")
            logger.warning(
                "channel layer back after %.1f s and %d attempts; %d feeds caught up",
                time.monotonic() - started, attempts, len(self.feeds),
            )  # fmt: skip
            return

    async def _rejoin(self) -> None:
        for symbol in list(self.feeds):
            await self.layer.group_add(symbol_group_name(symbol), self.channel)
        self.renewed_at = time.monotonic()

    async def _report_forever(self) -> None:
        """Every REPORT_SECONDS: this process's counts and gauges into the metrics."""
        while True:
            self.report()
            await asyncio.sleep(REPORT_SECONDS)

    def report(self) -> None:
        metrics.flush()
        metrics.RECEIVE_LOOP_UP.labels("receive").set(1 if self.receive_state == "running" else 0)
        current = set()
        for symbol, feed in list(self.feeds.items()):
            metrics.SUBSCRIPTIONS.labels(symbol).set(len(feed.subscribers))
            current.add(symbol)
        for symbol in self._reported_symbols - current:
            metrics.SUBSCRIPTIONS.labels(symbol).set(0)
        self._reported_symbols = current

    def _set_receive_state(self, state: str) -> None:
        self.receive_state = state
        self.receive_state_since = _wall_ms()
        metrics.RECEIVE_LOOP_UP.labels("receive").set(1 if state == "running" else 0)

    def delivery(self) -> probes.Delivery:
        """This process's fan-out, for health checks (telemetry.probes)."""
        receive = self._tasks[0] if self._tasks else None
        state = self.receive_state
        if receive is None or receive.done():
            state = "stopped" if self._tasks else "idle"
        return probes.Delivery(
            receive_loop=state,
            since_ms=self.receive_state_since,
            symbols={
                symbol: probes.SymbolDelivery(
                    subscribers=len(feed.subscribers),
                    last_received_ms=int(feed.received_ms) if feed.received_ms else None,
                    last_ts=feed.last_ts,
                )
                for symbol, feed in list(self.feeds.items())
            },
        )

    async def _housekeep_forever(self) -> None:
        period = max(0.5, min(self.renew_seconds, self.idle_seconds) / 2)
        self.renewed_at = time.monotonic()
        while True:
            await asyncio.sleep(period)
            try:
                await self._drop_idle_feeds()
                if time.monotonic() - self.renewed_at >= self.renew_seconds:
                    await self._rejoin()
            except Exception as exc:
                metrics.CHANNEL_LAYER_ERRORS.labels("housekeeping").inc()
                # The receive loop sees the same outage and recovers; try again next period.
                self.faults.report("housekeeping", "group renewal failed: %s", exc)

    async def _drop_idle_feeds(self) -> None:
        now = time.monotonic()
        for symbol, feed in list(self.feeds.items()):
            if feed.idle_since is not None and now - feed.idle_since > self.idle_seconds:
                async with self._lock:
                    if feed.has_subscribers() or self.feeds.get(symbol) is not feed:
                        continue
                    del self.feeds[symbol]
                    await self.layer.group_discard(symbol_group_name(symbol), self.channel)

    # --- ticks

    async def _on_tick(self, event: dict) -> None:
        feed = self.feeds.get(event["symbol"])
        if feed is None:
            return
        epoch = event.get("epoch")  # absent from an older producer's ticks
        if epoch and epoch != feed.epoch:
            ROUND.release()  # what the round holds goes out before we wait for Redis
            if not await self._check_epoch(feed, epoch, event["seq"]):
                return
        seq = event["seq"]
        last = feed.last_seq
        if seq != last + 1:
            if last and seq <= last:
                if event["ts"] <= feed.known_ts:
                    # Not newer than the last tick delivered: a copy (a refill from
                    # history overtook it). Dropped without a Redis read, or a process
                    # that falls behind would read once per tick.
                    return
                # A lower seq with a newer ts: the symbol's numbering restarted (Redis
                # lost its data), or a copy; history tells which.
                self._suspect.add(feed.symbol)
                return
            after = last or feed.continues_after()
            if after and seq > after + 1:
                # The layer lost ticks on the way to this process (a full or expired
                # queue, an outage): fetch them once here, for every subscriber.
                ROUND.release()  # what the round holds goes out before we wait for Redis
                if not await self._refill(feed, seq, after):
                    return  # the catch-up after the outage delivers this one too
        ts = event["ts"]
        now = time.time() * 1000
        lag = now - ts
        if (lag > self.max_age_ms) is not self.behind:
            self._note_lag(lag)
        feed.received_ms = now
        feed.last_ts = ts
        feed.deliver(seq, event["text"], ts, now=now)
        # Plain counts, flushed into the metrics by _report_forever.
        metrics.DELIVERY.received += 1
        metrics.LAG.observe((time.time() * 1000 - ts) / 1000)

    # --- books

    def _on_book(self, event: dict) -> None:
        """A book message: to the feed's book, which tells its subscribers (or refills)."""
        feed = self.feeds.get(event.get("symbol", ""))
        if feed is not None:
            feed.on_book_message(event)

    def _note_lag(self, lag: float) -> None:
        """Log once when ticks start and stop reaching this process late."""
        if not self.behind:
            self.behind = True
            self.behind_episodes += 1
            metrics.BEHIND_EPISODES.inc()
            logger.warning(
                "this process is behind: ticks reach it %.0f ms after their ts (limit %d ms); "
                "'all' subscribers are closed with 4008, 'latest' ones get only fresh ticks",
                lag, self.max_age_ms,
            )  # fmt: skip
        elif lag < self.max_age_ms / 2:
            self.behind = False
            logger.warning("this process caught up: ticks reach it %.0f ms after their ts", lag)

    async def _refill(self, feed: SymbolFeed, seq: int, after: int) -> bool:
        try:
            missed = await feed.missed(after_seq=after, before_seq=seq)
        except Exception as exc:
            metrics.REDIS_ERRORS.labels("refill").inc()
            self.faults.report("refill", "refilling %s failed: %s", feed.symbol, exc)
            self._suspect.add(feed.symbol)
            return False
        self.refills += 1
        metrics.HOLE_REFILLS.inc()
        if not missed or missed[0].seq != after + 1:
            await self.reset(feed, history.RESET_HISTORY_TRUNCATED)
            return False
        feed.deliver_history(missed)
        return True

    async def _check_epoch(self, feed: SymbolFeed, epoch: str, seq: int) -> bool:
        """Called with a tick of another epoch than ``feed``'s: True to deliver it.

        Redis tells. A tick of an epoch it no longer holds is stale: numbered before Redis
        lost its data, its fan-out carried onto the new server by a retry; taken for the
        current numbering's, it reached clients after their reset and cost them a second
        one. A tick of the current epoch is adopted by a feed that knew none, and resets
        the subscribers of one that delivered another (their snapshot holds the tick).
        """
        try:
            current = await history.current_epoch(symbol=feed.symbol)
        except Exception as exc:
            metrics.REDIS_ERRORS.labels("epoch").inc()
            self.faults.report("epoch", "checking %s's epoch failed: %s", feed.symbol, exc)
            self._suspect.add(feed.symbol)  # caught up once Redis answers
            return False
        if epoch == feed.epoch:
            return True  # a snapshot read that ended meanwhile named it: nothing changed
        if epoch != current:
            self.stale_ticks += 1
            metrics.STALE_TICKS.inc()
            self.faults.report(
                "stale-tick",
                "%s: dropped a tick of epoch %s, which Redis no longer holds (a fan-out "
                "retried past a Redis restart or failover)",
                feed.symbol, epoch,
            )  # fmt: skip
            return False
        if feed.epoch and feed.subscribers:
            logger.warning(
                "%s: a tick of epoch %s (seq %s) reached this process, which delivered epoch %s",
                feed.symbol, epoch, seq, feed.epoch,
            )  # fmt: skip
            await self.reset(feed, history.RESET_EPOCH_CHANGED)
            return False
        if feed.epoch:
            feed.forget()  # nobody to reset: the ring of the old numbering just goes
        feed.epoch = epoch
        return True

    async def _check_suspects(self) -> None:
        for symbol in list(self._suspect):
            feed = self.feeds.get(symbol)
            try:
                if feed is not None:
                    await self._catch_up(feed)
            except Exception as exc:
                metrics.REDIS_ERRORS.labels("catch-up").inc()
                self.faults.report("catch-up", "catching %s up failed: %s", symbol, exc)
                return
            self._suspect.discard(symbol)

    async def _catch_up(self, feed: SymbolFeed) -> None:
        """Deliver what ``feed`` missed, or reset its subscribers if history cannot tell."""
        since = feed.continues_after()
        if not since or not feed.subscribers:
            return
        found = await history.resume(symbol=feed.symbol, since=since, epoch=feed.epoch or None)
        if found.reset_reason is not None:
            await self.reset(feed, found.reset_reason)
        elif found.ticks:
            feed.deliver_history(found.ticks)

    async def reset(self, feed: SymbolFeed, reason: str) -> None:
        """Send every live subscriber of ``feed`` a ``reset`` and a fresh snapshot."""
        self.resets += 1
        metrics.RESETS.inc()
        logger.warning("%s: subscribers reset (%s)", feed.symbol, reason)
        rewound = [sub for sub in feed.subscribers if sub.rewind()]
        feed.forget()
        # Ticks of the new numbering that arrive meanwhile are held by the rewound.
        snap = await feed.read(joined_at=time.monotonic())
        frame = json.dumps({"type": "reset", "symbol": feed.symbol, "reason": reason})
        for sub in rewound:
            if sub in feed.subscribers:
                sub.outbox.put_frame(frame)
                sub.outbox.put_frame(snap.frame(sub.snapshot_size))
                sub.go_live(snap.last_seq)


def _wall_ms() -> int:
    return int(time.time() * 1000)


# The hub of the running event loop (one per web process in production).
local_hub = PerLoop(Hub)


async def close_local_hub() -> None:
    """Stop this loop's hub, if it has one (tests: one event loop per test)."""
    hub = local_hub.pop()
    if hub is not None:
        await hub.aclose()
