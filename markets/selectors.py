"""Reads of market reference data, and of each symbol's feed source state."""

from collections.abc import Iterable
from dataclasses import dataclass

from . import quotes
from .models import Symbol


async def active_tickers(*, tickers: Iterable[str]) -> set[str]:
    """Those of ``tickers`` that name an active symbol."""
    wanted = list(tickers)
    if not wanted:
        return set()
    qs = Symbol.objects.filter(ticker__in=wanted, active=True).values_list("ticker", flat=True)
    return {ticker async for ticker in qs}


def all_active_tickers() -> frozenset[str]:
    """Every active symbol's ticker (synchronous: call it from a thread)."""
    return frozenset(Symbol.objects.filter(active=True).values_list("ticker", flat=True))


def active_symbols() -> list[Symbol]:
    return list(Symbol.objects.filter(active=True))


# --- Feed source state per symbol (/api/symbols/, the dashboard's source marks).
# The states a symbol's source can be in, as its producer reports them (docs/feeds.md):
# "unknown" when there is no fresh report of the configured source (none runs it, or a
# change of source is not applied yet). The same words as /api/health/ and feeds list.
SOURCE_STATES = ("up", "starting", "down", "ended", "unknown")


@dataclass(frozen=True, slots=True)
class SourceState:
    source: str  # the source configured on the Symbol
    state: str  # one of SOURCE_STATES
    error: str | None  # its latest problem while it is not up; None otherwise


async def source_states(*, symbols: list[Symbol]) -> dict[str, SourceState]:
    """Each symbol's configured source and its state: one Redis pipeline per host.

    The status hashes are read and judged by markets.quotes (source_status, source_block),
    as for /api/health/ and /metrics: one reader, one freshness rule.
    """
    if not symbols:
        return {}
    status = await quotes.source_status(symbols=[s.ticker for s in symbols])
    out: dict[str, SourceState] = {}
    for s in symbols:
        block = quotes.source_block(s.source, status.get(s.ticker))
        state = block["state"] if block["state"] in SOURCE_STATES else "unknown"
        # An unknown state's last error is an old report's (perhaps of another source).
        error = block["last_error"] if state not in ("up", "unknown") else None
        out[s.ticker] = SourceState(source=s.source, state=state, error=error)
    return out
