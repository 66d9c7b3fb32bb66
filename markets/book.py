"""Order books: the data structure, its top-N window, the window diff and the checksum.

Pure (no Django, no Redis, no I/O), shared by the producer (feeds/), the web process
(streaming/) and the Python client, so all of them hold a book the same way.

A level is ``(price, size)``: two decimal strings exactly as the source gave them. They
are compared as ``Decimal`` (ordering, "is this size zero") and never re-formatted, so
the checksum a client computes from the frames it received is the one the server
computed from the same strings.

The one rule that keeps a client exact (issue 21): a sender remembers the view (top
``depth`` levels per side) it last sent a client, and sends ``window_diff(last_view,
current_view)``. However many producer updates were merged in between (conflation) and
however the window moved (a level leaving the top N is deleted, one entering is added),
the client then holds exactly the current view, with the same checksum.
"""

import re
import zlib
from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation

from sortedcontainers import SortedDict

MAX_DEPTH = 50  # the deepest view anyone is sent (producer to Redis, server to client)
DEFAULT_DEPTH = 10  # a book subscription's depth when the client names none
CHECKSUM_LEVELS = 10  # levels per side the checksum covers

Level = tuple[str, str]
Side = list[Level]
View = tuple[Side, Side]  # (bids best first, asks best first)

ZERO = "0"

# Plain non-negative decimals only ("97000.50", "0.00100000", "3"): Decimal() alone would
# also take " 1", "1_000", "1e3", "NaN" and "Infinity", strings no client could be
# expected to compare or checksum the same way.
_DECIMAL = re.compile(r"\d+(?:\.\d+)?")


class BookError(ValueError):
    """A level that cannot be part of a book (not a plain decimal, a zero price...)."""


def _parse(level: Sequence[str]) -> tuple[Decimal, str, str, bool]:
    """``level`` as (price key, price string, size string, is a deletion), or BookError."""
    try:
        price, size = level
    except (TypeError, ValueError):
        raise BookError(f"a level is [price, size], got {level!r}") from None
    if not isinstance(price, str) or not _DECIMAL.fullmatch(price):
        raise BookError(f"price must be a decimal string, got {price!r}")
    if not isinstance(size, str) or not _DECIMAL.fullmatch(size):
        raise BookError(f"size must be a decimal string, got {size!r}")
    try:
        key = Decimal(price)
        deleted = Decimal(size) == 0
    except InvalidOperation:  # unreachable after the pattern; kept for safety
        raise BookError(f"not a decimal: {level!r}") from None
    if key == 0:
        raise BookError(f"price must be above 0, got {price!r}")
    return key, price, size, deleted


class OrderBook:
    """Price levels per side, keyed by the price's Decimal value.

    Sides are ``SortedDict``s (sortedcontainers): O(log n) updates and O(depth) reads of
    the top, whatever the book's full depth (an exchange snapshot may hold thousands).
    """

    __slots__ = ("_asks", "_bids")

    def __init__(self) -> None:
        self._bids: SortedDict = SortedDict()  # Decimal -> (price, size); best is last
        self._asks: SortedDict = SortedDict()  # Decimal -> (price, size); best is first

    @classmethod
    def from_levels(
        cls, *, bids: Iterable[Sequence[str]] = (), asks: Iterable[Sequence[str]] = ()
    ) -> "OrderBook":
        """A book holding ``bids`` and ``asks`` (zero sizes are skipped)."""
        book = cls()
        book.apply(bids=bids, asks=asks)
        return book

    def apply(
        self, *, bids: Iterable[Sequence[str]] = (), asks: Iterable[Sequence[str]] = ()
    ) -> None:
        """Apply absolute levels: a size replaces the level's (strings and all), "0" deletes.

        Every level is checked first, so a bad one raises BookError and changes nothing.
        """
        parsed_bids = [_parse(level) for level in bids]
        parsed_asks = [_parse(level) for level in asks]
        for side, parsed in ((self._bids, parsed_bids), (self._asks, parsed_asks)):
            for key, price, size, deleted in parsed:
                if deleted:
                    side.pop(key, None)
                else:
                    side[key] = (price, size)

    def clear(self) -> None:
        self._bids.clear()
        self._asks.clear()

    def top(self, depth: int = MAX_DEPTH) -> View:
        """The best ``depth`` levels per side: bids highest first, asks lowest first."""
        if depth <= 0:
            return [], []
        bid_values = self._bids.values()
        bids = list(reversed(bid_values[-depth:]))
        asks = list(self._asks.values()[:depth])
        return bids, asks

    def best_bid(self) -> Level | None:
        return self._bids.peekitem(-1)[1] if self._bids else None

    def best_ask(self) -> Level | None:
        return self._asks.peekitem(0)[1] if self._asks else None

    def crossed(self) -> bool:
        """True when the best bid is at or above the best ask (a broken book)."""
        return bool(self._bids and self._asks) and (
            self._bids.peekitem(-1)[0] >= self._asks.peekitem(0)[0]
        )

    def depths(self) -> tuple[int, int]:
        """How many levels each side holds (bids, asks)."""
        return len(self._bids), len(self._asks)

    def __bool__(self) -> bool:
        return bool(self._bids or self._asks)

    def checksum(self) -> int:
        return checksum(*self.top(CHECKSUM_LEVELS))


