"""Snapshots shared between subscribers: one small Redis read per subscribe, one encode per tick.

When many clients subscribe to a symbol (a deploy, a reconnect storm), each would
otherwise read, parse and encode the same 300 ticks. Two rules keep that cheap and exact:

- A read that *began after* a subscriber joined the symbol's group covers that
  subscriber exactly as its own read would (see PriceStreamConsumer.do_subscribe),
  so concurrent subscribers share one read.
- A later read starts from the newest snapshot this process already holds and fetches
  only the ticks after it (an XRANGE from its last seq), so each tick is parsed and
  encoded once per process, not once per subscriber.
"""

import asyncio
import json
import time
from dataclasses import dataclass
from functools import cached_property

from . import history, keys
from .redis import redis_client
from .ticks import Tick


@dataclass(frozen=True)
class EncodedSnapshot:
    symbol: str
    epoch: str
    last_seq: int  # 0 when the symbol has no history
    tick_texts: tuple[str, ...]  # each tick's JSON, ascending seq

    @cached_property
    def text(self) -> str:
        """The whole "snapshot" frame, ready to send."""
        head = json.dumps({"type": "snapshot", "symbol": self.symbol, "epoch": self.epoch})
        return f'{head[:-1]}, "ticks": [{",".join(self.tick_texts)}]}}'


def encode_snapshot(snap: history.Snapshot) -> EncodedSnapshot:
    return EncodedSnapshot(
        symbol=snap.symbol,
        epoch=snap.epoch,
        last_seq=snap.ticks[-1].seq if snap.ticks else 0,
        tick_texts=tuple(t.to_json() for t in snap.ticks),
    )


async def _extend(base: EncodedSnapshot, size: int) -> EncodedSnapshot | None:
    """``base`` brought up to date with the ticks after it, or None if it cannot be."""
    pipe = redis_client().pipeline(transaction=True)
    pipe.get(keys.epoch_key(base.symbol))
    pipe.xrange(keys.history_key(base.symbol), min=f"({base.last_seq}-0", count=size + 1)
    epoch, entries = await pipe.execute()
    epoch = epoch.decode() if isinstance(epoch, bytes) else (epoch or "")
    newer = [Tick.from_stream_entry(base.symbol, eid, fields) for eid, fields in entries]
    if epoch != base.epoch or len(newer) > size or (newer and newer[0].seq != base.last_seq + 1):
        return None  # a new epoch, trimmed history, or more than a snapshot holds
    if not newer:
        return base
    texts = (*base.tick_texts, *(t.to_json() for t in newer))[-size:]
    return EncodedSnapshot(base.symbol, epoch, newer[-1].seq, texts)


class SnapshotReader:
    """Per-process, per-event-loop snapshot reads, shared and incremental."""

    def __init__(self, *, size: int = history.SNAPSHOT_SIZE) -> None:
        self.size = size
        # symbol -> (monotonic time the read began, the read)
        self._reads: dict[str, tuple[float, asyncio.Task[EncodedSnapshot]]] = {}
        # symbol -> the newest snapshot read, the base of the next one
        self._latest: dict[str, EncodedSnapshot] = {}

    async def read(self, *, symbol: str, joined_at: float) -> EncodedSnapshot:
        """A snapshot read that began at or after ``joined_at`` (time.monotonic())."""
        current = self._reads.get(symbol)
        if current is None or current[0] < joined_at:
            # Its own task, so a subscriber that disconnects does not cancel the others' read.
            task = asyncio.ensure_future(self._read(symbol))
            task.add_done_callback(_retrieve_exception)
            current = self._reads[symbol] = (time.monotonic(), task)
        return await asyncio.shield(current[1])

    def observe(self, *, symbol: str, seq: int, text: str) -> None:
        """Extend the newest snapshot with a live tick this process received."""
        latest = self._latest.get(symbol)
        # Only the next seq keeps it contiguous; every other copy of a tick (one per
        # local subscriber) or a tick after a hole is ignored.
        if latest is not None and seq == latest.last_seq + 1:
            texts = (*latest.tick_texts, text)[-self.size :]
            self._latest[symbol] = EncodedSnapshot(symbol, latest.epoch, seq, texts)

    def newest_seq(self, symbol: str) -> int | None:
        """The last seq this process holds for ``symbol``, if it holds any."""
        latest = self._latest.get(symbol)
        return None if latest is None else latest.last_seq

    def cached_range(self, *, symbol: str, after_seq: int, before_seq: int) -> list[str] | None:
        """The ticks with after_seq < seq < before_seq if this process holds them all."""
        latest = self._latest.get(symbol)
        if latest is None or latest.last_seq < before_seq - 1:
            return None
        first_seq = latest.last_seq - len(latest.tick_texts) + 1
        if first_seq > after_seq + 1:
            return None
        start = after_seq + 1 - first_seq
        return list(latest.tick_texts[start : start + (before_seq - after_seq - 1)])

    async def _read(self, symbol: str) -> EncodedSnapshot:
        base = self._latest.get(symbol)
        snap = await _extend(base, self.size) if base is not None else None
        if snap is None:
            snap = encode_snapshot(await history.snapshot(symbol=symbol, size=self.size))
        latest = self._latest.get(symbol)
        # Reads may finish out of order; keep the newest as the next base.
        if latest is None or snap.last_seq >= latest.last_seq or snap.epoch != latest.epoch:
            self._latest[symbol] = snap
        return snap


def _retrieve_exception(task: asyncio.Task) -> None:
    # Every waiter may have gone; do not let asyncio log the error as unretrieved.
    if not task.cancelled():
        task.exception()


_readers: dict[asyncio.AbstractEventLoop, SnapshotReader] = {}


def snapshot_reader() -> SnapshotReader:
    loop = asyncio.get_running_loop()
    reader = _readers.get(loop)
    if reader is None:
        # Forget readers of closed loops (tests run one loop per test).
        for old in [lp for lp in _readers if lp.is_closed()]:
            del _readers[old]
        reader = _readers[loop] = SnapshotReader()
    return reader
