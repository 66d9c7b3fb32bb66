import itertools
import math
from decimal import Decimal

import pytest

from feeds.simulator import SECONDS_PER_YEAR, PriceWalk, WalkSpec

BTC = WalkSpec("BTC-USD", "crypto", Decimal("0.01"), 0.55)
EURUSD = WalkSpec("EUR-USD", "fx", Decimal("0.00001"), 0.07)
AAPL = WalkSpec("AAPL", "equity", Decimal("0.01"), 0.25)


def path(spec, seed, n=50, price=100.0, dt=0.5):
    walk = PriceWalk(spec, price=price, seed=seed)
    return [walk.step(dt) for _ in range(n)]


def test_same_seed_gives_the_same_path_and_another_seed_does_not():
    assert path(BTC, 7, price=97000) == path(BTC, 7, price=97000)
    assert path(BTC, 7, price=97000) != path(BTC, 8, price=97000)


def test_symbols_with_one_seed_walk_independently():
    a = [t.price / 100 for t in path(AAPL, 1)]
    b = [t.price / 100 for t in path(WalkSpec("MSFT", "equity", Decimal("0.01"), 0.25), 1)]
    assert a != b


@pytest.mark.parametrize(("spec", "price"), [(BTC, 97000.0), (EURUSD, 1.055), (AAPL, 232.0)])
def test_prices_sit_on_the_tick_grid_with_bid_below_ask(spec, price):
    tick = float(spec.tick_size)
    for t in path(spec, 3, n=200, price=price):
        for value in (t.price, t.bid, t.ask):
            assert abs(value / tick - round(value / tick)) < 1e-6, value
        assert t.bid < t.ask
        assert t.bid <= t.price <= t.ask
        assert t.size > 0


def test_sizes_follow_the_asset_class_conventions():
    assert all(float(t.size).is_integer() for t in path(AAPL, 2, price=232.0))
    assert all(t.size % 1000 == 0 for t in path(EURUSD, 2, price=1.055))


def test_realised_volatility_matches_the_annual_volatility():
    spec = WalkSpec("VOL", "equity", Decimal("0.0001"), 0.30)
    dt = 60.0  # one-minute steps keep rounding noise negligible
    walk = PriceWalk(spec, price=1000.0, seed=11)
    prices = [1000.0] + [walk.step(dt).price for _ in range(20000)]
    returns = [math.log(b / a) for a, b in itertools.pairwise(prices)]
    mean = sum(returns) / len(returns)
    var = sum((r - mean) ** 2 for r in returns) / (len(returns) - 1)
    annualised = math.sqrt(var * SECONDS_PER_YEAR / dt)
    assert annualised == pytest.approx(0.30, rel=0.05)
