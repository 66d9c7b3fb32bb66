"""``simulated``: the seedable geometric Brownian motion of feeds.simulator, at TICK_RATE.

It keeps an order book around the walk (feeds.simulator.BookWalk): a snapshot first, then
one book update per SIM_BOOK_RATE slot (by default one per tick, just before the tick,
whose bid and ask are that book's best) and each tick's aggressor side.
"""

import asyncio
import math
from collections.abc import AsyncIterator

from django.conf import settings

from markets.ticks import TickDraft

from ..simulator import BookWalk, WalkSpec
from .base import UP, BookDraft, Source

# A slot's timer may fire this early (the event loop's clock resolution).
_EARLY = 1e-3


def _next_slot(now: float, interval: float) -> float:
    # A late slot is not made up with a burst: the next one is the next grid point.
    return (math.floor(now / interval) + 1) * interval


class SimulatedSource(Source):
    name = "simulated"
    has_book = True

    async def ticks(self) -> AsyncIterator[TickDraft | BookDraft]:
        c = self.config
        spec = WalkSpec(c.ticker, c.asset_class, c.tick_size, c.annual_volatility)
        # Carry on from the last published price, so a new producer continues the path.
        price = self.context.last_price or c.start_price
        walk = BookWalk(spec, price=price, seed=self.context.seed)
        tick_every = 1.0 / self.context.tick_rate
        book_every = 1.0 / (settings.SIM_BOOK_RATE or self.context.tick_rate)
        loop = asyncio.get_running_loop()
        self.stats.state = UP
        yield BookDraft(self.symbol, *walk.levels(), snapshot=True)
        # The first tick goes at once (a takeover is not delayed by a slot); later ones
        # fall on a grid shared by every simulated symbol of the process, so they wake
        # together and the feed publishes them in one batch. Book updates have a grid
        # of their own, the same one unless SIM_BOOK_RATE says otherwise.
        next_tick = next_book = loop.time()
        while True:
            now = loop.time()
            wake = min(next_tick, next_book)
            if wake > now:
                await asyncio.sleep(wake - now)
                now = loop.time()
            tick = None
            due_tick, due_book = now >= next_tick - _EARLY, now >= next_book - _EARLY
            # One clock reading for both grids: at equal rates they stay one grid, so every
            # tick has its book update just before it.
            at = loop.time()
            if due_tick:
                tick = walk.step(tick_every)
                next_tick = _next_slot(at, tick_every)
            if due_book:
                if tick is None:
                    walk.churn()
                bids, asks = walk.changes()
                if bids or asks:
                    yield BookDraft(self.symbol, bids, asks)
                next_book = _next_slot(at, book_every)
            if tick is not None:
                self.stats.messages += 1
                self.stats.ticks += 1
                yield tick
