"""KnownSymbols: the subscribable and the restricted tickers, read every few seconds at most.

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

from markets.entitlements import Restriction, restrictions
from markets.selectors import all_active_tickers

from .loops import PerLoop


class KnownSymbols:
    """This event loop's cached set of active tickers."""

    def __init__(self, *, ttl: float) -> None:
        self.ttl = ttl
        self._tickers: frozenset[str] = frozenset()
        self._restricted: dict[str, Restriction] = {}
        self._read_at = float("-inf")
        self._reading: asyncio.Task[tuple[frozenset[str], dict]] | None = None

    async def active(self, tickers: list[str]) -> set[str]:
        """Those of ``tickers`` that name an active symbol."""
        if time.monotonic() - self._read_at > self.ttl:
            await self._refresh()
        return {t for t in tickers if t in self._tickers}

    async def restricted(self) -> dict[str, Restriction]:
        """Every restricted symbol's restriction, by ticker (public symbols are absent)."""
        if time.monotonic() - self._read_at > self.ttl:
            await self._refresh()
        return self._restricted

    async def _refresh(self) -> None:
        if self._reading is None:
            # One read for every subscriber waiting on it; database_sync_to_async also
            # closes stale database connections around it, as channels' dispatch would.
            self._reading = asyncio.ensure_future(database_sync_to_async(_read_catalogue)())
        reading = self._reading
        try:
            tickers = await asyncio.shield(reading)
        finally:
            if self._reading is reading and reading.done():
                self._reading = None
        self._tickers, self._restricted = tickers
        self._read_at = time.monotonic()


def _read_catalogue() -> tuple[frozenset[str], dict[str, Restriction]]:
    return all_active_tickers(), restrictions()


# This event loop's KnownSymbols.
known_symbols = PerLoop(lambda: KnownSymbols(ttl=settings.SYMBOLS_CACHE_SECONDS))
