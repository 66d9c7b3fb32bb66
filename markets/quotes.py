"""Reads that combine reference data with live Redis state: symbol quotes and health."""

import asyncio
import time
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection

from .candles import now_ms, session_opens
from .history import latest_ticks
from .models import Symbol
from .redis import redis_client
from .ticks import Tick

# A health probe gives up after this long; a hung dependency counts as down.
PROBE_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Quote:
    """A symbol's reference data with its last tick and change since the session open."""

    symbol: Symbol
    last: Tick | None
    session_open: float | None
    live: bool

    @property
    def change_pct(self) -> float | None:
        if self.last is None or not self.session_open:
            return None
        return (self.last.price - self.session_open) / self.session_open * 100


async def active_symbols(*, asset_class: str | None = None) -> list[Symbol]:
    qs = Symbol.objects.filter(active=True)
    if asset_class is not None:
        qs = qs.filter(asset_class=asset_class)
    return [s async for s in qs]


async def active_symbol(*, ticker: str) -> Symbol | None:
    return await Symbol.objects.filter(ticker=ticker, active=True).afirst()


async def quotes(*, symbols: list[Symbol]) -> list[Quote]:
    """One quote per symbol, in the given order: three Redis round trips in all."""
    tickers = [s.ticker for s in symbols]
    at = now_ms()
    last = await latest_ticks(symbols=tickers)
    opens = await session_opens(symbols=tickers, at_ms=at) if tickers else {}
    live_ms = settings.FEED_LIVE_SECONDS * 1000
    return [
        Quote(
            symbol=s,
            last=last.get(s.ticker),
            session_open=opens.get(s.ticker),
            live=s.ticker in last and at - last[s.ticker].ts <= live_ms,
        )
        for s in symbols
    ]


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool
    latency_ms: float | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Health:
    redis: Check
    database: Check
    feed: dict[str, float | None]  # seconds since the last tick, None if it never ticked
    stale: list[str]

    @property
    def ok(self) -> bool:
        return self.redis.ok and self.database.ok and not self.stale


async def _probe(coro) -> Check:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(coro, PROBE_TIMEOUT_SECONDS)
    except Exception as exc:  # any failure of a dependency is what a health check reports
        return Check(ok=False, error=f"{type(exc).__name__}: {exc}"[:200])
    return Check(ok=True, latency_ms=round((time.perf_counter() - started) * 1000, 3))


@sync_to_async
def _select_one() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


async def health() -> Health:
    """Probe Redis and the database and measure each active symbol's feed freshness."""
    redis_check, db_check = await asyncio.gather(
        _probe(redis_client().ping()), _probe(_select_one())
    )
    tickers: list[str] = []
    if db_check.ok:
        tickers = [s.ticker for s in await active_symbols()]
    feed: dict[str, float | None] = dict.fromkeys(tickers)
    if redis_check.ok and tickers:
        at = now_ms()
        try:
            last = await asyncio.wait_for(latest_ticks(symbols=tickers), PROBE_TIMEOUT_SECONDS)
        except Exception as exc:  # Redis failed between the probe and this read
            redis_check = Check(ok=False, error=f"{type(exc).__name__}: {exc}"[:200])
            last = {}
        for ticker, tick in last.items():
            feed[ticker] = round(max(at - tick.ts, 0) / 1000, 3)
    stale = [t for t, age in feed.items() if age is None or age > settings.FEED_STALE_SECONDS]
    return Health(redis=redis_check, database=db_check, feed=feed, stale=stale)
