"""markets.book: the order book, its window diff, conflation and the OKX checksum."""

import itertools
import json
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from markets.book import (
    CHECKSUM_LEVELS,
    DEFAULT_DEPTH,
    MAX_DEPTH,
    BookError,
    OrderBook,
    checksum,
    conflate,
    is_empty,
    window_diff,
)

# OKX's documented examples ("Checksum" of the order book channel, v5 WebSocket API):
# both sides two levels deep, and a bid side shorter than the ask side. OKX publishes the
# CRC32 as a signed 32-bit integer; ours is the same 32 bits, unsigned (issue 21).
OKX_EXAMPLES = [
    (
        [("3366.1", "7"), ("3366", "6")],
        [("3366.8", "9"), ("3368", "8")],
        "3366.1:7:3366.8:9:3366:6:3368:8",
        -1881014294,
    ),
    (
        [("3366.1", "7")],
        [("3366.8", "9"), ("3368", "8"), ("3372", "8")],
        "3366.1:7:3366.8:9:3368:8:3372:8",
        831078360,
    ),
]


def test_constants():
    assert (MAX_DEPTH, DEFAULT_DEPTH, CHECKSUM_LEVELS) == (50, 10, 10)


@pytest.mark.parametrize(("bids", "asks", "text", "okx_signed"), OKX_EXAMPLES)
def test_checksum_matches_okx_documented_examples(bids, asks, text, okx_signed):
    assert checksum(bids, asks) == okx_signed & 0xFFFFFFFF
    assert checksum(bids, asks) == zlib.crc32(text.encode())
    assert OrderBook.from_levels(bids=bids, asks=asks).checksum() == checksum(bids, asks)


def test_checksum_covers_only_the_first_ten_levels_and_an_empty_book():
    bids = [(str(100 - i), "1") for i in range(12)]
    asks = [(str(200 + i), "1") for i in range(12)]
    assert checksum(bids, asks) == checksum(bids[:10], asks[:10])
    assert checksum(bids, asks) != checksum(bids[:9], asks[:10])
    assert checksum([], []) == zlib.crc32(b"") == 0
    only_asks = [("5", "1"), ("6", "2")]
    assert checksum([], only_asks) == zlib.crc32(b"5:1:6:2")


def test_top_orders_sides_best_first_and_keeps_strings():
    book = OrderBook.from_levels(
        bids=[("99.50", "1.0"), ("100.00", "2"), ("98", "3")],
        asks=[("101.5", "4"), ("101.00", "0.5"), ("103", "1")],
    )
    assert book.top(2) == (
        [("100.00", "2"), ("99.50", "1.0")],
        [("101.00", "0.5"), ("101.5", "4")],
    )
    assert book.best_bid() == ("100.00", "2")
    assert book.best_ask() == ("101.00", "0.5")
    assert not book.crossed()
    assert book.depths() == (3, 3)
    assert book.top(0) == ([], [])


def test_zero_deletes_by_value_and_a_resent_level_replaces_its_strings():
    book = OrderBook.from_levels(bids=[("100.0", "1")], asks=[("101", "1")])
    book.apply(bids=[("100", "2.50")])  # the same price, spelled otherwise
    assert book.top() == ([("100", "2.50")], [("101", "1")])
    book.apply(asks=[("101.000", "0.000")], bids=[("7", "0")])  # deleting an absent one is a no-op
    assert book.top() == ([("100", "2.50")], [])
    assert book.best_ask() is None
    book.clear()
    assert not book
    assert book.top() == ([], [])


def test_crossed():
    book = OrderBook.from_levels(bids=[("100", "1")], asks=[("100", "1")])
    assert book.crossed()
    book.apply(asks=[("100", "0"), ("100.5", "1")])
    assert not book.crossed()
    assert not OrderBook.from_levels(bids=[("1", "1")]).crossed()


@pytest.mark.parametrize(
    "level",
    [
        ("1e3", "1"),
        (" 1", "1"),
        ("1_000", "1"),
        ("NaN", "1"),
        ("Infinity", "1"),
        ("-1", "1"),
        ("0", "1"),
        ("0.000", "1"),
        ("1.", "1"),
        (".5", "1"),
        ("1", "-2"),
        ("1", "abc"),
        (1.5, "1"),
        ("1", None),
        ("1",),
        ("1", "2", "3"),
        None,
    ],
)
def test_bad_levels_raise_and_change_nothing(level):
    book = OrderBook.from_levels(bids=[("5", "1")], asks=[("6", "1")])
    with pytest.raises(BookError):
        book.apply(bids=[("4", "1"), level])
    with pytest.raises(BookError):
        book.apply(asks=[level])
    assert book.top() == ([("5", "1")], [("6", "1")])


def test_window_diff_deletes_a_leaving_level_and_adds_an_entering_one():
    server = OrderBook.from_levels(
        bids=[("100", "1"), ("99", "2"), ("98", "3")], asks=[("101", "1")]
    )
    sent = server.top(2)
    server.apply(bids=[("100", "0")])  # 98 enters the top 2
    update = window_diff(sent, server.top(2))
    assert update == ([("100", "0"), ("98", "3")], [])  # bids highest first
    server.apply(bids=[("99.5", "7")])  # 98 leaves it again
    assert window_diff(server.top(2), server.top(2)) == ([], [])
    assert is_empty(window_diff(server.top(2), server.top(2)))
    assert window_diff(sent, server.top(2)) == ([("100", "0"), ("99.5", "7")], [])


