"""The load-test harness checks books (loadtest.books): prev_seq and the checksum."""

import json
import time

import pytest

from loadtest.client import Run, TickClient
from loadtest.config import LoadTestConfig
from markets.book import OrderBook, checksum, window_diff


def config(**overrides) -> LoadTestConfig:
    values = {
        "url": "ws://127.0.0.1:1/ws/prices/", "origin": "http://127.0.0.1:1", "clients": 2,
        "symbols_per_client": 1, "symbols": ("BTC-USD",), "duration": 60.0, "ramp": 0.0,
        "processes": 1, "tick_rate": 10.0, "streams": ("ticks", "book"), "depth": 3,
    }  # fmt: skip
    values.update(overrides)
    return LoadTestConfig(**values)


def test_streams_and_depth_are_subscribe_options_and_checked():
    assert config().subscribe_options() == {"streams": ["ticks", "book"], "depth": 3}
    assert config(max_rate=2).subscribe_options()["max_rate"] == 2  # books take it in "all"
    assert config(max_rate=2).stream_rate == 10  # ...but it does not cap the ticks
    for bad in ({"streams": ("trades",)}, {"streams": ("ticks",)}, {"depth": 51}):
        with pytest.raises(ValueError):
            config(**bad)


async def test_clients_check_every_book_message_and_share_the_work():
    run = Run(config(), t0=time.time() - 1)
    clients = [TickClient(run, i, ["BTC-USD"]) for i in range(2)]
    now = time.time() * 1000
    book = OrderBook.from_levels(
        bids=[["99.5", "1"], ["99.0", "2"], ["98.5", "3"], ["98.0", "4"]],
        asks=[["100.0", "1"], ["100.5", "2"], ["101.0", "3"]],
    )
    view = book.top(3)
    snap = {"type": "book", "symbol": "BTC-USD", "seq": 7, "epoch": "e", "ts": int(now),
            "depth": 3, "bids": view[0], "asks": view[1], "checksum": checksum(*view)}  # fmt: skip

    def send(msg: dict, to=clients) -> None:
        for client in to:
            client._text(json.dumps(msg).encode(), now)

    send(snap)
    seq = 7
    for change in ({"bids": [["99.5", "0"]]}, {"asks": [["100.25", "5"]]}):
        book.apply(**change)
        new = book.top(3)
        bids, asks = window_diff(view, new)
        update = {"type": "book_update", "symbol": "BTC-USD", "seq": seq + 2, "prev_seq": seq,
                  "ts": int(now) - 30, "bids": bids, "asks": asks}  # fmt: skip
        send({**update, "checksum": checksum(*new)})
        view, seq = new, seq + 2
    t = run.totals
    assert (t.book_snapshots, t.book_updates_counted) == (2, 4)
    assert t.book_prev_seq_breaks == t.book_checksum_failures == 0
    assert t.book_conflated == 4 and 29 <= t.book_age.percentile(50) <= 31
    assert clients[0].books["BTC-USD"][1] is clients[1].books["BTC-USD"][1]  # shared check
    # A hole in prev_seq, and a checksum that does not match, are counted.
    base = {"type": "book_update", "symbol": "BTC-USD", "ts": int(now), "asks": []}
    send({**base, "seq": seq + 2, "prev_seq": seq + 1, "bids": [], "checksum": 0}, clients[:1])
    send(
        {**base, "seq": seq + 1, "prev_seq": seq, "bids": [["90", "1"]], "checksum": 1}, clients[1:]
    )
    assert t.book_prev_seq_breaks == 1 and t.book_checksum_failures == 1
