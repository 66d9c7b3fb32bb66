"""The one small interface every source of ticks implements, and what they share.

A source turns one symbol's upstream (a simulator, a file, an exchange) into an async
iterator of ``TickDraft``s, and of ``BookDraft``s when it keeps an order book
(``has_book``), and keeps ``SourceStats`` counters while it runs. It never
numbers ticks: the publisher (markets.publishing) does, so seq carries on when a symbol
changes source or producer. The feed loop (feeds.services) runs one source per owned
symbol, publishes what it yields and writes its counters to Redis every second.
"""

import abc
import logging
import math
import random
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from markets.book import Level
from markets.ticks import TickDraft

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SymbolConfig:
    """What the feed knows about a symbol: its reference data and its source choice."""

    ticker: str
    asset_class: str
    tick_size: Decimal
    annual_volatility: float
    start_price: float
    source: str = "simulated"
    options: dict[str, Any] = field(default_factory=dict)

    def source_key(self) -> tuple[str, str]:
        """Equal for two configs exactly when their sources would behave the same."""
        return self.source, repr(sorted(self.options.items()))


@dataclass(frozen=True)
class SourceContext:
    """What the feed loop hands a source when it starts it."""

    last_price: float | None  # the symbol's last published price, if any
    tick_rate: float  # the simulated source's ticks per second
    seed: int  # the simulated source's seed


# States a source reports, in feeds list and /api/health/.
STARTING, UP, DOWN, ENDED = "starting", "up", "down", "ended"


@dataclass
class SourceStats:
    """Counters of one running source; the feed loop publishes them to Redis."""

    state: str = STARTING
    messages: int = 0  # frames or rows read from upstream
    ticks: int = 0  # drafts yielded
    gaps: int = 0  # upstream numbering showed missed data
    reconnects: int = 0  # connections lost and opened again
    bad: int = 0  # malformed messages or rows, skipped
    ignored: int = 0  # well-formed but unexpected messages, skipped
    errors: int = 0  # error replies from the exchange
    last_error: str = ""
    exchange_ms: int = 0  # upstream time of the last tick, epoch ms (0: none)
    # Order books (issue 21). The feed loop counts book_updates, resyncs and crossed as it
    # applies the source's BookDrafts (feeds.books); the source counts book_gaps, the
    # breaks in the upstream book's numbering that made it sync again.
    book_updates: int = 0  # BookDrafts applied to the symbol's book
    resyncs: int = 0  # snapshot BookDrafts after the first: the book was synced again
    book_gaps: int = 0  # upstream book updates missed (each followed by a resync)
    crossed: int = 0  # times the book became crossed (best bid >= best ask)

    def as_fields(self) -> dict[str, str | int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class BookDraft:
    """A change of the symbol's order book, as the source saw it.

    ``snapshot=True`` replaces the whole book (the first sync, or a resync after a gap);
    otherwise the levels are absolute sizes, "0" deleting a level, at any depth (the feed
    loop keeps the whole book and publishes the window of its top MAX_DEPTH). Prices and
    sizes are decimal strings exactly as the upstream gave them (markets.book).
    """

    symbol: str
    bids: Sequence[Level]
    asks: Sequence[Level]
    snapshot: bool = False


class KindLog:
    """Logs the first occurrence of each kind of problem, then at 10x, 100x, ... with a count.

    Bad rows and malformed messages are never logged once per row: a broken file or a
    noisy exchange must not flood the log.
    """

    def __init__(self, log: logging.Logger, prefix: str) -> None:
        self.log = log
        self.prefix = prefix
        self.counts: Counter[str] = Counter()

    def report(self, kind: str, detail: str = "") -> None:
        self.counts[kind] += 1
        n = self.counts[kind]
        if n == 1:
            self.log.warning("%s: %s%s", self.prefix, kind, f" ({detail})" if detail else "")
        elif _is_power_of_ten(n):
            latest = f"; latest {detail}" if detail else ""
            self.log.warning("%s: %s, %d times so far%s", self.prefix, kind, n, latest)


def _is_power_of_ten(n: int) -> bool:
    while n % 10 == 0:
        n //= 10
    return n == 1


class Backoff:
    """Exponential backoff with full jitter: each wait is uniform in [0, min(cap, base*2^n)]."""

    def __init__(self, *, base: float = 0.5, cap: float = 30.0) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2**self.attempt)
        self.attempt = min(self.attempt + 1, 30)
        # Never zero: a server that drops every connection at once must not be hammered.
        return max(0.05, random.uniform(0, ceiling))

    def reset(self) -> None:
        self.attempt = 0


def positive(value: Any) -> float | None:
    """``value`` as a finite float above 0, or None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def non_negative(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


class Source(abc.ABC):
    """One symbol's upstream. Subclasses set ``name`` and implement ``ticks``."""

    name: str = ""
    # Whether the source yields BookDrafts. One that does not has no book: the feed loop
    # publishes that once (available false, with no_book_reason()) when it starts it.
    has_book: bool = False

    def __init__(self, config: SymbolConfig, context: SourceContext) -> None:
        self.config = config
        self.context = context
        self.stats = SourceStats()

    @property
    def symbol(self) -> str:
        return self.config.ticker

    def no_book_reason(self) -> str:
        """Why the symbol has no order book, for REST and subscribers (has_book False)."""
        return f"the {self.name} source has no order book"

    @abc.abstractmethod
    def ticks(self) -> AsyncIterator[TickDraft | BookDraft]:
        """Yield drafts until cancelled, or return when the upstream has ended for good.

        Transient upstream failures (a dropped connection, a bad row) are handled inside,
        counted in ``stats``; only a bug should make this raise. A source with
        ``has_book`` also yields BookDrafts, a snapshot first.
        """


class ConfigError(ValueError):
    """The symbol's source options cannot work (a missing file, say)."""


def draft(
    symbol: str,
    price: float,
    bid: float | None,
    ask: float | None,
    size: float,
    *,
    side: str | None = None,
) -> TickDraft:
    """A draft with bid and ask defaulting to the price when upstream gave none.

    Upstream quotes are kept as they are (a trade may print outside a quote that has
    not caught up yet); nothing is clamped. ``side`` is the aggressor's, if known.
    """
    return TickDraft(
        symbol, price, price if bid is None else bid, price if ask is None else ask, size, side
    )
