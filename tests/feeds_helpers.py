"""Helpers for the feed source tests: run a source and collect what it yields."""

import asyncio
import contextlib
import time
from decimal import Decimal

from feeds.sources import SourceContext, SymbolConfig, build_source


def config(ticker="BTC-USD", source="simulated", **options) -> SymbolConfig:
    return SymbolConfig(
        ticker=ticker,
        asset_class="crypto",
        tick_size=Decimal("0.01"),
        annual_volatility=0.5,
        start_price=97000.0,
        source=source,
        options=options,
    )


def make_source(ticker="BTC-USD", source="simulated", *, fast_backoff=True, **options):
    src = build_source(
        config(ticker, source, **options), SourceContext(last_price=None, tick_rate=2, seed=0)
    )
    if fast_backoff:
        src.backoff_base = 0.05  # reconnect tests need not wait half a second a time
    return src


class Collector:
    """Runs ``source.ticks()`` in a task and keeps the drafts."""

    def __init__(self, source) -> None:
        self.source = source
        self.drafts = []
        self.done = False
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        async with contextlib.aclosing(self.source.ticks()) as drafts:
            async for draft in drafts:
                self.drafts.append(draft)
        self.done = True

    async def until(self, predicate, timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.task.done() and self.task.exception():
                raise self.task.exception()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; stats {self.source.stats}")
            await asyncio.sleep(0.005)

    async def count(self, n: int, timeout: float = 10.0) -> None:
        await self.until(lambda: len(self.drafts) >= n, timeout, f"{n} drafts")

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@contextlib.asynccontextmanager
async def collecting(source):
    collector = Collector(source)
    try:
        yield collector
    finally:
        await collector.close()
