"""A seedable geometric Brownian motion price walk per symbol."""

import math
import random
import zlib
from dataclasses import dataclass
from decimal import Decimal

from markets.ticks import TickDraft

SECONDS_PER_YEAR = 365.25 * 24 * 3600
# Half the quoted spread, as a fraction of price, by asset class.
HALF_SPREAD = {"crypto": 0.00005, "equity": 0.00005, "fx": 0.00001}
# Median notional of one trade, in the quote currency.
MEDIAN_NOTIONAL = {"crypto": 5_000.0, "equity": 20_000.0, "fx": 250_000.0}


def _decimals(step: Decimal) -> int:
    return max(0, -step.normalize().as_tuple().exponent)


@dataclass(frozen=True)
class WalkSpec:
    """What the simulator needs to know about a symbol."""

    symbol: str
    asset_class: str
    tick_size: Decimal
    annual_volatility: float


class PriceWalk:
    """One symbol's price path: each ``step`` moves it by GBM over ``dt`` seconds."""

    def __init__(self, spec: WalkSpec, *, price: float, seed: int) -> None:
        self.spec = spec
        self.price = float(price)
        # crc32, not hash(): str hashes are salted per process and would break seeding.
        self._rng = random.Random(seed * 1_000_003 + zlib.crc32(spec.symbol.encode()))
        self._tick = float(spec.tick_size)
        self._price_decimals = _decimals(spec.tick_size)
        self._half_spread = HALF_SPREAD.get(spec.asset_class, 0.0001)
        self._median_notional = MEDIAN_NOTIONAL.get(spec.asset_class, 10_000.0)

    def _round(self, value: float) -> float:
        return round(round(value / self._tick) * self._tick, self._price_decimals)

    def _size(self) -> float:
        notional = self._median_notional * math.exp(self._rng.gauss(0.0, 1.0))
        units = notional / self.price
        if self.spec.asset_class == "crypto":
            return max(round(units, 4), 0.0001)
        if self.spec.asset_class == "fx":
            return float(max(round(notional, -3), 1000))
        return float(max(round(units), 1))

    def step(self, dt: float) -> TickDraft:
        sigma = self.spec.annual_volatility
        t = dt / SECONDS_PER_YEAR
        shock = self._rng.gauss(0.0, 1.0)
        self.price *= math.exp(-0.5 * sigma * sigma * t + sigma * math.sqrt(t) * shock)
        # Keep the walk on the price grid and away from zero.
        self.price = max(self._round(self.price), self._tick)
        half = max(self._tick, self.price * self._half_spread)
        bid = max(self._round(self.price - half), self._tick)
        ask = self._round(self.price + half)
        return TickDraft(self.spec.symbol, self.price, bid, ask, self._size())
