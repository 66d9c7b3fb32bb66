"""The feed loop: per-symbol leases, one source per owned symbol, one publisher.

Each worker process runs one feed loop (feeds.tasks starts it when the worker is ready).
The loop:

- takes the lease of every active symbol that has no producer, and polls for more every
  ``FEED_TAKEOVER_POLL_SECONDS``, so when a producer dies its symbols move to another
  worker within ``FEED_LEASE_SECONDS`` plus that poll (docs/feeds.md, "Failover");
- renews its leases every third of the TTL and drops any symbol whose lease it lost;
- runs the source each owned symbol names (feeds.sources), re-reading the symbol table
  every ``SYMBOLS_REFRESH_SECONDS``: a changed source or option restarts that symbol's
  source, with seq carrying on (the publisher numbers ticks, sources never do);
- publishes whatever the sources yield in batches through one fenced TickPublisher, so
  simulated symbols sharing a time slot cost one Redis round trip;
- writes each owned symbol's source counters to Redis every ``STATUS_FLUSH_SECONDS``
  (markets.keys.source_status_key), for ``manage.py feeds list`` and /api/health/.

It never stops in silence (issue 22; docs/operations.md, "A feed that stops publishing"):
every Redis step of the loop and of the publisher has a deadline below the lease TTL, so
a hang is a counted, logged failure and not a loop stuck while its leases live on; the
publisher is supervised against every exception but a real cancellation; and a watchdog
gives the leases up when drafts wait but nothing was published for FEED_STALL_SECONDS.
"""

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from markets.books import BookPublisher
from markets.history import latest_ticks
from markets.keys import source_status_key
from markets.models import Symbol
from markets.publishing import TickPublisher, now_ms
from markets.redis import by_shard, close_redis_client, redis_for, shard_url
from markets.ticks import TickDraft
from telemetry.metrics import FEED_FAULTS, FEED_STALLS

from .books import FeedBooks, publish_batch
from .lease import SymbolLeases
from .sources import Source, SourceContext, SymbolConfig, build_source
from .sources.base import DOWN, ENDED, BookDraft, KindLog

logger = logging.getLogger(__name__)

# How often the feed re-reads the symbol table: a source change applies within this.
SYMBOLS_REFRESH_SECONDS = 2.0
# A read of the symbol table that takes longer is left to finish in the background (the
# last table is kept meanwhile): the same loop renews the leases, which must not wait on
# the database.
SYMBOLS_READ_TIMEOUT_SECONDS = 10.0
# How often each owned symbol's source counters are written to Redis.
STATUS_FLUSH_SECONDS = 1.0
# A status hash outlives its writer by this long, then Redis forgets it.
STATUS_TTL_SECONDS = 3600
# A source that failed (raised, or gave up on its options) is started again after this.
RESTART_AFTER_SECONDS = 10.0
# Ticks per second are measured over this window.
RATE_WINDOW_SECONDS = 5.0
# Drafts waiting for the publisher; a source that outruns it waits (backpressure).
QUEUE_SIZE = 10_000
MAX_BATCH = 1_000
# After a failed step the loop waits this long before trying again.
RETRY_SECONDS = 0.5
# The source state a stalled feed reports for the symbols it gives up (/api/health/
# reads any state but "up" as degraded).
STALLED = "stalled"


@dataclass
class FeedStats:
    """What one run of the feed did; returned for logs and tests."""

    token: str
    ticks: int = 0
    acquired: set[str] = field(default_factory=set)
    lost: set[str] = field(default_factory=set)


@dataclass
class Running:
    """One owned symbol's running source."""

    config: SymbolConfig
    source: Source
    task: asyncio.Task
    started_ms: int
    started_at: float
    published: int = 0
    samples: deque = field(default_factory=lambda: deque(maxlen=64))

    def rate(self, now: float) -> float:
        self.samples.append((now, self.published))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW_SECONDS:
            self.samples.popleft()
        t0, n0 = self.samples[0]
        return round((self.published - n0) / (now - t0), 2) if now > t0 else 0.0


class Unavailable(Source):
    """Stands in for a source that could not be built; it reports itself down."""

    name = "unavailable"

    def no_book_reason(self) -> str:
        return f"the {self.config.source} source could not start"

    async def ticks(self) -> AsyncIterator[TickDraft]:
        self.stats.state = DOWN
        return
        yield


