"""OHLCV candles: how ticks fall into buckets, reading them, and persisting closed ones.

The publish script (markets.publishing) updates every interval's current candle in
the same atomic Redis step that numbers the tick, so each published tick is counted
exactly once. Redis keeps the last ``CANDLE_REDIS_BUCKETS`` buckets of each interval;
closed 1m, 5m and 1h candles are also upserted into the database by a Celery task
(markets.tasks.persist_candles), so longer ranges survive Redis' retention.

Bucket rule: a tick with ``ts`` belongs to the bucket starting at ``ts - ts % interval``,
except that a tick never goes into a bucket older than the newest one of its symbol
(a clock stepping back moves it into the newest one). A bucket that has a newer one is
therefore final, which is what makes persisting it safe.
"""

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from django.conf import settings
from django.db import transaction
from django.db.models import Max

from . import keys
from .models import Candle as CandleRow
from .models import Symbol
from .redis import redis_for, shard_groups, shard_url, sync_redis_for

IntervalName = Literal["1s", "1m", "5m", "1h"]

# Interval name -> length in milliseconds, shortest first.
INTERVALS: dict[str, int] = {"1s": 1_000, "1m": 60_000, "5m": 300_000, "1h": 3_600_000}
# 1s candles live in Redis only; these are also kept in the database.
PERSISTED_INTERVALS: tuple[str, ...] = ("1m", "5m", "1h")

_PRICE_QUANTUM = Decimal("0.00000001")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def bucket_start(ts_ms: int, interval: str) -> int:
    """Start (epoch ms) of the ``interval`` bucket holding ``ts_ms``."""
    return ts_ms - ts_ms % INTERVALS[interval]


def retention_ms(interval: str) -> int:
    """How long Redis keeps a candle (and its index) after its last update."""
    return INTERVALS[interval] * settings.CANDLE_REDIS_BUCKETS


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def datetime_to_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Candle:
    """One OHLCV bucket; ``start`` and ``end`` are epoch ms, ``end`` exclusive."""

    symbol: str
    interval: str
    start: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    ticks: int
    first_seq: int
    last_seq: int

    @property
    def end(self) -> int:
        return self.start + INTERVALS[self.interval]

    def is_closed(self, *, at_ms: int, clock_ms: int | None = None) -> bool:
        """Whether no tick can still change it.

        True once the symbol's candle clock (``candle_clock``) has reached its end, since
        later ticks go to newer buckets; else once ``at_ms`` is past its end plus the grace.
        """
        if clock_ms is not None and clock_ms >= self.end:
            return True
        return at_ms >= self.end + settings.CANDLE_CLOSE_GRACE_MS


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def candle_from_hash(symbol: str, interval: str, fields: dict) -> Candle | None:
    """Rebuild a candle from its Redis hash; None when the hash is gone (expired)."""
    if not fields:
        return None
    f = {_text(k): _text(v) for k, v in fields.items()}
    return Candle(
        symbol=symbol,
        interval=interval,
        start=int(f["start"]),
        open=float(f["o"]),
        high=float(f["h"]),
        low=float(f["l"]),
        close=float(f["c"]),
        volume=float(f["v"]),
        ticks=int(f["n"]),
        first_seq=int(f["first_seq"]),
        last_seq=int(f["last_seq"]),
    )


def candle_from_row(row: CandleRow, symbol: str) -> Candle:
    return Candle(
        symbol=symbol,
        interval=row.interval,
        start=datetime_to_ms(row.start),
        open=float(row.open),
        high=float(row.high),
        low=float(row.low),
        close=float(row.close),
        volume=float(row.volume),
        ticks=row.tick_count,
        first_seq=row.first_seq,
        last_seq=row.last_seq,
    )


async def candle_clock(*, symbol: str) -> int | None:
    """The newest tick time the symbol's candles have seen (epoch ms), if any."""
    value = await redis_for(symbol).get(keys.candle_clock_key(symbol))
    return None if value is None else int(value)


