"""``replay``: plays a file of trades at a speed, once or in a loop.

Formats (docs/feeds.md, "File formats"):

- the generic schema, CSV with a header row or NDJSON: ``ts`` (epoch ms or ISO-8601),
  ``symbol``, ``price``, ``size``, and optional ``bid``, ``ask``;
- Binance's public trades CSV (data.binance.vision): no header row, columns id, price,
  qty, quote_qty, time, is_buyer_maker, is_best_match; ``time`` in ms, or in µs in the
  spot files from 2025 on (told apart by size).

Options: ``file`` (relative paths are read from the project directory), ``format``
(auto, csv, ndjson, binance), ``speed`` (1 = real time, 10 = ten times faster),
``loop`` (start again at the end; otherwise the source ends), ``symbol`` (the generic
formats' symbol to play; default the ticker).

Rows keep their order and their spacing in time, divided by the speed. A bad row is
counted and skipped, and each kind of bad row is logged once with its line number (then
at 10x, 100x, ... with a count): it never stops the feed.
"""

import asyncio
import csv
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from django.conf import settings

from markets.ticks import TickDraft

from .base import DOWN, ENDED, UP, ConfigError, KindLog, Source, draft, non_negative, positive

logger = logging.getLogger(__name__)

GENERIC_REQUIRED = ("ts", "symbol", "price", "size")
BINANCE_COLUMNS = 7
# Epoch values above this are microseconds, not milliseconds (ms reach it in year 5138).
MICROSECONDS_FROM = 10**14
# Rows played between two yields to the event loop when the schedule has no pause.
YIELD_EVERY_ROWS = 200


@dataclass(frozen=True, slots=True)
class Row:
    ts_ms: float
    symbol: str | None
    price: float
    size: float
    bid: float | None = None
    ask: float | None = None


@dataclass(frozen=True, slots=True)
class BadRow:
    kind: str


