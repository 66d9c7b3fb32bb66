"""Snapshots shared between subscribers: one Redis read and one JSON encode per burst.

When many clients subscribe to a symbol at once (a deploy, a reconnect storm), each
would otherwise read and encode the same 300 ticks. A read that *began after* a
subscriber joined the symbol's group covers that subscriber exactly as its own read
would (see PriceStreamConsumer.do_subscribe), so concurrent subscribers share it.
"""

import asyncio
import json
import time
from dataclasses import dataclass

from . import history


@dataclass(frozen=True)
class EncodedSnapshot:
    symbol: str
    epoch: str
    last_seq: int  # 0 when the symbol has no history
    text: str  # the whole "snapshot" frame, ready to send


def encode_snapshot(snap: history.Snapshot) -> EncodedSnapshot:
    head = json.dumps({"type": "snapshot", "symbol": snap.symbol, "epoch": snap.epoch})
    ticks = ",".join(t.to_json() for t in snap.ticks)
    return EncodedSnapshot(
        symbol=snap.symbol,
        epoch=snap.epoch,
        last_seq=snap.ticks[-1].seq if snap.ticks else 0,
        text=f'{head[:-1]}, "ticks": [{ticks}]}}',
    )


class SnapshotReader:
    """Per-process, per-event-loop coalescing of snapshot reads."""

    def __init__(self) -> None:
        # symbol -> (monotonic time the read began, the read)
        self._reads: dict[str, tuple[float, asyncio.Task[EncodedSnapshot]]] = {}

    async def read(self, *, symbol: str, joined_at: float) -> EncodedSnapshot:
        """A snapshot read that began at or after ``joined_at`` (time.monotonic())."""
        current = self._reads.get(symbol)
        if current is None or current[0] < joined_at:
            # Its own task, so a subscriber that disconnects does not cancel the others' read.
            task = asyncio.ensure_future(self._read(symbol))
            task.add_done_callback(_retrieve_exception)
            current = self._reads[symbol] = (time.monotonic(), task)
        return await asyncio.shield(current[1])

    @staticmethod
    async def _read(symbol: str) -> EncodedSnapshot:
        return encode_snapshot(await history.snapshot(symbol=symbol))


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