async def redis_candles(
    *, symbol: str, interval: str, start: int | None, end: int | None, limit: int
) -> list[Candle]:
    """Candles in Redis starting in [start, end), ascending.

    With ``start`` the first ``limit`` of the range, without it the last ``limit``.
    """
    client = redis_for(symbol)
    index = keys.candle_index_key(symbol, interval)
    low = "-inf" if start is None else str(start)
    high = "+inf" if end is None else f"({end}"
    if start is None:
        starts = await client.zrevrangebyscore(index, high, low, start=0, num=limit)
        starts.reverse()
    else:
        starts = await client.zrangebyscore(index, low, high, start=0, num=limit)
    if not starts:
        return []
    pipe = client.pipeline(transaction=False)
    for s in starts:
        pipe.hgetall(keys.candle_key(symbol, interval, int(s)))
    found = [candle_from_hash(symbol, interval, h) for h in await pipe.execute()]
    return [c for c in found if c is not None]


async def db_candles(
    *, symbol: str, interval: str, start: int | None, end: int | None, limit: int
) -> list[Candle]:
    """Persisted candles starting in [start, end), ascending; same ``limit`` rule as Redis."""
    if interval not in PERSISTED_INTERVALS:
        return []
    qs = CandleRow.objects.filter(symbol__ticker=symbol, interval=interval)
    if start is not None:
        qs = qs.filter(start__gte=ms_to_datetime(start))
    if end is not None:
        qs = qs.filter(start__lt=ms_to_datetime(end))
    if start is None:
        rows = [row async for row in qs.order_by("-start")[:limit]]
        rows.reverse()
    else:
        rows = [row async for row in qs.order_by("start")[:limit]]
    return [candle_from_row(row, symbol) for row in rows]


async def candles(
    *, symbol: str, interval: str, start: int | None, end: int | None, limit: int
) -> list[Candle]:
    """Database and Redis candles merged by start, Redis winning (it holds the newest state).

    Each source gives its own first (or last) ``limit``; the merged first (or last)
    ``limit`` is always among them, so nothing is missed and nothing is doubled.
    """
    merged = {
        c.start: c
        for c in await db_candles(
            symbol=symbol, interval=interval, start=start, end=end, limit=limit
        )
    }
    for c in await redis_candles(
        symbol=symbol, interval=interval, start=start, end=end, limit=limit
    ):
        merged[c.start] = c
    ordered = [merged[s] for s in sorted(merged)]
    return ordered[:limit] if start is not None else ordered[-limit:]


async def session_opens(*, symbols: Sequence[str], at_ms: int) -> dict[str, float]:
    """Each symbol's first price of the UTC day holding ``at_ms`` (the session open).

    It is the open of the day's first 1h candle: from Redis, else from the database.
    """
    day_start = at_ms - at_ms % 86_400_000

    async def read(client, group: list[str]) -> dict[str, float]:
        pipe = client.pipeline(transaction=False)
        for symbol in group:
            pipe.zrangebyscore(
                keys.candle_index_key(symbol, "1h"), day_start, "+inf", start=0, num=1
            )
        firsts = await pipe.execute()
        pipe = client.pipeline(transaction=False)
        wanted = [(symbol, int(f[0])) for symbol, f in zip(group, firsts, strict=True) if f]
        for symbol, start in wanted:
            pipe.hget(keys.candle_key(symbol, "1h", start), "o")
        found: dict[str, float] = {}
        for (symbol, _), value in zip(wanted, await pipe.execute() if wanted else [], strict=True):
            if value is not None:
                found[symbol] = float(_text(value))
        return found

    # One pair of pipelines per host holding some of the symbols (markets.redis).
    opens: dict[str, float] = {}
    for found in await asyncio.gather(*(read(c, g) for c, g in shard_groups(symbols))):
        opens.update(found)
    missing = [s for s in symbols if s not in opens]
    if missing:
        # Redis lost the day's first candle (restart); the persisted one is as good.
        rows = (
            CandleRow.objects.filter(
                symbol__ticker__in=missing,
                interval="1h",
                start__gte=ms_to_datetime(day_start),
                start__lt=ms_to_datetime(day_start + 86_400_000),
            )
            .order_by("symbol__ticker", "start")
            .values_list("symbol__ticker", "open")
        )
        async for ticker, open_ in rows:
            opens.setdefault(ticker, float(open_))
    return opens


