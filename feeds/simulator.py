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


# --- The simulated order book (issue 21) ----------------------------------------------

# Levels kept per side: the top MAX_DEPTH (50) that subscribers see, and a margin that a
# sweep may take (a trade always leaves MIN_LEVELS, so the top 50 stays full).
BOOK_LEVELS = 70
MIN_LEVELS = 50
# Levels sit every ``spacing`` ticks, a fraction of the half spread: a symbol whose spread
# is hundreds of ticks (BTC-USD at 0.01) gets a book that spans a price move or two
# instead of a few cents, and one whose spread is a tick gets one level per tick.
LEVELS_PER_HALF_SPREAD = 4
# Sizes are whole lots: a crypto lot is 0.0001 units, a share is one, fx trades in 1000s.
LOT = {"crypto": Decimal("0.0001"), "equity": Decimal("1"), "fx": Decimal("1000")}
# A level holds about this many median trades, so a typical trade takes part of the
# touch and an order LARGE_ORDER times the median sweeps several levels.
LEVEL_TRADES = 4.0
LARGE_ORDER_CHANCE = 0.03
LARGE_ORDER = 8.0
# Levels whose size changes (orders added or cancelled) per side and update.
CHURN_LEVELS = 4


class BookWalk:
    """A PriceWalk with an order book around it: each step moves, trades and reports.

    The book sits on the symbol's tick grid, one level every ``spacing`` ticks from the
    touch out to BOOK_LEVELS, centred on the walk's quote. A step re-centres it on the new quote
    (levels the quote passed are taken, new ones appear behind it), changes some sizes,
    then trades: the aggressor (the direction of the move, or a coin toss) takes
    liquidity from the touch, sweeping deeper levels when the order is larger than the
    touch. The tick prints at the last level filled, and its bid and ask are the book's
    best after the trade. Prices and sizes are exact decimal strings on the tick and lot
    grids.
    """

    def __init__(self, spec: WalkSpec, *, price: float, seed: int) -> None:
        self.walk = PriceWalk(spec, price=price, seed=seed)
        self.spec = spec
        self._rng = random.Random(seed * 7_919 + zlib.crc32(spec.symbol.encode()) + 1)
        self._tick = spec.tick_size
        self._price_exp = Decimal(1).scaleb(-_decimals(spec.tick_size))
        self._lot = LOT.get(spec.asset_class, Decimal("0.0001"))
        self._lot_exp = Decimal(1).scaleb(-_decimals(self._lot))
        self.bids: dict[int, int] = {}  # tick index -> lots
        self.asks: dict[int, int] = {}
        self._changed_bids: set[int] = set()
        self._changed_asks: set[int] = set()
        half_ticks = self.walk.price * self.walk._half_spread / float(self._tick)
        self.spacing = max(1, int(half_ticks // LEVELS_PER_HALF_SPREAD))
        # (price, lots taken, level emptied) of the last step's trade, touch first.
        self.last_fills: list[tuple[str, int, bool]] = []
        bid, ask = self._quote(self.walk.price)
        self._recentre(bid, ask)
        self._changed_bids.clear()
        self._changed_asks.clear()

    # -- formatting and sizes
    def price_text(self, index: int) -> str:
        return str((self._tick * index).quantize(self._price_exp))

    def size_text(self, lots: int) -> str:
        return str((self._lot * lots).quantize(self._lot_exp)) if lots else "0"

    def _median_lots(self) -> float:
        units = self.walk._median_notional / max(self.walk.price, 1e-12)
        return max(units / float(self._lot), 1.0)

    def _level_lots(self, distance: int) -> int:
        # Deeper levels hold a little more, as in real books.
        mean = self._median_lots() * LEVEL_TRADES * (1 + distance / 20)
        return max(1, round(mean * math.exp(self._rng.gauss(0.0, 0.5))))

    # -- the book's shape
    def _quote(self, price: float) -> tuple[int, int]:
        half = max(float(self._tick), price * self.walk._half_spread)
        step = float(self._tick) * self.spacing
        bid = max(1, math.floor((price - half) / step + 1e-9)) * self.spacing
        ask = max(bid + self.spacing, math.ceil((price + half) / step - 1e-9) * self.spacing)
        return bid, ask

    def _set(self, side: dict[int, int], changed: set[int], index: int, lots: int) -> None:
        if lots <= 0:
            if side.pop(index, None) is not None:
                changed.add(index)
        elif side.get(index) != lots:
            side[index] = lots
            changed.add(index)

    def _recentre(self, bid: int, ask: int) -> None:
        """Take the levels the quote passed, fill one per tick behind it, trim the tail."""
        span = BOOK_LEVELS * self.spacing
        for index in [i for i in self.bids if i > bid or i <= bid - span]:
            self._set(self.bids, self._changed_bids, index, 0)
        for index in [i for i in self.asks if i < ask or i >= ask + span]:
            self._set(self.asks, self._changed_asks, index, 0)
        for distance in range(BOOK_LEVELS):
            below, above = bid - distance * self.spacing, ask + distance * self.spacing
            if below >= 1 and below not in self.bids:
                self._set(self.bids, self._changed_bids, below, self._level_lots(distance))
            if above not in self.asks:
                self._set(self.asks, self._changed_asks, above, self._level_lots(distance))

    def _churn(self) -> None:
        """Orders added and cancelled: a few levels per side change size."""
        for side, changed in ((self.bids, self._changed_bids), (self.asks, self._changed_asks)):
            if not side:
                continue
            indices = sorted(side)
            for _ in range(CHURN_LEVELS):
                index = self._rng.choice(indices)
                factor = math.exp(self._rng.gauss(0.0, 0.4))
                self._set(side, changed, index, max(1, round(side[index] * factor)))

    def _take(self, buy: bool, lots: int) -> tuple[int | None, int]:
        """The aggressor takes ``lots`` from the touch outward: (last level filled, lots)."""
        side, changed = (self.asks, self._changed_asks) if buy else (self.bids, self._changed_bids)
        # A market order larger than the book is cut to leave MIN_LEVELS (the top 50 full).
        order = sorted(side) if buy else sorted(side, reverse=True)
        available = sum(side[i] for i in order[: max(0, len(order) - MIN_LEVELS)])
        available += side[order[0]] - 1 if len(order) <= MIN_LEVELS else 0
        lots = filled = min(lots, available)
        last = None
        self.last_fills = []
        for index in order:
            if lots <= 0:
                break
            take = min(lots, side[index])
            self._set(side, changed, index, side[index] - take)
            self.last_fills.append((self.price_text(index), take, index not in side))
            lots -= take
            last = index
        return last, filled

    def changes(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """The levels changed since the last call (absolute sizes, "0" deleted)."""
        bids = [
            (self.price_text(i), self.size_text(self.bids.get(i, 0)))
            for i in sorted(self._changed_bids, reverse=True)
        ]
        asks = [
            (self.price_text(i), self.size_text(self.asks.get(i, 0)))
            for i in sorted(self._changed_asks)
        ]
        self._changed_bids.clear()
        self._changed_asks.clear()
        return bids, asks

    def levels(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """The whole book, best first (a snapshot)."""
        bids = [
            (self.price_text(i), self.size_text(n))
            for i, n in sorted(self.bids.items(), reverse=True)
        ]
        asks = [(self.price_text(i), self.size_text(n)) for i, n in sorted(self.asks.items())]
        return bids, asks

    def churn(self) -> None:
        """A book update between trades: sizes change, prices do not."""
        self._churn()

    def step(self, dt: float) -> TickDraft:
        """Move the price over ``dt``, re-centre and churn the book, and trade once."""
        before = self.walk.price
        quoted = self.walk.step(dt)
        self._recentre(*self._quote(quoted.price))
        self._churn()
        if quoted.price != before:
            buy = quoted.price > before
        else:
            buy = self._rng.random() < 0.5
        median = self._median_lots()
        lots = max(1, round(median * math.exp(self._rng.gauss(0.0, 1.0))))
        if self._rng.random() < LARGE_ORDER_CHANCE:
            lots = round(lots * LARGE_ORDER * LEVEL_TRADES)
        last, filled = self._take(buy, lots)
        best_bid, best_ask = max(self.bids), min(self.asks)
        price_index = last if last is not None else (best_ask if buy else best_bid)
        price = float(self.price_text(price_index))
        return TickDraft(
            self.spec.symbol,
            price,
            float(self.price_text(best_bid)),
            float(self.price_text(best_ask)),
            float(self.size_text(max(filled, 1))),
            "buy" if buy else "sell",
        )
