"""The replay source: formats, bad rows, speed, looping."""

import json
import logging
import time

import pytest

from feeds.sources.replay import BadRow, Row, detect_format, parse_binance, read_rows
from tests.feeds_helpers import collecting, make_source

SAMPLES = "feeds/samples"


def replay(path, ticker="BTC-USD", **options):
    return make_source(ticker, "replay", file=str(path), **options)


def test_the_generic_csv_reads_epoch_ms_and_iso_and_names_bad_rows(tmp_path):
    f = tmp_path / "trades.csv"
    f.write_text(
        "ts,symbol,price,size,bid,ask\n"
        "1736121600000,BTC-USD,97000.5,0.25,97000.0,97001.0\n"
        "2025-01-06T00:00:01.500Z,BTC-USD,97001,0.5,,\n"
        "1736121602000,BTC-USD,-3,0.5,,\n"
        "yesterday,BTC-USD,97000,0.5,,\n"
        "1736121603000,BTC-USD,97000\n"
        "1736121604000,,97000,1,,\n"
        "2025-01-06T00:00:05,BTC-USD,97000,1,,\n"
    )
    rows = list(read_rows(f, "csv"))
    assert rows[0] == (2, Row(1736121600000, "BTC-USD", 97000.5, 0.25, 97000.0, 97001.0))
    assert rows[1] == (3, Row(1736121601500, "BTC-USD", 97001.0, 0.5, None, None))
    assert [(n, r) for n, r in rows[2:]] == [
        (4, BadRow("bad price")),
        (5, BadRow("bad ts")),
        (6, BadRow("wrong number of columns")),
        (7, BadRow("missing symbol")),
        (8, BadRow("bad ts")),  # a time without a zone is refused, not guessed
    ]
    assert detect_format(f) == "csv"


def test_ndjson_rows_and_bad_lines(tmp_path):
    f = tmp_path / "trades.ndjson"
    lines = [
        json.dumps({"ts": 1736121600000, "symbol": "ETH-USD", "price": 3400.1, "size": 2}),
        "{broken",
        json.dumps([1, 2]),
        json.dumps({"ts": "2025-01-06T00:00:01+00:00", "symbol": "ETH-USD", "price": "3400.2",
                    "size": "0.1", "bid": 3400.0, "ask": 3400.3}),
        json.dumps({"ts": 1736121602000, "symbol": "ETH-USD", "price": 3400, "size": -1}),
    ]  # fmt: skip
    f.write_text("\n".join(lines) + "\n")
    assert [(n, r) for n, r in read_rows(f, "ndjson")] == [
        (1, Row(1736121600000, "ETH-USD", 3400.1, 2.0)),
        (2, BadRow("not JSON")),
        (3, BadRow("not an object")),
        (4, Row(1736121601000, "ETH-USD", 3400.2, 0.1, 3400.0, 3400.3)),
        (5, BadRow("bad size")),
    ]
    assert detect_format(f) == "ndjson"


def test_binance_trades_csv_in_ms_and_in_microseconds():
    # id, price, qty, quote_qty, time, is_buyer_maker, is_best_match; no header.
    ms = "51175358,17.80180000,5.69000000,101.29224200,1583709433583,True,True".split(",")
    us = "4383500000,96982.07,0.03628,3518.5,1736121600054000,False,True".split(",")
    assert parse_binance(ms) == Row(1583709433583, None, 17.8018, 5.69)
    assert parse_binance(us) == Row(1736121600054, None, 96982.07, 0.03628)
    assert parse_binance(ms[:5]) == BadRow("wrong number of columns")
    assert parse_binance([*ms[:4], "soon", *ms[5:]]) == BadRow("bad time")


@pytest.mark.parametrize(
    ("name", "fmt", "ticker"),
    [
        ("btc-usd.csv", "csv", "BTC-USD"),
        ("eth-usd.ndjson", "ndjson", "ETH-USD"),
        ("BTCUSDT-trades-2025-01-06.csv", "binance", "BTC-USD"),
    ],
)
async def test_each_sample_file_plays(settings, name, fmt, ticker):
    path = settings.BASE_DIR / SAMPLES / name
    assert detect_format(path) == fmt
    rows = [r for _, r in read_rows(path, fmt)]
    assert len(rows) == 300 and not any(isinstance(r, BadRow) for r in rows)
    src = replay(path, ticker, speed=1_000_000)
    async with collecting(src) as c:
        await c.until(lambda: c.done, what="the end of the file")
    assert len(c.drafts) == 300
    assert (c.drafts[0].price, c.drafts[0].size) == (rows[0].price, rows[0].size)
    assert src.stats.state == "ended" and src.stats.bad == 0