# --- Persisting closed candles (runs in a Celery worker, hence synchronous).


def _pipelined(items: list, symbol_of: Callable, queue: Callable) -> list:
    """``queue(pipe, item)`` for each item on its symbol's host, one pipeline per host;
    the replies in the order of ``items``."""
    positions: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        positions.setdefault(shard_url(symbol_of(item)), []).append(i)
    replies: list = [None] * len(items)
    for at in positions.values():
        pipe = sync_redis_for(symbol_of(items[at[0]])).pipeline(transaction=False)
        for i in at:
            queue(pipe, items[i])
        for i, reply in zip(at, pipe.execute(), strict=True):
            replies[i] = reply
    return replies


def _quantize(value: str) -> Decimal:
    return Decimal(value).quantize(_PRICE_QUANTUM)


def _row(symbol_id: int, interval: str, fields: dict) -> CandleRow:
    f = {_text(k): _text(v) for k, v in fields.items()}
    return CandleRow(
        symbol_id=symbol_id,
        interval=interval,
        start=ms_to_datetime(int(f["start"])),
        open=_quantize(f["o"]),
        high=_quantize(f["h"]),
        low=_quantize(f["l"]),
        close=_quantize(f["c"]),
        volume=_quantize(f["v"]),
        tick_count=int(f["n"]),
        first_seq=int(f["first_seq"]),
        last_seq=int(f["last_seq"]),
    )


def persist_closed_candles(
    *,
    at_ms: int | None = None,
    intervals: Iterable[str] = PERSISTED_INTERVALS,
    batch_size: int | None = None,
) -> int:
    """Upsert every closed candle not yet persisted; returns how many rows were written.

    Idempotent: rows are keyed by (symbol, interval, start) and overwritten with
    Redis' values, never added to. Each run starts again at the newest persisted
    bucket of each series, so a candle is rewritten until it is certainly final.
    """
    at_ms = now_ms() if at_ms is None else at_ms
    batch_size = batch_size or settings.CANDLE_PERSIST_BATCH
    intervals = list(intervals)
    symbols = list(Symbol.objects.values_list("id", "ticker"))
    watermarks = {
        (row["symbol_id"], row["interval"]): datetime_to_ms(row["last"])
        for row in CandleRow.objects.filter(interval__in=intervals)
        .values("symbol_id", "interval")
        .annotate(last=Max("start"))
    }
    series = [(sid, ticker, iv) for sid, ticker in symbols for iv in intervals]

    def closed(pipe, item) -> None:
        sid, ticker, iv = item
        closed_before = at_ms - INTERVALS[iv] - settings.CANDLE_CLOSE_GRACE_MS
        low = watermarks.get((sid, iv), "-inf")
        pipe.zrangebyscore(keys.candle_index_key(ticker, iv), low, closed_before)

    wanted = [
        (sid, ticker, iv, int(start))
        for (sid, ticker, iv), starts in zip(
            series, _pipelined(series, lambda item: item[1], closed), strict=True
        )
        for start in starts
    ]
    written = 0
    for i in range(0, len(wanted), batch_size):
        chunk = wanted[i : i + batch_size]
        replies = _pipelined(
            chunk,
            lambda item: item[1],
            lambda pipe, item: pipe.hgetall(keys.candle_key(item[1], item[2], item[3])),
        )
        rows = [
            _row(sid, iv, fields)
            for (sid, _, iv, _), fields in zip(chunk, replies, strict=True)
            if fields
        ]
        with transaction.atomic():
            CandleRow.objects.bulk_create(
                rows,
                update_conflicts=True,
                unique_fields=["symbol", "interval", "start"],
                update_fields=[
                    "open", "high", "low", "close", "volume",
                    "tick_count", "first_seq", "last_seq",
                ],
            )  # fmt: skip
        written += len(rows)
    return written