def checksum(bids: Sequence[Sequence[str]], asks: Sequence[Sequence[str]]) -> int:
    """OKX ``books`` checksum: unsigned CRC32 of ``b1p:b1s:a1p:a1s:b2p:...``.

    Over the first CHECKSUM_LEVELS levels of each side (best first); where one side is
    shorter, only the other side's pair is written for that level.
    """
    parts: list[str] = []
    for i in range(CHECKSUM_LEVELS):
        if i < len(bids):
            parts.append(bids[i][0])
            parts.append(bids[i][1])
        if i < len(asks):
            parts.append(asks[i][0])
            parts.append(asks[i][1])
    return zlib.crc32(":".join(parts).encode())


def _side_diff(
    old: Sequence[Sequence[str]], new: Sequence[Sequence[str]], *, best_high: bool
) -> Side:
    # Keyed by the price strings first: only the levels that changed are parsed as
    # Decimal (the hot path diffs two 50-level views per message). A price spelled anew
    # ("100" -> "100.0") is one level: the new spelling is sent, never a deletion of the
    # old one, which would delete the level it names.
    before = {price: size for price, size in old}
    after = {price: size for price, size in new}
    changes: dict[Decimal, Level] = {}
    for price, size in after.items():
        if before.get(price) != size:
            changes[Decimal(price)] = (price, size)
    for price in before:
        if price not in after:
            changes.setdefault(Decimal(price), (price, ZERO))
    return [changes[key] for key in sorted(changes, reverse=best_high)]


def window_diff(old: View, new: View) -> View:
    """The update (absolute sizes, "0" deletes) that turns view ``old`` into ``new`` exactly.

    Levels of ``old`` missing from ``new`` are deleted (with the price string the holder
    of ``old`` has), levels new or changed in ``new`` are sent whole. Bids come highest
    first, asks lowest first. Applying it to an ``OrderBook`` that holds exactly ``old``
    leaves exactly ``new``.
    """
    return _side_diff(old[0], new[0], best_high=True), _side_diff(old[1], new[1], best_high=False)


def conflate(updates: Iterable[View]) -> View:
    """Merge updates by price level, the later one winning (Lightstreamer's COMMAND mode).

    Applying the result to any book gives the same book as applying ``updates`` in order,
    because every update is absolute per level: only a level's last value counts.
    """
    merged_bids: dict[Decimal, Level] = {}
    merged_asks: dict[Decimal, Level] = {}
    for bids, asks in updates:
        for merged, side in ((merged_bids, bids), (merged_asks, asks)):
            for price, size in side:
                merged[Decimal(price)] = (price, size)
    bids = [merged_bids[key] for key in sorted(merged_bids, reverse=True)]
    asks = [merged_asks[key] for key in sorted(merged_asks)]
    return bids, asks


def is_empty(update: View) -> bool:
    return not update[0] and not update[1]