def parse_ts(value: object) -> float | None:
    """Epoch milliseconds from epoch ms (a number) or an ISO-8601 string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = str(value).strip()
        try:
            number = float(text)
        except ValueError:
            try:
                moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                return None
            if moment.tzinfo is None:
                return None  # a time without a zone is ambiguous: refused, not guessed
            return moment.timestamp() * 1000
    return number if number > 0 else None


def parse_generic(record: object) -> Row | BadRow:
    """One generic row (a dict of the CSV header's columns, or a JSON object)."""
    if not isinstance(record, dict):
        return BadRow("not an object")
    missing = [name for name in GENERIC_REQUIRED if record.get(name) in (None, "")]
    if missing:
        return BadRow(f"missing {', '.join(missing)}")
    ts = parse_ts(record["ts"])
    if ts is None:
        return BadRow("bad ts")
    price = positive(record["price"])
    if price is None:
        return BadRow("bad price")
    size = non_negative(record["size"])
    if size is None:
        return BadRow("bad size")
    quotes = []
    for name in ("bid", "ask"):
        raw = record.get(name)
        if raw in (None, ""):
            quotes.append(None)
            continue
        value = positive(raw)
        if value is None:
            return BadRow(f"bad {name}")
        quotes.append(value)
    return Row(ts, str(record["symbol"]), price, size, quotes[0], quotes[1])


def parse_binance(fields: list[str]) -> Row | BadRow:
    """One row of Binance's trades CSV: id, price, qty, quote_qty, time, is_buyer_maker, ..."""
    if len(fields) != BINANCE_COLUMNS:
        return BadRow("wrong number of columns")
    price = positive(fields[1])
    if price is None:
        return BadRow("bad price")
    size = non_negative(fields[2])
    if size is None:
        return BadRow("bad qty")
    try:
        ts = int(fields[4])
    except ValueError:
        return BadRow("bad time")
    if ts <= 0:
        return BadRow("bad time")
    return Row(ts / 1000 if ts >= MICROSECONDS_FROM else float(ts), None, price, size)


def detect_format(path: Path) -> str:
    """ndjson, csv (generic, with a header) or binance, from the name and the first line."""
    if path.suffix.lower() in {".ndjson", ".jsonl", ".json"}:
        return "ndjson"
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            if line.startswith("{"):
                return "ndjson"
            first = line.split(",", 1)[0].strip()
            return "binance" if first.isdigit() else "csv"
    return "csv"


def _is_binance_header(fields: list[str]) -> bool:
    return bool(fields) and not fields[0].strip().isdigit() and "price" in fields[1].lower()


def read_rows(path: Path, fmt: str) -> Iterator[tuple[int, Row | BadRow]]:
    """Every data row of the file with its line number (1-based), parsed or refused."""
    with path.open(encoding="utf-8", errors="replace", newline="") as f:
        if fmt == "ndjson":
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    yield number, BadRow("not JSON")
                    continue
                yield number, parse_generic(record)
        elif fmt == "csv":
            reader = csv.reader(f)
            header: list[str] | None = None
            for fields in reader:
                number = reader.line_num
                if not fields or not any(x.strip() for x in fields):
                    continue
                if header is None:
                    header = [name.strip().lower() for name in fields]
                    if not set(GENERIC_REQUIRED) <= set(header):
                        raise ConfigError(
                            f"{path.name}: the header row needs columns "
                            f"{', '.join(GENERIC_REQUIRED)} (found {', '.join(header)})"
                        )
                    continue
                if len(fields) != len(header):
                    yield number, BadRow("wrong number of columns")
                    continue
                yield number, parse_generic(dict(zip(header, fields, strict=True)))
        elif fmt == "binance":
            reader = csv.reader(f)
            for fields in reader:
                number = reader.line_num
                if not fields or not any(x.strip() for x in fields):
                    continue
                if number == 1 and _is_binance_header(fields):
                    continue  # some tools add one; Binance's own files have none
                yield number, parse_binance(fields)
        else:
            raise ConfigError(f"unknown replay format {fmt!r}")


def resolve(file: str) -> Path:
    path = Path(file)
    if not path.is_absolute():
        path = Path(settings.BASE_DIR) / path
    return path


class ReplaySource(Source):
    name = "replay"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        options = self.config.options
        self.path = resolve(str(options.get("file", "")))
        self.speed = float(options.get("speed", 1))
        self.loop = bool(options.get("loop", False))
        self.format = str(options.get("format", "auto"))
        self.file_symbol = str(options.get("symbol", self.config.ticker))
        self.laps = 0
        self.skipped = 0  # rows of other symbols (generic formats)
        self.log = KindLog(logger, f"replay {self.symbol} {self.path.name}")

    def _check(self) -> str:
        if not self.path.is_file():
            raise ConfigError(f"replay file not found: {self.path}")
        if not 0 < self.speed:
            raise ConfigError("speed must be above 0")
        return detect_format(self.path) if self.format == "auto" else self.format

    async def ticks(self) -> AsyncIterator[TickDraft]:
        try:
            fmt = self._check()
        except ConfigError as exc:
            self.stats.state = DOWN
            self.stats.last_error = str(exc)
            logger.error("replay %s: %s", self.symbol, exc)
            return
        loop = asyncio.get_running_loop()
        self.stats.state = UP
        # Wall time at which the lap's first row plays.
        start_wall = loop.time()
        since_yield = 0
        while True:
            played, first_ts, last_ts = 0, None, None
            try:
                rows = read_rows(self.path, fmt)
                for number, row in rows:
                    self.stats.messages += 1
                    if isinstance(row, BadRow):
                        self.stats.bad += 1
                        self.log.report(f"bad row: {row.kind}", f"line {number}")
                        continue
                    if row.symbol is not None and row.symbol != self.file_symbol:
                        self.skipped += 1
                        continue
                    # Time never goes back: an out-of-order row plays at once.
                    ts = row.ts_ms if last_ts is None else max(row.ts_ms, last_ts)
                    if first_ts is None:
                        first_ts = ts
                    due = start_wall + (ts - first_ts) / 1000 / self.speed
                    wait = due - loop.time()
                    if wait > 0.0005:
                        await asyncio.sleep(wait)
                        since_yield = 0
                    elif since_yield >= YIELD_EVERY_ROWS:
                        await asyncio.sleep(0)
                        since_yield = 0
                    since_yield += 1
                    last_ts = ts
                    played += 1
                    self.stats.ticks += 1
                    self.stats.exchange_ms = int(row.ts_ms)
                    yield draft(self.symbol, row.price, row.bid, row.ask, row.size)
            except (OSError, ConfigError) as exc:
                self.stats.state = DOWN
                self.stats.last_error = str(exc)
                logger.error("replay %s: %s", self.symbol, exc)
                return
            self.laps += 1
            logger.info(
                "replay %s: lap %d of %s: %d ticks, %d bad rows, %d rows of other symbols",
                self.symbol, self.laps, self.path.name, played, self.stats.bad, self.skipped,
            )  # fmt: skip
            if played == 0:
                self.stats.state = DOWN
                self.stats.last_error = (
                    f"no playable rows for {self.file_symbol} in {self.path.name}"
                )
                logger.error("replay %s: %s", self.symbol, self.stats.last_error)
                return
            if not self.loop:
                self.stats.state = ENDED
                return
            # The next lap starts one average row spacing after the last row.
            spacing = (last_ts - first_ts) / max(played - 1, 1)
            start_wall = due + spacing / 1000 / self.speed
