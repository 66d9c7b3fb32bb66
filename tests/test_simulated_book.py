"""feeds.simulator.BookWalk: the simulated order book (issue 21)."""

from decimal import Decimal

import pytest

from feeds.simulator import BookWalk, WalkSpec
from markets.book import MAX_DEPTH, OrderBook

BTC = WalkSpec("BTC-USD", "crypto", Decimal("0.01"), 0.55)
EURUSD = WalkSpec("EUR-USD", "fx", Decimal("0.00001"), 0.07)
AAPL = WalkSpec("AAPL", "equity", Decimal("0.01"), 0.25)
DOGE = WalkSpec("DOGE-USD", "crypto", Decimal("0.00001"), 1.10)
CASES = [(BTC, 97000.0), (EURUSD, 1.055), (AAPL, 232.0), (DOGE, 0.38)]


def run(spec, price, *, seed=3, steps=300, dt=0.1):
    """Steps of a BookWalk, replayed into an OrderBook as a subscriber would hold it."""
    walk = BookWalk(spec, price=price, seed=seed)
    book = OrderBook.from_levels(bids=walk.levels()[0], asks=walk.levels()[1])
    out = []
    for _ in range(steps):
        before = book.top(MAX_DEPTH)
        tick = walk.step(dt)
        bids, asks = walk.changes()
        book.apply(bids=bids, asks=asks)
        out.append((before, tick, (bids, asks), book.top(MAX_DEPTH)))
    return walk, book, out


@pytest.mark.parametrize(("spec", "price"), CASES)
def test_the_book_is_deep_on_the_tick_grid_and_each_tick_quotes_its_best(spec, price):
    walk, book, steps = run(spec, price)
    assert book.top(MAX_DEPTH) == OrderBook.from_levels(
        bids=walk.levels()[0], asks=walk.levels()[1]
    ).top(MAX_DEPTH)
    exponent = spec.tick_size.as_tuple().exponent
    for _before, tick, _update, after in steps:
        bids, asks = after
        assert len(bids) >= MAX_DEPTH - 1 and len(asks) >= MAX_DEPTH - 1
        for p, size in bids + asks:
            # Exact strings on the grid, as many decimals as the tick size.
            assert Decimal(p) % spec.tick_size == 0 and Decimal(p).as_tuple().exponent == exponent
            assert Decimal(size) > 0
        assert Decimal(bids[0][0]) < Decimal(asks[0][0])
        assert (tick.bid, tick.ask) == (float(bids[0][0]), float(asks[0][0]))
        assert tick.side in ("buy", "sell")
        assert tick.size > 0


def test_trades_take_liquidity_at_the_touch_and_large_ones_sweep():
    walk = BookWalk(BTC, price=97000.0, seed=9)
    book = OrderBook.from_levels(bids=walk.levels()[0], asks=walk.levels()[1])
    sweeps = 0
    for _ in range(1500):
        tick = walk.step(0.5)
        bids, asks = walk.changes()
        book.apply(bids=bids, asks=asks)
        fills = walk.last_fills
        assert fills, "every step trades"
        update = dict(asks if tick.side == "buy" else bids)
        # The trade prints at the last level it filled; it took every level before that
        # one whole (each is deleted in the update), at prices from the touch outward.
        assert tick.price == float(fills[-1][0])
        assert all(emptied and update[p] == "0" for p, _lots, emptied in fills[:-1])
        prices = [Decimal(p) for p, _, _ in fills]
        assert prices == sorted(prices, reverse=tick.side == "sell")
        assert tick.size == pytest.approx(sum(lots for _, lots, _ in fills) * 0.0001)
        # What the trade left is the touch: the tick's quote is the book's best.
        best_bid, best_ask = book.best_bid(), book.best_ask()
        if tick.side == "buy":
            assert Decimal(best_ask[0]) >= prices[-1]
        else:
            assert Decimal(best_bid[0]) <= prices[-1]
        assert (tick.bid, tick.ask) == (float(best_bid[0]), float(best_ask[0]))
        sweeps += len(fills) >= 2
    assert sweeps >= 10  # large orders swept two levels or more


def test_sizes_change_and_the_walk_is_seeded():
    a = run(AAPL, 232.0, seed=5, steps=50)[2]
    b = run(AAPL, 232.0, seed=5, steps=50)[2]
    c = run(AAPL, 232.0, seed=6, steps=50)[2]
    assert [s[1] for s in a] == [s[1] for s in b]
    assert [s[1] for s in a] != [s[1] for s in c]
    # Every update changes sizes at levels whose price is unchanged (orders come and go).
    for before, _tick, (bids, asks), _after in a:
        held = {p for p, _ in before[0] + before[1]}
        assert any(p in held and s != "0" for p, s in bids + asks)
    # Equity sizes are whole shares; fx sizes are whole thousands.
    assert all(Decimal(s) % 1 == 0 for step in a for _, s in step[3][0] + step[3][1])
    fx = run(EURUSD, 1.055, steps=20)[2]
    assert all(Decimal(s) % 1000 == 0 for step in fx for _, s in step[3][0] + step[3][1])


async def test_the_simulated_source_sends_its_book_before_each_tick():
    """A snapshot first; then each tick comes right after the book update it quotes."""
    from feeds.sources.base import BookDraft, SourceContext, SymbolConfig
    from feeds.sources.simulated import SimulatedSource

    config = SymbolConfig("ETH-USD", "crypto", Decimal("0.01"), 0.7, 3400.0)
    source = SimulatedSource(config, SourceContext(None, 50.0, 1))
    book, ticks, first = OrderBook(), 0, None
    async for item in source.ticks():
        if isinstance(item, BookDraft):
            first = item if first is None else first
            if item.snapshot:
                book.clear()
            book.apply(bids=item.bids, asks=item.asks)
            continue
        assert first is not None and first.snapshot
        ticks += 1
        assert (item.bid, item.ask) == (float(book.best_bid()[0]), float(book.best_ask()[0]))
        assert item.side in ("buy", "sell")
        assert min(book.depths()) >= MAX_DEPTH
        if ticks == 15:
            break
    assert source.stats.ticks == 15 and source.has_book
