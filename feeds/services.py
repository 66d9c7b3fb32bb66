"""The simulated feed: one long-lived event loop that prices and publishes ticks."""

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async
from django.conf import settings

from markets.history import latest_ticks
from markets.publishing import TickPublisher
from markets.redis import close_redis_client, redis_client
from markets.selectors import active_symbols

from .lease import SymbolLeases
from .simulator import PriceWalk, WalkSpec

logger = logging.getLogger(__name__)

# How often the feed re-reads the symbol table and renews or takes leases.
SYMBOLS_REFRESH_SECONDS = 10.0
# How far behind schedule the feed may run before it drops slots instead of catching up.
MAX_CATCH_UP_SECONDS = 1.0


@dataclass
class FeedStats:
    """What one run of the feed did; returned for logs and tests."""

    token: str
    ticks: int = 0
    acquired: set[str] = field(default_factory=set)
    lost: set[str] = field(default_factory=set)


def producer_token() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@sync_to_async
def _load_specs() -> dict[str, tuple[WalkSpec, float]]:
    return {
        s.ticker: (
            WalkSpec(s.ticker, s.asset_class, s.tick_size, s.annual_volatility),
            float(s.start_price),
        )
        for s in active_symbols()
    }


async def run_feed(
    *,
    stop: threading.Event,
    tick_rate: float | None = None,
    lease_seconds: float | None = None,
    seed: int | None = None,
    max_seconds: float | None = None,
) -> FeedStats:
    """Publish ticks for every symbol whose lease this producer holds, until ``stop``.

    Returns when ``stop`` is set, after ``max_seconds``, or once it holds no lease
    (another producer owns everything), releasing what it holds on the way out.
    """
    tick_rate = tick_rate or settings.TICK_RATE
    lease_seconds = lease_seconds or settings.FEED_LEASE_SECONDS
    seed = settings.FEED_SEED if seed is None else seed
    interval = 1.0 / tick_rate
    # Renew at a third of the TTL: two renewals can fail before the lease lapses.
    renew_every = lease_seconds / 3

    stats = FeedStats(token=producer_token())
    leases = SymbolLeases(redis_client(), token=stats.token, ttl_seconds=lease_seconds)
    publisher = TickPublisher(lease_token=stats.token)
    walks: dict[str, PriceWalk] = {}
    specs: dict[str, tuple[WalkSpec, float]] = {}
    loop = asyncio.get_running_loop()
    started = loop.time()
    next_refresh = next_renew = next_tick = started

    async def take_free_leases() -> None:
        free = [s for s in specs if s not in walks]
        taken = await leases.acquire(free)
        if taken:
            last = await latest_ticks(symbols=taken)
            for symbol in taken:
                spec, start_price = specs[symbol]
                # Continue the path where the previous producer left it.
                price = last[symbol].price if symbol in last else start_price
                walks[symbol] = PriceWalk(spec, price=price, seed=seed)
            stats.acquired.update(taken)
            logger.info("feed %s now produces %s", stats.token, ", ".join(sorted(taken)))

    def drop(symbols: set[str]) -> None:
        for symbol in symbols:
            walks.pop(symbol, None)
        if symbols:
            stats.lost.update(symbols)
            logger.warning("feed %s lost leases: %s", stats.token, ", ".join(sorted(symbols)))

    try:
        while not stop.is_set():
            now = loop.time()
            if max_seconds is not None and now - started >= max_seconds:
                break
            if now >= next_refresh:
                specs = await _load_specs()
                drop({s for s in walks if s not in specs})
                await take_free_leases()
                next_refresh = now + SYMBOLS_REFRESH_SECONDS
                if not walks:
                    logger.info("feed %s: every symbol has a producer; exiting", stats.token)
                    break
            if now >= next_renew:
                held = set(await leases.renew(list(walks)))
                drop(set(walks) - held)
                await take_free_leases()
                next_renew = now + renew_every
                if not walks:
                    break
            if now >= next_tick:
                drafts = [walk.step(interval) for walk in walks.values()]
                published = await publisher.publish(drafts)
                stats.ticks += len(published)
                # The publish script refuses symbols whose lease is not ours.
                drop(set(walks) - {t.symbol for t in published})
                next_tick += interval
                if loop.time() - next_tick > MAX_CATCH_UP_SECONDS:
                    # A stall: skip the missed slots rather than burst them out.
                    next_tick = loop.time() + interval
                # Otherwise a slot that is late runs at once, so short hiccups (a busy
                # core, a slow Redis call) do not lower the average rate below TICK_RATE.
            wake = min(next_tick, next_renew, next_refresh)
            await asyncio.sleep(max(0.0, wake - loop.time()))
    finally:
        await leases.release(list(walks))
    return stats


def run_feed_blocking(*, stop: threading.Event, **kwargs) -> FeedStats:
    """Run the feed on a fresh event loop in this thread (for the Celery task)."""
    t0 = time.monotonic()

    async def main() -> FeedStats:
        try:
            return await run_feed(stop=stop, **kwargs)
        finally:
            await close_redis_client()

    stats = asyncio.run(main())
    logger.info(
        "feed %s stopped after %.1fs, %d ticks", stats.token, time.monotonic() - t0, stats.ticks
    )
    return stats
