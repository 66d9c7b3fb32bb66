"""Reads of market reference data."""

from collections.abc import Iterable

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
