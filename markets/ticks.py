"""The tick schema: the one definition of what a price update carries on the wire.

Protocol v1 sends each tick as::

    {"type": "tick", "symbol": "BTC-USD", "seq": 1042, "ts": 1764072000123,
     "price": 97000.5, "bid": 96999.5, "ask": 97001.0, "size": 0.25}

and, when the source knows the aggressor of the trade, ``"side": "buy"`` or ``"sell"``
(issue 21; absent otherwise, so every client of before is unchanged).
"""

import json
from dataclasses import dataclass
from typing import Any

# Fields of a tick as stored in Redis history and sent on the wire, in wire order.
TICK_FIELDS = ("symbol", "seq", "ts", "price", "bid", "ask", "size")
# The aggressor sides a tick may carry ("buy": a buyer took an ask; "sell": a seller hit a bid).
SIDES = ("buy", "sell")


@dataclass(frozen=True, slots=True)
class TickDraft:
    """A priced tick before publishing gives it a ``seq`` and a ``ts``."""

    symbol: str
    price: float
    bid: float
    ask: float
    size: float
    side: str | None = None  # the aggressor, one of SIDES, when the source knows it


@dataclass(frozen=True, slots=True)
class Tick:
    symbol: str
    seq: int
    ts: int  # creation time, epoch milliseconds UTC
    price: float
    bid: float
    ask: float
    size: float
    side: str | None = None

    def as_message(self) -> dict[str, Any]:
        message = {
            "type": "tick",
            "symbol": self.symbol,
            "seq": self.seq,
            "ts": self.ts,
            "price": self.price,
            "bid": self.bid,
            "ask": self.ask,
            "size": self.size,
        }
        if self.side:
            message["side"] = self.side
        return message

    def to_json(self) -> str:
        return json.dumps(self.as_message(), separators=(",", ":"))

    @classmethod
    def from_stream_entry(cls, symbol: str, entry_id: bytes | str, fields: dict) -> "Tick":
        """Rebuild a tick from a history stream entry (its id is ``<seq>-0``)."""
        if isinstance(entry_id, bytes):
            entry_id = entry_id.decode()

        def get(name: str) -> str:
            value = fields.get(name.encode(), fields.get(name))
            return value.decode() if isinstance(value, bytes) else value

        return cls(
            symbol=symbol,
            seq=int(entry_id.split("-", 1)[0]),
            ts=int(get("ts")),
            price=float(get("price")),
            bid=float(get("bid")),
            ask=float(get("ask")),
            size=float(get("size")),
            side=get("side") or None,
        )
