"""Checking order books in the load-test harness: prev_seq and the checksum, cheaply.

A client holds each subscribed book as a *view* (bids, asks: lists of [price, size]
strings, best first). Every ``book_update`` must name the client's seq as ``prev_seq``
and, applied to the client's view, give a view whose checksum (docs/protocol.md, "Order
books") is the frame's. Thousands of clients get the same frame for the same view, so
the work is done once per process: results are cached by frame bytes with the view the
frame was applied to, and reused only for a client whose view is that one (the same
object, or an equal one); a client whose view differed is checked on its own. Nothing
here imports Django.
"""

import zlib
from decimal import Decimal

CHECKSUM_LEVELS = 10
CACHE_LIMIT = 50_000

View = tuple[list, list]


def checksum(bids: list, asks: list) -> int:
    parts: list[str] = []
    for i in range(CHECKSUM_LEVELS):
        if i < len(bids):
            parts += (bids[i][0], bids[i][1])
        if i < len(asks):
            parts += (asks[i][0], asks[i][1])
    return zlib.crc32(":".join(parts).encode())


def _apply_side(levels: list, changes: list, *, reverse: bool) -> list:
    side = {Decimal(p): (p, s) for p, s in levels}
    for price, size in changes:
        key = Decimal(price)
        if Decimal(size) == 0:
            side.pop(key, None)
        else:
            side[key] = (price, size)
    return [side[k] for k in sorted(side, reverse=reverse)]


class BookChecks:
    """One process's cache of checked book frames."""

    def __init__(self) -> None:
        self._snapshots: dict[bytes, tuple[View, bool]] = {}
        self._updates: dict[bytes, tuple[View, View, bool]] = {}

    def snapshot(self, data: bytes, msg: dict) -> tuple[View, bool]:
        """The view of a ``book`` frame, and whether its checksum holds."""
        hit = self._snapshots.get(data)
        if hit is None:
            view = ([tuple(x) for x in msg["bids"]], [tuple(x) for x in msg["asks"]])
            hit = (view, checksum(*view) == msg["checksum"])
            if len(self._snapshots) > CACHE_LIMIT:
                self._snapshots.clear()
            self._snapshots[data] = hit
        return hit

    def update(self, data: bytes, msg: dict, view: View) -> tuple[View, bool]:
        """``view`` after the ``book_update`` frame, and whether its checksum holds."""
        hit = self._updates.get(data)
        if hit is not None and (hit[0] is view or hit[0] == view):
            # The same frame on the same view (equal, if reached another way): the same
            # result, and the client now shares it, so later checks hit by identity.
            return hit[1], hit[2]
        new = (
            _apply_side(view[0], msg["bids"], reverse=True),
            _apply_side(view[1], msg["asks"], reverse=False),
        )
        ok = checksum(*new) == msg["checksum"]
        if len(self._updates) > CACHE_LIMIT:
            self._updates.clear()
        self._updates[data] = (view, new, ok)
        return new, ok
