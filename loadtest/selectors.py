"""Reads the load test needs: which symbols to subscribe to."""

from django.db import DatabaseError

from markets.selectors import active_symbols
from markets.universe import DEFAULT_UNIVERSE


def loadtest_symbols(*, count: int | None = None) -> list[str]:
    """The first ``count`` active tickers (all when None), in ticker order.

    Read from this deployment's database; when it has none (not migrated, or
    empty), the default universe that ``seed_symbols`` would create stands in.
    """
    try:
        tickers = [s.ticker for s in active_symbols()]
    except DatabaseError:
        tickers = []
    if not tickers:
        tickers = sorted(i.ticker for i in DEFAULT_UNIVERSE)
    return tickers if count is None else tickers[:count]