def producer_token() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _load_configs_sync() -> dict[str, SymbolConfig]:
    close_old_connections()  # a long-lived thread must not keep a broken connection
    try:
        return {
            s.ticker: SymbolConfig(
                ticker=s.ticker,
                asset_class=s.asset_class,
                tick_size=s.tick_size,
                annual_volatility=s.annual_volatility,
                start_price=float(s.start_price),
                source=s.source,
                options=dict(s.source_options or {}),
            )
            for s in Symbol.objects.filter(active=True)
        }
    finally:
        close_old_connections()


# On asgiref's thread-sensitive thread, which keeps one database connection for the
# process (a pool thread would leave one open per thread). That thread is shared by
# every such call in the process, so a call stuck there would stop this one too: the
# feed loop waits for it at most SYMBOLS_READ_TIMEOUT_SECONDS at a time (refresh()).
_load_configs = sync_to_async(_load_configs_sync)


async def run_feed(
    *,
    stop: threading.Event,
    tick_rate: float | None = None,
    lease_seconds: float | None = None,
    seed: int | None = None,
    max_seconds: float | None = None,
    standby: bool = False,
    worker: str | None = None,
) -> FeedStats:
    """Produce every symbol whose lease this feed holds, until ``stop``.

    Returns when ``stop`` is set, after ``max_seconds``, or, unless ``standby``, once it
    holds no lease (another producer owns everything). A standby feed keeps polling for
    symbols without a producer instead. Leases are released on the way out.
    """
    tick_rate = tick_rate or settings.TICK_RATE
    lease_seconds = lease_seconds or settings.FEED_LEASE_SECONDS
    seed = settings.FEED_SEED if seed is None else seed
    # Renew at a third of the TTL: two renewals can fail before the lease lapses.
    renew_every = lease_seconds / 3
    poll_every = min(settings.FEED_TAKEOVER_POLL_SECONDS, renew_every)
    # Every Redis step of the loop ends within half the TTL: renewals come every third
    # of it and a failed one is tried again at once, so one hung step cannot cost the
    # leases. A publish within two thirds of it (a batch of a thousand ticks must fit,
    # on a loaded machine). Past it the call is cancelled, which closes its connection
    # (redis-py), and counted as a timeout. A step that timed out gets twice the time
    # next (a loop step up to the TTL, a publish up to FEED_STALL_SECONDS, where the
    # watchdog takes over), and its base again once it succeeds: a Redis or a machine
    # that is only slow must not be turned into one where nothing ever completes.
    call_deadline = lease_seconds / 2
    publish_deadline = lease_seconds * 2 / 3
    stall_seconds = settings.FEED_STALL_SECONDS
    deadlines: dict[str, float] = {}  # per step, while it is backing off

    stats = FeedStats(token=producer_token())
    worker = worker or f"{socket.gethostname()}:{os.getpid()}"
    # Each lease on its symbol's host (markets.redis), where the publish script fences.
    leases = SymbolLeases(token=stats.token, ttl_seconds=lease_seconds)
    publisher = TickPublisher(lease_token=stats.token)
    queue: asyncio.Queue[TickDraft | BookDraft] = asyncio.Queue(QUEUE_SIZE)
    reading: asyncio.Future | None = None  # a symbol-table read still on its way
    running: dict[str, Running] = {}
    # Leases taken whose sources have not started yet (the step between failed): the
    # next poll takes them again and starts them; on the way out they are released.
    unstarted: set[str] = set()
    configs: dict[str, SymbolConfig] = {}
    # Whether an acquire round has ever run to its end. Until then holding nothing means
    # nothing: a round that failed half-way (Redis away) took no lease, yet the symbol
    # table was read, and the loop used to take that for "another producer has it all"
    # and return at once, without a word (issue 22).
    settled = False
    # The step under way (a label of ticker_feed_faults_total) and the failed steps
    # since the loop last got through a pass.
    step = "start"
    failing = 0
    # The watchdog: since when drafts have been waiting with nothing published (None
    # while the last publish went through), and until when this feed takes no lease
    # after giving its leases up (so another producer gets them).
    pending_since: float | None = None
    # When a renewal last went through: the watchdog's evidence that this feed still
    # holds its leases (keeping every other producer out) while it publishes nothing.
    renewed_at = float("-inf")
    idle = asyncio.Event()  # cleared while a publish call is under way
    idle.set()
    hold_off_until = 0.0
    # The source label of ticker_ticks_published_total (telemetry.metrics).
    publisher.source_of = lambda s: running[s].config.source if s in running else ""
    faults = KindLog(logger, f"feed {stats.token}")
    # Each owned symbol's authoritative order book, published as window diffs (issue 21).
    books = FeedBooks(BookPublisher(lease_token=stats.token), log=faults)
    books.publisher.source_of = publisher.source_of
    loop = asyncio.get_running_loop()

    def fault(where: str, exc: BaseException, what: str) -> None:
        """Count and log (once per kind, then at 10x, 100x...) a failed step."""
        if timed_out(exc):
            kind = "timeout"
        elif isinstance(exc, asyncio.CancelledError):
            kind = "cancelled"
        elif isinstance(exc, RedisError | OSError):
            kind = "error"
        else:
            kind = "bug"
        FEED_FAULTS.labels(where, kind).inc()
        faults.report(f"{what} ({where}: {kind})", repr(exc))

    def cancelled_for_real() -> bool:
        # A CancelledError raised by a library, or a future cancelled under us, is not
        # the cancellation of this feed: only the latter ends it (issue 22).
        task = asyncio.current_task()
        return task is not None and task.cancelling() > 0

    async def bounded(name: str, awaitable, base: float | None = None):
        nonlocal step
        if name != "publish":  # the publisher runs beside the loop's own steps
            step = name
        base = base or call_deadline
        deadline = deadlines.get(name, base)
        try:
            async with asyncio.timeout(deadline):
                result = await awaitable
        except TimeoutError:
            cap = stall_seconds if name == "publish" else lease_seconds
            deadlines[name] = min(max(deadline * 2, base), max(cap, base))
            raise
        deadlines.pop(name, None)
        return result

    async def run_source(source: Source) -> None:
        async with contextlib.aclosing(source.ticks()) as drafts:
            async for draft in drafts:
                await queue.put(draft)

    def start(symbol: str, last_price: float | None) -> None:
        config = configs[symbol]
        context = SourceContext(last_price=last_price, tick_rate=tick_rate, seed=seed)
        try:
            source = build_source(config, context)
        except Exception as exc:  # a source that cannot even be built is reported, not fatal
            logger.exception("feed: cannot start the %s source of %s", config.source, symbol)
            source = Unavailable(config, context)
            source.stats.last_error = f"cannot start {config.source}: {exc}"[:300]
        task = loop.create_task(run_source(source), name=f"feed source {symbol}")
        running[symbol] = Running(config, source, task, now_ms(), loop.time())
        books.start(symbol, source)
        unstarted.discard(symbol)
        logger.info("feed %s: %s from %s", stats.token, symbol, config.source)

    def stop_source(symbol: str) -> None:
        entry = running.pop(symbol, None)
        books.stop(symbol)
        # What it published is no longer this feed's to check (markets.publishing).
        publisher.forget(symbol)
        if entry is not None:
            entry.task.cancel()

    async def start_all(symbols: list[str]) -> None:
        # Their leases are ours until they run: if this read fails, the next poll takes
        # them again (SymbolLeases.acquire re-takes its own) and starts them then.
        if not symbols:
            return
        last = await bounded("start", latest_ticks(symbols=symbols))
        for symbol in symbols:
            if symbol in configs:
                start(symbol, last[symbol].price if symbol in last else None)

    async def take_free_leases() -> None:
        nonlocal settled
        if loop.time() < hold_off_until:
            return
        wanted = [s for s in configs if s not in running]
        taken = await bounded("acquire", leases.acquire(wanted))
        unstarted.difference_update(set(wanted) - set(taken))  # another producer has them
        if taken:
            stats.acquired.update(taken)
            unstarted.update(taken)
            logger.info("feed %s now produces %s", stats.token, ", ".join(sorted(taken)))
            await start_all(taken)
        settled = bool(configs)

    def drop(symbols: set[str], why: str) -> None:
        nonlocal settled
        for symbol in symbols:
            stop_source(symbol)
        if symbols:
            stats.lost.update(symbols)
            # "Lost" may be "lapsed": in an outage longer than their TTL the leases expire
            # and nobody holds them. Only the next complete acquire round tells that from
            # "another producer has them", so no "holding nothing" exit before it.
            settled = False
            logger.warning("feed %s dropped %s: %s", stats.token, ", ".join(sorted(symbols)), why)

    async def refresh() -> bool:
        """Re-read the symbol table and apply it; False while the read has not answered."""
        nonlocal configs, reading, step
        step = "refresh"
        # Not wait_for(): cancelling a sync_to_async call still waits for its thread, so
        # a read stuck there would hold this loop (and the lease renewals) all the same.
        # A slow read is left running and picked up by a later refresh instead; the
        # loop waits for it no longer than for a Redis step.
        if reading is None:
            reading = asyncio.ensure_future(_load_configs())
            reading.add_done_callback(_retrieve)
        wait = min(SYMBOLS_READ_TIMEOUT_SECONDS, call_deadline)
        done, _ = await asyncio.wait({reading}, timeout=wait)
        if not done:
            faults.report(
                "reading the symbol table is taking long; keeping the last one meanwhile",
                f"no answer after {wait:.1f} s",
            )
            return False
        read, reading = reading, None
        configs = read.result()
        drop({s for s in running if s not in configs}, "no longer active")
        changed = [
            s for s, r in running.items() if configs[s].source_key() != r.config.source_key()
        ]
        for symbol in changed:
            logger.info("feed: %s switches to %s", symbol, configs[symbol].source)
            stop_source(symbol)
        await start_all(changed)
        await take_free_leases()
        return True

    async def restart_failed() -> None:
        now = loop.time()
        failed = [
            s
            for s, r in running.items()
            if r.task.done()
            and r.source.stats.state != ENDED
            and now - r.started_at >= RESTART_AFTER_SECONDS
        ]
        for symbol in failed:
            task = running[symbol].task
            if not task.cancelled() and task.exception() is not None:
                logger.error(
                    "feed: %s source of %s failed; starting it again",
                    running[symbol].config.source, symbol, exc_info=task.exception(),
                )  # fmt: skip
            stop_source(symbol)
        await start_all(failed)

    async def flush_status() -> None:
        if not running:
            return
        now, at = loop.time(), now_ms()
        # Each symbol's status on its own host (markets.redis), one pipeline per host.
        pipes = {
            url: redis_for(group[0]).pipeline(transaction=False)
            for url, group in by_shard(running).items()
        }
        for symbol, r in running.items():
            pipe = pipes[shard_url(symbol)]
            s = r.source.stats
            if r.task.done() and s.state not in (ENDED, DOWN, STALLED):
                s.state = DOWN
                if not r.task.cancelled() and r.task.exception() is not None:
                    s.last_error = f"{type(r.task.exception()).__name__}: {r.task.exception()}"
            fields = {
                **s.as_fields(),
                "source": r.config.source,
                "options": json.dumps(r.config.options, sort_keys=True),
                "token": stats.token,
                "worker": worker,
                "started_ms": r.started_ms,
                "updated_ms": at,
                "published": r.published,
                "ticks_per_s": r.rate(now),
            }
            key = source_status_key(symbol)
            pipe.delete(key)
            pipe.hset(key, mapping={k: str(v) for k, v in fields.items()})
            pipe.expire(key, STATUS_TTL_SECONDS)
        await bounded("flush", asyncio.gather(*(pipe.execute() for pipe in pipes.values())))

    async def publish_forever() -> None:
        nonlocal pending_since
        while True:
            batch = [await queue.get()]
            while len(batch) < MAX_BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            batch = [d for d in batch if d.symbol in running]
            if not batch:
                continue
            if pending_since is None:
                pending_since = loop.time()
            try:
                idle.clear()
                published, refused = await bounded(
                    "publish", publish_batch(publisher, books, batch), publish_deadline
                )
            except asyncio.CancelledError as exc:
                if cancelled_for_real():
                    raise
                fault("publish", exc, "publish failed; those ticks were not published")
                continue
            except Exception as exc:  # Redis, a timeout, or a bug: counted, never fatal
                idle.set()  # now, not in finally: no publish is under way in the sleep below
                fault("publish", exc, "publish failed; those ticks were not published")
                await asyncio.sleep(0 if timed_out(exc) else RETRY_SECONDS)
                continue
            finally:
                idle.set()
            pending_since = None
            stats.ticks += len(published)
            for tick in published:
                if tick.symbol in running:
                    running[tick.symbol].published += 1
            # The publish script refuses symbols whose lease is not ours.
            drop(refused, "lease lost (the publish was refused)")

    def start_publisher() -> asyncio.Task:
        return loop.create_task(publish_forever(), name="feed publisher")

    async def stop_publisher(task: asyncio.Task, *, grace: float) -> None:
        # Called with the sources stopped, so no new batch starts: a publish under way
        # may finish first (up to ``grace``), as the batch is better out than half out.
        # The publisher must have ended when run_feed returns: its caller closes the
        # loop's clients then (run_feed_blocking), and a call still running under that
        # leaves its connection open in a pool nobody holds (issue 22).
        if grace > 0 and not task.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await idle.wait()
        task.cancel()
        await asyncio.wait({task}, timeout=lease_seconds)
        if not task.done():
            logger.warning("feed %s: the publisher did not stop in time", stats.token)

    def not_stalled() -> None:
        """Called when a step of the loop itself failed, and at its first good round after.

        The watchdog is for a feed whose leases are renewed while it publishes nothing,
        which keeps every other producer out. While the loop's own steps fail, the leases
        lapse on their own and giving them up would only hold this feed off for a lease
        period once Redis is back (a Sentinel failover longer than FEED_STALL_SECONDS
        cost 3.5 s more that way): the stall is counted from the loop's next good step.
        """
        nonlocal pending_since
        if pending_since is not None:
            pending_since = loop.time()

    async def give_up(waited: float) -> None:
        """Called when drafts wait but nothing was published for FEED_STALL_SECONDS."""
        nonlocal publisher_task, pending_since, hold_off_until, settled
        symbols = sorted(running)
        FEED_STALLS.inc()
        logger.error(
            "feed %s: drafts waiting but nothing published for %.1f s; giving up %s and "
            "restarting the publisher, so that another producer takes over",
            stats.token, waited, ", ".join(symbols),
        )  # fmt: skip
        for r in running.values():
            r.source.stats.state = STALLED
            r.source.stats.last_error = f"nothing published for {waited:.1f} s"
        with contextlib.suppress(Exception):
            await flush_status()  # best effort: /api/health/ says so until another reports
        drop(set(symbols), "stalled")
        await stop_publisher(publisher_task, grace=0)  # it is stuck: no waiting for it
        while not queue.empty():
            queue.get_nowait()
        pending_since = None
        publisher_task = start_publisher()
        with contextlib.suppress(Exception):
            await bounded("release", leases.release([*symbols, *unstarted]))
        # Take no lease for a lease period and a poll: another producer gets them first.
        hold_off_until = loop.time() + lease_seconds + poll_every
        settled = False

    publisher_task = start_publisher()
    started = loop.time()
    next_refresh = next_renew = next_poll = next_flush = started
    stood_by = False
    try:
        while not stop.is_set():
            now = loop.time()
            if max_seconds is not None and now - started >= max_seconds:
                break
            if publisher_task.done():
                # It ends only if cancelled under us; anything else it survives.
                exc = None if publisher_task.cancelled() else publisher_task.exception()
                fault("publish", exc or asyncio.CancelledError(), "the publisher ended")
                logger.error("feed %s: the publisher ended; starting it again", stats.token)
                publisher_task = start_publisher()
            try:
                # A stall needs a renewal that got through since the stall clock started
                # (drafts began waiting, or the loop's last failed step): in an outage the
                # leases lapse by themselves, and a process kept off the CPU for a while
                # (a loaded machine) knows nothing new when it wakes (CI once saw the
                # watchdog fire 1.5 s into an outage, no step having run in between).
                if (
                    running
                    and pending_since is not None
                    and now - pending_since > stall_seconds
                    and renewed_at > pending_since
                ):
                    await give_up(now - pending_since)
                # Renewals first, and a failed one is tried again at once (not a third of
                # the TTL later): a renewal that hung to its deadline must not cost the
                # leases (the fault-injection harness found that).
                if now >= next_renew:
                    held = set(await bounded("renew", leases.renew(list(running))))
                    renewed_at = loop.time()
                    next_renew = now + renew_every
                    drop(set(running) - held, "lease lost (renewal found another owner)")
                    # Holding nothing means another producer has it all, once the symbol
                    # table has been read and a whole acquire round has run over it.
                    if not running and not standby and configs and settled:
                        logger.info("feed %s: every symbol has a producer; exiting", stats.token)
                        break
                if now >= next_refresh:
                    next_refresh = now + SYMBOLS_REFRESH_SECONDS
                    # False: the database did not answer; leases are renewed meanwhile.
                    refreshed = await refresh()
                    if refreshed:
                        next_poll = now + poll_every  # refresh() took free leases
                    if refreshed and not running and not standby and settled:
                        logger.info("feed %s: every symbol has a producer; exiting", stats.token)
                        break
                    if refreshed and not running and settled and not stood_by:
                        # Once: from here on it takes free leases every poll.
                        stood_by = True
                        logger.info(
                            "feed %s: every symbol has a producer; standing by", stats.token
                        )
                if now >= next_poll:
                    next_poll = now + poll_every
                    await take_free_leases()
                if now >= next_flush:
                    next_flush = now + STATUS_FLUSH_SECONDS
                    await restart_failed()
                    await flush_status()
                if failing:
                    logger.info(
                        "feed %s: Redis answers again after %d failed steps", stats.token, failing
                    )
                    failing = 0
                    # The stall is counted from here, this first good round, not from the
                    # last failed step: a slow round on a busy machine is no stall.
                    not_stalled()
            except asyncio.CancelledError as exc:
                if cancelled_for_real():
                    raise
                failing += 1
                fault(step, exc, "a feed step was cancelled under it")
                not_stalled()
                await asyncio.sleep(RETRY_SECONDS)
            except (RedisError, OSError) as exc:
                # Redis is away or did not answer within the deadline: leases lapse on
                # their own; try again shortly (at once after a timeout, which waited).
                failing += 1
                fault(step, exc, "Redis unavailable")
                not_stalled()
                await asyncio.sleep(0 if timed_out(exc) else RETRY_SECONDS)
            wake = min(next_refresh, next_renew, next_poll, next_flush)
            await asyncio.sleep(max(0.0, min(wake - loop.time(), 0.5)))
    finally:
        held = list(running)
        for symbol in held:
            stop_source(symbol)
        if reading is not None:
            reading.cancel()  # not awaited: it may be waiting on its thread
        await stop_publisher(publisher_task, grace=lease_seconds)
        try:
            async with asyncio.timeout(call_deadline):
                await leases.release([*held, *unstarted])
        except TimeoutError:
            logger.warning("feed %s: releasing its leases timed out; they expire", stats.token)
    return stats


