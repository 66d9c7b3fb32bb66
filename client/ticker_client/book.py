"""A local order book, kept exact from ``book`` and ``book_update`` messages.

The client is its own distribution (it talks to the server over WebSocket only), so the
book and its checksum live here, not in the server's ``markets.book``; both follow
docs/protocol.md ("Order books"), and the client's tests check them against the
server's frames.

Prices and sizes are the decimal strings the server sent, kept as they are (the checksum
is computed from them); they are compared as :class:`~decimal.Decimal`.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from decimal import Decimal

CHECKSUM_LEVELS = 10

Level = tuple[str, str]


def checksum(bids: Sequence[Sequence[str]], asks: Sequence[Sequence[str]]) -> int:
    """The protocol's book checksum: unsigned CRC32 of ``b1p:b1s:a1p:a1s:b2p:...``.

    Over the first 10 levels per side (best first); where one side is shorter, only the
    other side's pair is written for that level (OKX's ``books`` checksum).
    """
    parts: list[str] = []
    for i in range(CHECKSUM_LEVELS):
        if i < len(bids):
            parts += (bids[i][0], bids[i][1])
        if i < len(asks):
            parts += (asks[i][0], asks[i][1])
    return zlib.crc32(":".join(parts).encode())


class LocalBook:
    """One symbol's book as the server sent it: the best ``depth`` levels per side."""

    __slots__ = ("_asks", "_bids", "depth", "epoch", "seq", "symbol", "ts")

    def __init__(self, symbol: str, *, depth: int = 0, epoch: str = "", seq: int = 0) -> None:
        self.symbol = symbol
        self.depth = depth
        self.epoch = epoch
        self.seq = seq
        self.ts = 0
        self._bids: dict[Decimal, Level] = {}
        self._asks: dict[Decimal, Level] = {}

    @classmethod
    def from_snapshot(cls, msg: dict) -> LocalBook:
        """A book from a ``book`` message."""
        book = cls(msg["symbol"], depth=int(msg["depth"]), epoch=str(msg.get("epoch", "")))
        book.seq = int(msg["seq"])
        book.ts = int(msg.get("ts") or 0)
        book.apply(msg["bids"], msg["asks"])
        return book

    def apply(self, bids: Iterable[Sequence[str]], asks: Iterable[Sequence[str]]) -> None:
        """Absolute sizes per level; a size of zero deletes the level."""
        for side, levels in ((self._bids, bids), (self._asks, asks)):
            for price, size in levels:
                key = Decimal(price)
                if Decimal(size) == 0:
                    side.pop(key, None)
                else:
                    side[key] = (price, size)

    # --- reading

    @property
    def bids(self) -> list[Level]:
        """(price, size) strings, best (highest) first."""
        return [self._bids[k] for k in sorted(self._bids, reverse=True)]

    @property
    def asks(self) -> list[Level]:
        """(price, size) strings, best (lowest) first."""
        return [self._asks[k] for k in sorted(self._asks)]

    def best_bid(self) -> Level | None:
        return self._bids[max(self._bids)] if self._bids else None

    def best_ask(self) -> Level | None:
        return self._asks[min(self._asks)] if self._asks else None

    @property
    def spread(self) -> Decimal | None:
        """Best ask minus best bid (exact), or None while a side is empty."""
        if not self._bids or not self._asks:
            return None
        return min(self._asks) - max(self._bids)

    @property
    def mid(self) -> Decimal | None:
        """Halfway between the best bid and the best ask (exact), or None."""
        if not self._bids or not self._asks:
            return None
        return (min(self._asks) + max(self._bids)) / 2

    def checksum(self) -> int:
        bids, asks = self.bids[:CHECKSUM_LEVELS], self.asks[:CHECKSUM_LEVELS]
        return checksum(bids, asks)

    def __len__(self) -> int:
        return len(self._bids) + len(self._asks)

    def __repr__(self) -> str:
        return (
            f"LocalBook({self.symbol!r}, seq={self.seq}, best_bid={self.best_bid()}, "
            f"best_ask={self.best_ask()})"
        )
