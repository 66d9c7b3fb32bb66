"""Feed status per symbol for /metrics, read from Redis at scrape time.

Each symbol's producer writes its source's counters and state to Redis every second
(markets.keys.source_status_key, feeds.services); the last tick is in history. These
are shared facts, not per-process counts, so they are read when scraped (in the
scraping process) instead of being kept in every process's metric files.
"""

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from . import quotes
from .candles import now_ms
from .history import latest_ticks


class Families(Collector):
    """A fixed set of metric families, for one scrape."""

    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self):
        yield from self.families


async def feed_families() -> Families:
    symbols = await quotes.active_symbols()
    tickers = [s.ticker for s in symbols]
    at = now_ms()
    last = await latest_ticks(symbols=tickers) if tickers else {}
    status = await quotes.source_status(symbols=tickers) if tickers else {}

    age = GaugeMetricFamily(
        "ticker_feed_last_tick_age_seconds",
        "Seconds since the symbol's last published tick (absent: it never ticked).",
        labels=["symbol"],
    )
    up = GaugeMetricFamily(
        "ticker_feed_source_up",
        "1 when the symbol's feed source reports itself up (fresh report), else 0.",
        labels=["symbol", "source", "state"],
    )
    producer = GaugeMetricFamily(
        "ticker_feed_producer",
        "1 for the worker that produces the symbol now (fresh report); none: nobody.",
        labels=["symbol", "worker"],
    )
    rate = GaugeMetricFamily(
        "ticker_feed_ticks_per_second",
        "Ticks per second the symbol's source produced over the last few seconds.",
        labels=["symbol"],
    )
    reconnects = CounterMetricFamily(
        "ticker_exchange_reconnects",
        "Connections to the exchange lost and opened again by the symbol's current source.",
        labels=["symbol", "source"],
    )
    gaps = CounterMetricFamily(
        "ticker_exchange_sequence_gaps",
        "Gaps in the exchange's numbering seen by the symbol's current source.",
        labels=["symbol", "source"],
    )
    errors = CounterMetricFamily(
        "ticker_feed_source_errors",
        "Errors the symbol's current source reported.",
        labels=["symbol", "source"],
    )
    # Order books (issue 21): what the symbol's current source did to its book.
    book_updates = CounterMetricFamily(
        "ticker_book_updates",
        "Order-book changes (snapshots and deltas) the symbol's current source gave its book.",
        labels=["symbol", "source"],
    )
    resyncs = CounterMetricFamily(
        "ticker_book_resyncs",
        "Times the symbol's current source synced its book again (after a gap, say).",
        labels=["symbol", "source"],
    )
    book_gaps = CounterMetricFamily(
        "ticker_book_gaps",
        "Gaps in the exchange's book numbering seen by the symbol's current source.",
        labels=["symbol", "source"],
    )
    crossed = CounterMetricFamily(
        "ticker_book_crossed",
        "Times the symbol's book became crossed (best bid at or above best ask).",
        labels=["symbol", "source"],
    )
    book_families = {
        "book_updates": book_updates,
        "resyncs": resyncs,
        "book_gaps": book_gaps,
        "crossed": crossed,
    }
    for symbol in symbols:
        t = symbol.ticker
        if t in last:
            age.add_metric([t], max(at - last[t].ts, 0) / 1000)
        block = quotes.source_block(symbol.source, status.get(t))
        up.add_metric([t, symbol.source, block["state"]], 1.0 if block["state"] == "up" else 0.0)
        producer.add_metric([t, block["worker"] or "none"], 1.0 if block["worker"] else 0.0)
        rate.add_metric([t], float(block["ticks_per_s"]))
        reconnects.add_metric([t, symbol.source], float(block["reconnects"]))
        gaps.add_metric([t, symbol.source], float(block["gaps"]))
        errors.add_metric([t, symbol.source], float(block["errors"]))
        for name, family in book_families.items():
            family.add_metric([t, symbol.source], float(block[name]))
    return Families([age, up, producer, rate, reconnects, gaps, errors, *book_families.values()])