def timed_out(exc: BaseException) -> bool:
    """Whether ``exc`` is a call that ran out of time (ours or redis-py's socket timeout)."""
    return isinstance(exc, TimeoutError | RedisTimeoutError)


def _retrieve(future: asyncio.Future) -> None:
    # A read given up on may fail later; its error is not "never retrieved".
    if not future.cancelled():
        future.exception()


# How long a stopping feed waits for its cancelled tasks before closing its Redis clients.
CLOSE_WAIT_SECONDS = 5.0


def run_feed_blocking(*, stop: threading.Event, **kwargs) -> FeedStats:
    """Run the feed on a fresh event loop in this thread (for the Celery worker)."""
    t0 = time.monotonic()

    async def main() -> FeedStats:
        try:
            return await run_feed(stop=stop, **kwargs)
        finally:
            # Whatever still runs (a publisher that did not stop in time) is cancelled and
            # waited for first: a client closed under a call in flight has redis-py retry
            # it on a new socket, given back to a pool nobody holds (issue 22).
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            if others:
                await asyncio.wait(others, timeout=CLOSE_WAIT_SECONDS)
            await close_redis_client()

    stats = asyncio.run(main())
    logger.info(
        "feed %s stopped after %.1fs, %d ticks", stats.token, time.monotonic() - t0, stats.ticks
    )
    return stats
