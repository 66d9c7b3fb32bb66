"""``simulated``: the seedable geometric Brownian motion of feeds.simulator, at TICK_RATE."""

import asyncio
import math
from collections.abc import AsyncIterator

from markets.ticks import TickDraft

from ..simulator import PriceWalk, WalkSpec
from .base import UP, Source


class SimulatedSource(Source):
    name = "simulated"

    async def ticks(self) -> AsyncIterator[TickDraft]:
        c = self.config
        spec = WalkSpec(c.ticker, c.asset_class, c.tick_size, c.annual_volatility)
        # Carry on from the last published price, so a new producer continues the path.
        price = self.context.last_price or c.start_price
        walk = PriceWalk(spec, price=price, seed=self.context.seed)
        interval = 1.0 / self.context.tick_rate
        loop = asyncio.get_running_loop()
        self.stats.state = UP
        # The first tick goes at once (a takeover is not delayed by a slot); later ones
        # fall on a grid shared by every simulated symbol of the process, so they wake
        # together and the feed publishes them in one batch.
        next_at = loop.time()
        while True:
            now = loop.time()
            if next_at > now:
                await asyncio.sleep(next_at - now)
            self.stats.messages += 1
            self.stats.ticks += 1
            yield walk.step(interval)
            # A late slot is not made up with a burst: the next one is the next grid point.
            next_at = (math.floor(loop.time() / interval) + 1) * interval