async def test_bad_rows_are_counted_logged_once_per_kind_and_never_stop_it(tmp_path, caplog):
    f = tmp_path / "noisy.csv"
    good = "1736121600{:03d},BTC-USD,97000,1,,\n"
    f.write_text(
        "ts,symbol,price,size,bid,ask\n"
        + "".join(
            good.format(i) if i % 2 else "1736121600000,BTC-USD,oops,1,,\n" for i in range(60)
        )
    )
    src = replay(f, speed=1_000_000)
    with caplog.at_level(logging.WARNING, logger="feeds.sources.replay"):
        async with collecting(src) as c:
            await c.until(lambda: c.done)
    assert len(c.drafts) == 30 and src.stats.bad == 30
    logged = [r.getMessage() for r in caplog.records if "bad price" in r.getMessage()]
    # The first one with its line number, then the 10th with a count: not one per row.
    assert len(logged) == 2, logged
    assert "line 2" in logged[0] and "10 times so far" in logged[1]


async def test_rows_of_other_symbols_are_skipped_and_a_file_without_ours_is_down(tmp_path):
    f = tmp_path / "two.csv"
    f.write_text("ts,symbol,price,size\n1,ETH-USD,3400,1\n2,BTC-USD,97000,1\n3,ETH-USD,3401,1\n")
    src = replay(f, speed=1_000_000)
    async with collecting(src) as c:
        await c.until(lambda: c.done)
    assert [d.price for d in c.drafts] == [97000.0] and src.skipped == 2
    nobody = replay(f, "SOL-USD", speed=1_000_000)
    async with collecting(nobody) as c:
        await c.until(lambda: c.done)
    assert nobody.stats.state == "down" and "no playable rows" in nobody.stats.last_error


async def test_a_missing_file_reports_the_source_down(tmp_path):
    src = replay(tmp_path / "nope.csv")
    async with collecting(src) as c:
        await c.until(lambda: c.done)
    assert src.stats.state == "down" and "not found" in src.stats.last_error


async def test_speed_keeps_the_spacing_of_the_file_divided_by_the_speed(settings):
    path = settings.BASE_DIR / SAMPLES / "btc-usd.csv"
    rows = [r for _, r in read_rows(path, "csv")][:121]
    span = (rows[-1].ts_ms - rows[0].ts_ms) / 1000
    speed = 20
    src = replay(path, speed=speed)
    async with collecting(src) as c:
        await c.count(1)
        t0 = time.perf_counter()
        await c.count(121, timeout=span / speed * 3 + 5)
        elapsed = time.perf_counter() - t0
    achieved = span / elapsed
    print(
        f"\nreplay --speed {speed}: {span:.1f}s of trades in {elapsed:.2f}s, "
        f"a {achieved:.1f}x speed-up"
    )
    assert speed * 0.5 <= achieved <= speed * 1.1


async def test_the_fastest_replay_speed_up(settings):
    path = settings.BASE_DIR / SAMPLES / "btc-usd.csv"
    rows = [r for _, r in read_rows(path, "csv")]
    span = (rows[-1].ts_ms - rows[0].ts_ms) / 1000
    src = replay(path, speed=1_000_000, loop=True)
    async with collecting(src) as c:
        t0 = time.perf_counter()
        await c.count(3000, timeout=60)
        elapsed = time.perf_counter() - t0
    print(
        f"\nreplay --speed 1000000: 3000 rows ({src.laps} laps, {span * 10:.0f}s of trades) in "
        f"{elapsed:.3f}s = {3000 / elapsed:,.0f} rows/s, a {span * 10 / elapsed:,.0f}x speed-up"
    )
    assert src.laps >= 9


async def test_loop_plays_the_file_again_and_no_loop_ends(tmp_path):
    f = tmp_path / "three.csv"
    f.write_text("ts,symbol,price,size\n1,BTC-USD,1,1\n11,BTC-USD,2,1\n21,BTC-USD,3,1\n")
    looping = replay(f, speed=100, loop=True)
    async with collecting(looping) as c:
        await c.count(10)
    assert [d.price for d in c.drafts[:7]] == [1, 2, 3, 1, 2, 3, 1]
    assert looping.stats.state == "up"
    once = replay(f, speed=100)
    async with collecting(once) as c:
        await c.until(lambda: c.done)
    assert [d.price for d in c.drafts] == [1, 2, 3] and once.stats.state == "ended"
