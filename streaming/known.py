"""KnownSymbols: which tickers can be subscribed, read from the database at most every few seconds.

A subscribe used to cost a database query on a thread (and channels' connection
cleanup, another thread hop, before every client message). In a connect storm that
was a large part of a connection's cost. The set of active symbols changes rarely, so
each process reads it whole at most every ``SYMBOLS_CACHE_SECONDS``; a symbol
activated or deactivated in the admin is seen within that time.
"""

import asyncio
import time

from channels.db import database_sync_to_async
from django.conf import settings

from markets.selectors import all_active_tickers

from .loops import PerLoop


class KnownSymbols:
    """This event loop's cached set of active tickers."""

    def __init__(self, *, ttl: float) -> None:
        self.ttl = ttl
        self._tickers: frozenset[str] = frozenset()
        self._read_at = float("-inf")
        self._reading: asyncio.Task[frozenset[str]] | None = None

    async def active(self, tickers: list[str]) -> set[str]:
        """Those of ``tickers`` that name an active symbol."""
        if time.monotonic() - self._read_at > self.ttl:
            await self._refresh()
        return {t for t in tickers if t in self._tickers}

    async def _refresh(self) -> None:
        if self._reading is None:
            # One read for every subscriber waiting on it; database_sync_to_async also
            # closes stale database connections around it, as channels' dispatch would.
            self._reading = asyncio.ensure_future(database_sync_to_async(all_active_tickers)())
        reading = self._reading
        try:
            tickers = await asyncio.shield(reading)
        finally:
            if self._reading is reading and reading.done():
                self._reading = None
        self._tickers = tickers
        self._read_at = time.monotonic()


# This event loop's KnownSymbols.
known_symbols = PerLoop(lambda: KnownSymbols(ttl=settings.SYMBOLS_CACHE_SECONDS))
