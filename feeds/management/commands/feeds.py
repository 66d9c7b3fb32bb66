"""``manage.py feeds list`` and ``manage.py feeds set SYMBOL SOURCE [options]``.

``list`` shows each symbol's source, its owner (the producer's worker and lease token),
the age of its last tick, its ticks per second and its counters, as its producer last
reported them (docs/feeds.md, "Counters"). ``set`` changes a symbol's source; the
producing worker applies it within a few seconds, and seq carries on.
"""

import argparse
import asyncio
import json
import time

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from feeds.sources.replay import resolve
from markets import keys
from markets.history import latest_ticks
from markets.models import FeedSource, Symbol, source_options_errors
from markets.quotes import SOURCE_REPORT_FRESH_SECONDS, source_status
from markets.redis import close_redis_client, shard_groups

COLUMNS = (
    ("symbol", 10), ("source", 9), ("state", 8), ("worker", 24), ("token", 30),
    ("last_tick", 9), ("ticks/s", 8), ("msgs", 8), ("gaps", 5), ("reconn", 6),
    ("bad", 5), ("errors", 6), ("book", 8), ("resync", 6), ("bgaps", 5), ("crossed", 7),
)  # fmt: skip


def _decode(value):
    return value.decode() if isinstance(value, bytes) else value


async def gather_rows(symbols: list[Symbol]) -> list[dict]:
    """One row per symbol: configuration, lease owner, last tick and reported status.

    Over the running loop's Redis clients (markets.redis), which it leaves open: they are
    the loop's, shared with whatever else runs on it (a feed loop, in a test). Closing
    them here under another task's call in flight left that call's connection open in a
    pool nobody held (issue 22, docs/operations.md); the loop's owner closes them.
    """
    tickers = [s.ticker for s in symbols]
    owner_of: dict[str, str | None] = {}
    for client, group in shard_groups(tickers):  # each lease on its symbol's host
        pipe = client.pipeline(transaction=False)
        for ticker in group:
            pipe.get(keys.lease_key(ticker))
        owner_of.update(zip(group, (_decode(v) for v in await pipe.execute()), strict=True))
    owners = [owner_of[t] for t in tickers]
    last = await latest_ticks(symbols=tickers)
    status = await source_status(symbols=tickers)
    now = time.time() * 1000
    rows = []
    for symbol, owner in zip(symbols, owners, strict=True):
        st = status.get(symbol.ticker, {})
        reported = (now - st["updated_ms"]) / 1000 if "updated_ms" in st else None
        current = bool(
            st
            and owner
            and st.get("token") == owner
            and st.get("source") == symbol.source
            and reported is not None
            and reported <= SOURCE_REPORT_FRESH_SECONDS
        )
        tick = last.get(symbol.ticker)
        rows.append(
            {
                "symbol": symbol.ticker,
                "active": symbol.active,
                "source": symbol.source,
                "options": symbol.source_options,
                "state": st.get("state", "unknown") if current else "unknown",
                "worker": st.get("worker", "") if current else "",
                "token": owner or "",
                "last_tick_age_s": None if tick is None else round((now - tick.ts) / 1000, 1),
                "last_seq": None if tick is None else tick.seq,
                "ticks_per_s": st.get("ticks_per_s", 0.0) if current else 0.0,
                "messages": st.get("messages", 0),
                "gaps": st.get("gaps", 0),
                "reconnects": st.get("reconnects", 0),
                "bad": st.get("bad", 0),
                "errors": st.get("errors", 0),
                "book_updates": st.get("book_updates", 0),
                "resyncs": st.get("resyncs", 0),
                "book_gaps": st.get("book_gaps", 0),
                "crossed": st.get("crossed", 0),
                "last_error": st.get("last_error", ""),
                "reported_s_ago": None if reported is None else round(reported, 1),
            }
        )
    return rows


def _cell(row: dict, name: str) -> str:
    value = {
        "last_tick": row["last_tick_age_s"],
        "ticks/s": row["ticks_per_s"],
        "msgs": row["messages"],
        "reconn": row["reconnects"],
        "book": row["book_updates"],
        "resync": row["resyncs"],
        "bgaps": row["book_gaps"],
    }.get(name, row.get(name))
    if name == "last_tick":
        return "-" if value is None else f"{value}s"
    if name == "symbol" and not row["active"]:
        return f"{value}*"
    return "" if value is None else str(value)


