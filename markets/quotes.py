"""Reads that combine reference data with live Redis state: symbol quotes and health."""

import asyncio
import time
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection

from . import keys
from .candles import now_ms, session_opens
from .history import latest_ticks
from .models import Symbol
from .redis import ping_all, shard_groups
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
    sources: dict[str, dict] = field(default_factory=dict)  # per symbol, see source_block

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
    redis_check, db_check = await asyncio.gather(_probe(ping_all()), _probe(_select_one()))
    tickers: list[str] = []
    symbols: list[Symbol] = []
    if db_check.ok:
        symbols = await active_symbols()
        tickers = [s.ticker for s in symbols]
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
    sources: dict[str, dict] = {}
    if redis_check.ok and tickers:
        try:
            status = await asyncio.wait_for(source_status(symbols=tickers), PROBE_TIMEOUT_SECONDS)
        except Exception:  # the source block is informative; Redis health is probed above
            status = {}
        sources = {s.ticker: source_block(s.source, status.get(s.ticker)) for s in symbols}
    return Health(redis=redis_check, database=db_check, feed=feed, stale=stale, sources=sources)


# --- Source status: counters each symbol's producer writes every second (feeds.services).
# A report older than this is not trusted: its producer has stopped or died.
SOURCE_REPORT_FRESH_SECONDS = 5.0
_STATUS_INTS = (
    "messages", "ticks", "gaps", "reconnects", "bad", "ignored", "errors",
    "exchange_ms", "started_ms", "updated_ms", "published",
    "book_updates", "resyncs", "book_gaps", "crossed",
)  # fmt: skip


async def source_status(*, symbols: list[str]) -> dict[str, dict]:
    """The last status each symbol's producer reported (symbols without one are left out)."""
    groups = shard_groups(symbols)

    async def read(client, group: list[str]) -> list:
        pipe = client.pipeline(transaction=False)
        for symbol in group:
            pipe.hgetall(keys.source_status_key(symbol))
        return await pipe.execute()

    replies = await asyncio.gather(*(read(client, group) for client, group in groups))
    out: dict[str, dict] = {}
    found = [
        (symbol, raw)
        for (_, group), reply in zip(groups, replies, strict=True)
        for symbol, raw in zip(group, reply, strict=True)
    ]
    for symbol, raw in found:
        if not raw:
            continue
        status: dict = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()
        }
        for name in _STATUS_INTS:
            if name in status:
                status[name] = int(status[name])
        if "ticks_per_s" in status:
            status["ticks_per_s"] = float(status["ticks_per_s"])
        out[symbol] = status
    return out


def source_block(configured: str, status: dict | None) -> dict:
    """A symbol's source in /api/health/: the configured source and its last fresh report."""
    age = None if not status else max(now_ms() - status.get("updated_ms", 0), 0) / 1000
    fresh = age is not None and age <= SOURCE_REPORT_FRESH_SECONDS
    if status and status.get("source") != configured:
        fresh = False  # the report is of the source before a change not yet applied
    status = status or {}
    return {
        "name": configured,
        "state": status.get("state", "unknown") if fresh else "unknown",
        "owner": status.get("token") if fresh else None,
        "worker": status.get("worker") if fresh else None,
        "ticks_per_s": status.get("ticks_per_s", 0.0) if fresh else 0.0,
        "messages": status.get("messages", 0),
        "gaps": status.get("gaps", 0),
        "reconnects": status.get("reconnects", 0),
        "bad": status.get("bad", 0),
        "errors": status.get("errors", 0),
        # Order books (issue 21; docs/operations.md): book drafts applied, books synced
        # again, upstream book updates missed, episodes of a crossed book.
        "book_updates": status.get("book_updates", 0),
        "resyncs": status.get("resyncs", 0),
        "book_gaps": status.get("book_gaps", 0),
        "crossed": status.get("crossed", 0),
        "last_error": status.get("last_error") or None,
        "reported_s_ago": None if age is None else round(age, 3),
    }