# --- properties -----------------------------------------------------------------------

# Prices on a small grid so that levels collide, enter and leave windows often; each
# price may be spelled two ways ("100.5" / "100.50") and sizes include zero spellings.
_TICKS = st.integers(min_value=1, max_value=120)


@st.composite
def _price(draw, base: int) -> str:
    ticks = base + draw(_TICKS)
    text = f"{ticks // 2}.{5 if ticks % 2 else 0}"
    return text + "0" if draw(st.booleans()) else text


_SIZE = st.one_of(
    st.sampled_from(["0", "0.0", "0.000"]),
    st.decimals(min_value="0.001", max_value="500", places=3).map(str),
    st.integers(min_value=1, max_value=9).map(str),
)


@st.composite
def _update(draw):
    bids = draw(st.lists(st.tuples(_price(0), _SIZE), max_size=12))
    asks = draw(st.lists(st.tuples(_price(100), _SIZE), max_size=12))
    return bids, asks


_STEP = st.one_of(
    st.tuples(st.just("apply"), _update()),
    st.tuples(st.just("send"), st.integers(min_value=0, max_value=2)),
    st.tuples(st.just("clear"), st.none()),
)


def _as_tuples(view):
    return [tuple(level) for level in view[0]], [tuple(level) for level in view[1]]


@settings(max_examples=200, deadline=None)
@given(
    depths=st.tuples(
        st.sampled_from([1, 2, 3, 5, DEFAULT_DEPTH]),
        st.integers(min_value=1, max_value=MAX_DEPTH),
        st.just(MAX_DEPTH),
    ),
    steps=st.lists(_STEP, min_size=1, max_size=60),
)
def test_clients_sent_window_diffs_hold_exactly_the_servers_top(depths, steps):
    """A client applying window_diff(last view sent, current view) holds the current view.

    Sends happen at random, so any number of server updates is conflated between two of
    them; levels enter and leave each client's window as better ones come and go.
    """
    server = OrderBook()
    clients = [OrderBook() for _ in depths]
    sent = [([], []) for _ in depths]
    for kind, arg in steps:
        if kind == "apply":
            server.apply(bids=arg[0], asks=arg[1])
            continue
        if kind == "clear":
            server.clear()
            continue
        depth = depths[arg]
        current = server.top(depth)
        update = window_diff(sent[arg], current)
        clients[arg].apply(bids=update[0], asks=update[1])
        sent[arg] = current
        held = clients[arg].top(MAX_DEPTH)
        assert held == current  # exactly the window: nothing more, nothing missing
        assert len(held[0]) <= depth and len(held[1]) <= depth
        assert clients[arg].checksum() == checksum(*current)
        if depth >= CHECKSUM_LEVELS:  # the client's checksum is the server book's own
            assert clients[arg].checksum() == server.checksum()


@settings(max_examples=100, deadline=None)
@given(start=_update(), updates=st.lists(_update(), max_size=8))
def test_conflated_updates_equal_the_updates_in_order(start, updates):
    one_by_one = OrderBook.from_levels(bids=start[0], asks=start[1])
    for bids, asks in updates:
        one_by_one.apply(bids=bids, asks=asks)
    merged = OrderBook.from_levels(bids=start[0], asks=start[1])
    bids, asks = conflate(updates)
    merged.apply(bids=bids, asks=asks)
    assert merged.top(MAX_DEPTH) == one_by_one.top(MAX_DEPTH)


@settings(max_examples=100, deadline=None)
@given(
    depth=st.integers(min_value=1, max_value=12),
    start=_update(),
    updates=st.lists(_update(), min_size=1, max_size=6),
)
def test_conflated_window_diffs_equal_one_diff(depth, start, updates):
    """Merging the per-update window diffs sent to one client equals one diff over all."""
    server = OrderBook.from_levels(bids=start[0], asks=start[1])
    first = server.top(depth)
    views = [first]
    for bids, asks in updates:
        server.apply(bids=bids, asks=asks)
        views.append(server.top(depth))
    diffs = [window_diff(a, b) for a, b in itertools.pairwise(views)]
    client = OrderBook.from_levels(bids=first[0], asks=first[1])
    bids, asks = conflate(diffs)
    client.apply(bids=bids, asks=asks)
    assert client.top(MAX_DEPTH) == views[-1]
    direct = OrderBook.from_levels(bids=first[0], asks=first[1])
    bids, asks = window_diff(first, views[-1])
    direct.apply(bids=bids, asks=asks)
    assert direct.top(MAX_DEPTH) == views[-1]


@settings(max_examples=100, deadline=None)
@given(update=_update())
def test_views_survive_a_json_round_trip(update):
    """Frames carry levels as JSON arrays; lists work wherever tuples do."""
    book = OrderBook.from_levels(bids=update[0], asks=update[1])
    view = book.top(DEFAULT_DEPTH)
    decoded = json.loads(json.dumps(view))
    assert checksum(*decoded) == checksum(*view)
    assert _as_tuples(decoded) == view
    other = OrderBook()
    other.apply(bids=decoded[0], asks=decoded[1])
    assert other.top(DEFAULT_DEPTH) == view
    assert window_diff(decoded, view) == ([], [])