async def _rows_on_own_loop(symbols: list[Symbol]) -> list[dict]:
    """gather_rows on the command's own loop, whose clients it closes before the loop ends."""
    try:
        return await gather_rows(symbols)
    finally:
        await close_redis_client()


class Command(BaseCommand):
    help = "List the symbols' feed sources and their state, or change a symbol's source."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        listing = sub.add_parser("list", help="each symbol's source, owner and counters")
        listing.add_argument("--json", action="store_true", help="print JSON, one object")
        setting = sub.add_parser("set", help="change a symbol's source")
        setting.add_argument("symbol")
        setting.add_argument("source", choices=FeedSource.values)
        setting.add_argument(
            "--product-id",
            help="coinbase: the product id (default the ticker); binance: the symbol, "
            "e.g. btcusdt (default the ticker without its dash)",
        )
        setting.add_argument("--file", help="replay: the file to play")
        setting.add_argument(
            "--format", choices=("auto", "csv", "ndjson", "binance"), help="replay: file format"
        )
        setting.add_argument("--speed", type=float, help="replay: 1 = real time, 10 = 10x")
        setting.add_argument(
            "--loop",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="replay: start again at the end (default: stop)",
        )
        setting.add_argument(
            "--file-symbol", help="replay, generic formats: the file's symbol to play"
        )

    def handle(self, *args, action: str, **options) -> None:
        if action == "list":
            self.list(as_json=options["json"])
        else:
            self.set(options)

    def list(self, *, as_json: bool) -> None:
        symbols = list(Symbol.objects.order_by("ticker"))
        rows = asyncio.run(_rows_on_own_loop(symbols))
        if as_json:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        self.stdout.write("  ".join(name.ljust(width) for name, width in COLUMNS))
        for row in rows:
            line = "  ".join(_cell(row, name).ljust(width) for name, width in COLUMNS)
            self.stdout.write(line.rstrip())
            if row["last_error"] and row["state"] != "up":
                self.stdout.write(f"    last error: {row['last_error']}")
        if any(not row["active"] for row in rows):
            self.stdout.write("* inactive")

    def set(self, options: dict) -> None:
        try:
            symbol = Symbol.objects.get(ticker=options["symbol"])
        except Symbol.DoesNotExist:
            raise CommandError(f"unknown symbol {options['symbol']!r}") from None
        source = options["source"]
        given = {
            "product_id": options["product_id"],
            "file": options["file"],
            "format": options["format"],
            "speed": options["speed"],
            "loop": options["loop"],
            "file_symbol": options["file_symbol"],
        }
        chosen: dict = {}
        if source == FeedSource.COINBASE and given["product_id"]:
            chosen["product_id"] = given["product_id"]
        elif source == FeedSource.BINANCE and given["product_id"]:
            chosen["symbol"] = given["product_id"].lower()
        elif source == FeedSource.REPLAY:
            names = {"file": "file", "format": "format", "speed": "speed", "loop": "loop"}
            chosen = {key: given[arg] for arg, key in names.items() if given[arg] is not None}
            if given["file_symbol"]:
                chosen["symbol"] = given["file_symbol"]
            if isinstance(chosen.get("speed"), float) and chosen["speed"].is_integer():
                chosen["speed"] = int(chosen["speed"])
        unused = [
            f"--{name.replace('_', '-')}"
            for name, value in given.items()
            if value is not None and not self._used(source, name)
        ]
        if unused:
            raise CommandError(f"{source} takes no {', '.join(unused)}")
        errors = source_options_errors(source, chosen)
        if errors:
            raise CommandError("; ".join(errors))
        symbol.source, symbol.source_options = source, chosen
        try:
            symbol.full_clean()
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        symbol.save(update_fields=["source", "source_options"])
        self.stdout.write(
            f"{symbol.ticker}: source {source} {json.dumps(chosen, sort_keys=True)}; "
            "the producing worker switches within a few seconds"
        )
        if source == FeedSource.REPLAY and not resolve(chosen["file"]).is_file():
            # The workers read the file, maybe on another machine: a warning, not an error.
            self.stderr.write(
                f"warning: {resolve(chosen['file'])} is not a file here; the worker that "
                "produces the symbol must be able to read it"
            )

    @staticmethod
    def _used(source: str, option: str) -> bool:
        if option == "product_id":
            return source in (FeedSource.COINBASE, FeedSource.BINANCE)
        return source == FeedSource.REPLAY
