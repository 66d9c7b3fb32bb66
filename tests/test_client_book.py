"""ticker_client's own book and checksum agree with the server's (markets.book).

The client is a separate distribution and cannot import markets, so it carries its own
copy of the book and the checksum; these properties keep the two copies the same.
"""

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from ticker_client import LocalBook
from ticker_client import checksum as client_checksum

from markets.book import MAX_DEPTH, OrderBook, checksum, window_diff

prices = st.integers(min_value=1, max_value=400).map(lambda n: f"{n / 4:.2f}")
sizes = st.sampled_from(["0", "0.5", "1", "1.25", "2.000", "10", "0.00100000"])
levels = st.lists(st.tuples(prices, sizes), max_size=30)


@settings(max_examples=200, deadline=None)
@given(bids=levels, asks=levels)
def test_the_client_checksum_is_the_servers(bids, asks):
    book = OrderBook.from_levels(bids=bids, asks=asks)
    top = book.top(MAX_DEPTH)
    assert client_checksum(*top) == checksum(*top)


@settings(max_examples=200, deadline=None)
@given(first=st.tuples(levels, levels), changes=st.lists(st.tuples(levels, levels), max_size=6),
       depth=st.integers(min_value=1, max_value=12))  # fmt: skip
def test_a_local_book_fed_the_servers_messages_holds_the_servers_top_depth(first, changes, depth):
    server = OrderBook.from_levels(bids=first[0], asks=first[1])
    view = server.top(depth)
    local = LocalBook.from_snapshot(
        {"symbol": "X", "seq": 1, "depth": depth, "bids": view[0], "asks": view[1]}
    )
    assert local.checksum() == checksum(*view)
    for bids, asks in changes:
        server.apply(bids=bids, asks=asks)
        new = server.top(depth)
        local.apply(*window_diff(view, new))
        view = new
        assert (local.bids, local.asks) == (list(new[0]), list(new[1]))
        assert local.checksum() == checksum(*new)
    if view[0] and view[1]:
        bid, ask = Decimal(view[0][0][0]), Decimal(view[1][0][0])
        assert local.spread == ask - bid and local.mid == (ask + bid) / 2
        assert local.best_bid() == view[0][0] and local.best_ask() == view[1][0]
    else:
        assert local.spread is None and local.mid is None
