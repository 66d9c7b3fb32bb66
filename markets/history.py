"""Reads of recent tick history kept in Redis streams by markets.publishing."""

from collections.abc import Iterable

from . import keys
from .redis import redis_client
from .ticks import Tick


async def latest_ticks(*, symbols: Iterable[str]) -> dict[str, Tick]:
    """The last published tick of each symbol that has one."""
    symbols = list(symbols)
    pipe = redis_client().pipeline(transaction=False)
    for symbol in symbols:
        pipe.xrevrange(keys.history_key(symbol), count=1)
    out: dict[str, Tick] = {}
    for symbol, entries in zip(symbols, await pipe.execute(), strict=True):
        if entries:
            entry_id, fields = entries[0]
            out[symbol] = Tick.from_stream_entry(symbol, entry_id, fields)
    return out


async def ticks_after(*, symbol: str, after_seq: int, limit: int) -> list[Tick]:
    """Up to ``limit`` ticks with seq > ``after_seq``, ascending."""
    entries = await redis_client().xrange(
        keys.history_key(symbol), min=f"({after_seq}-0" if after_seq > 0 else "-", count=limit
    )
    return [Tick.from_stream_entry(symbol, eid, fields) for eid, fields in entries]
