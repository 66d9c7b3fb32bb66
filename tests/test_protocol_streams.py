"""The ``streams`` and ``depth`` fields of subscribe and unsubscribe (issue 21; pure)."""

import pytest

from markets.book import DEFAULT_DEPTH, MAX_DEPTH
from streaming.protocol import ErrorCode, Mode, ProtocolError, Stream, parse_command

LIMIT = 50


def parse(**fields):
    return parse_command(
        {"action": "subscribe", "symbols": ["BTC-USD"], **fields}, symbol_limit=LIMIT
    )


def refused(raw) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_command(raw, symbol_limit=LIMIT)
    assert info.value.code == ErrorCode.BAD_REQUEST, info.value.message
    return info.value


def test_streams_default_to_ticks_so_todays_clients_are_unchanged():
    command = parse()
    assert command.streams == (Stream.TICKS,)
    assert command.depth == DEFAULT_DEPTH == 10
    unsub = parse_command({"action": "unsubscribe", "symbols": ["BTC-USD"]}, symbol_limit=LIMIT)
    assert unsub.streams == (Stream.TICKS,)


def test_streams_and_depth_are_parsed_once_each_in_order():
    command = parse(streams=["book", "ticks", "book"], depth=25)
    assert command.streams == (Stream.BOOK, Stream.TICKS)
    assert command.depth == 25
    assert parse(streams=["book"], depth=1).depth == 1
    assert parse(streams=["book"], depth=MAX_DEPTH).depth == 50
    unsub = parse_command(
        {"action": "unsubscribe", "symbols": ["BTC-USD"], "streams": ["book"]}, symbol_limit=LIMIT
    )
    assert unsub.streams == (Stream.BOOK,)


@pytest.mark.parametrize(
    "streams", [[], "book", ["trades"], ["book", "depth"], [1], [None], ["Book"], ["book"] * 5]
)
def test_an_unknown_or_ill_typed_stream_is_a_bad_request(streams):
    error = refused({"action": "subscribe", "symbols": ["BTC-USD"], "streams": streams, "id": 7})
    assert error.id == 7
    assert "streams" in error.message or "stream" in error.message
    refused({"action": "unsubscribe", "symbols": ["BTC-USD"], "streams": streams})


@pytest.mark.parametrize("depth", [0, 51, -1, 10.0, "10", True, [10]])
def test_depth_is_an_integer_from_1_to_50(depth):
    error = refused(
        {"action": "subscribe", "symbols": ["BTC-USD"], "streams": ["book"], "depth": depth}
    )
    assert "'depth' must be an integer from 1 to 50" in error.message


def test_depth_needs_the_book_stream_and_unsubscribe_takes_no_depth():
    assert "needs" in refused({"action": "subscribe", "symbols": ["BTC-USD"], "depth": 5}).message
    refused({"action": "unsubscribe", "symbols": ["BTC-USD"], "streams": ["book"], "depth": 5})


def test_max_rate_applies_to_books_in_any_mode_but_to_ticks_only_in_latest():
    command = parse(streams=["ticks", "book"], max_rate=4)
    assert command.max_rate == 4.0 and command.mode is Mode.ALL
    assert parse(streams=["book"], max_rate=0.5).max_rate == 0.5
    assert parse(mode="latest", max_rate=2).max_rate == 2.0
    error = refused({"action": "subscribe", "symbols": ["BTC-USD"], "max_rate": 2})
    assert "max_rate" in error.message


def test_since_needs_the_ticks_stream():
    error = refused(
        {
            "action": "subscribe",
            "symbols": ["BTC-USD"],
            "streams": ["book"],
            "since": {"BTC-USD": 3},
        }
    )
    assert "since" in error.message
    assert parse(streams=["ticks", "book"], since={"BTC-USD": 3}).since == {"BTC-USD": 3}
