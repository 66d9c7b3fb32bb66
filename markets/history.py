"""Reads of recent tick history kept in Redis streams by markets.publishing."""

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from . import keys
from .redis import redis_for, shard_groups
from .ticks import Tick

SNAPSHOT_SIZE = 300


def _decode(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


async def latest_ticks(*, symbols: Iterable[str]) -> dict[str, Tick]:
    """The last published tick of each symbol that has one."""
    groups = shard_groups(symbols)

    async def read(client, group: list[str]) -> list:
        pipe = client.pipeline(transaction=False)
        for symbol in group:
            pipe.xrevrange(keys.history_key(symbol), count=1)
        return await pipe.execute()

    replies = await asyncio.gather(*(read(client, group) for client, group in groups))
    out: dict[str, Tick] = {}
    for (_, group), reply in zip(groups, replies, strict=True):
        for symbol, entries in zip(group, reply, strict=True):
            if entries:
                entry_id, fields = entries[0]
                out[symbol] = Tick.from_stream_entry(symbol, entry_id, fields)
    return out


async def ticks_after(*, symbol: str, after_seq: int, limit: int) -> list[Tick]:
    """Up to ``limit`` ticks with seq > ``after_seq``, ascending."""
    entries = await redis_for(symbol).xrange(
        keys.history_key(symbol), min=f"({after_seq}-0" if after_seq > 0 else "-", count=limit
    )
    return [Tick.from_stream_entry(symbol, eid, fields) for eid, fields in entries]


@dataclass(frozen=True)
class Snapshot:
    symbol: str
    epoch: str
    ticks: list[Tick]


async def snapshot(*, symbol: str, size: int = SNAPSHOT_SIZE) -> Snapshot:
    """The last ``size`` ticks of ``symbol`` (ascending) and the epoch they belong to."""
    pipe = redis_for(symbol).pipeline(transaction=True)
    pipe.xrevrange(keys.history_key(symbol), count=size)
    pipe.get(keys.epoch_key(symbol))
    entries, epoch = await pipe.execute()
    ticks = [Tick.from_stream_entry(symbol, eid, fields) for eid, fields in reversed(entries)]
    return Snapshot(symbol=symbol, epoch=_decode(epoch) or "", ticks=ticks)


async def current_epoch(*, symbol: str) -> str:
    """The epoch of ``symbol``'s numbering now ("" before its first tick)."""
    return _decode(await redis_for(symbol).get(keys.epoch_key(symbol))) or ""


@dataclass(frozen=True)
class Resume:
    """What resuming after ``since`` found: the missed ticks, or why it cannot resume."""

    symbol: str
    epoch: str
    ticks: list[Tick]
    reset_reason: str | None = None


RESET_HISTORY_TRUNCATED = "history_truncated"
RESET_EPOCH_CHANGED = "epoch_changed"


async def resume(*, symbol: str, since: int, epoch: str | None) -> Resume:
    """Every tick after ``since``, unless history no longer reaches back or seq was reset."""
    pipe = redis_for(symbol).pipeline(transaction=True)
    pipe.get(keys.epoch_key(symbol))
    pipe.get(keys.seq_key(symbol))
    pipe.xrange(keys.history_key(symbol), min="-", count=1)
    pipe.xrange(keys.history_key(symbol), min=f"({since}-0" if since > 0 else "-")
    current_epoch, current_seq, first, entries = await pipe.execute()
    current_epoch = _decode(current_epoch) or ""
    current_seq = int(current_seq or 0)
    # An empty epoch is the one a snapshot carries before the symbol's first tick: the
    # numbering had not started, so the ticks seen since belong to the current one.
    if (epoch and epoch != current_epoch) or since > current_seq:
        return Resume(symbol, current_epoch, [], RESET_EPOCH_CHANGED)
    oldest = Tick.from_stream_entry(symbol, first[0][0], first[0][1]).seq if first else None
    if since < current_seq and (oldest is None or oldest > since + 1):
        return Resume(symbol, current_epoch, [], RESET_HISTORY_TRUNCATED)
    ticks = [Tick.from_stream_entry(symbol, eid, fields) for eid, fields in entries]
    return Resume(symbol, current_epoch, ticks)
