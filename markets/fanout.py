"""Process-local fan-out: each web process receives a tick once and hands it to its subscribers.

With one channel-layer member per connection, every tick costs one channel-layer message
per subscriber: a Redis round trip each with the core layer, a task wake-up and a decode
each with the pub/sub layer (benchmarks/RESULTS.md, rounds 3 and 4). Here one member per
process and symbol joins the symbol's group (markets.symbols.symbol_group_name) and the
process delivers the pre-encoded frame to each local PriceStreamConsumer directly.
"""

import asyncio
import logging
from typing import Any, Protocol

from channels.layers import get_channel_layer

from . import history
from .publishing import TICK_EVENT_TYPE
from .snapshots import snapshot_reader
from .symbols import symbol_group_name

logger = logging.getLogger(__name__)


class TickSubscriber(Protocol):
    async def tick_message(self, event: dict[str, Any]) -> None: ...


class LocalFanout:
    """This event loop's single group member per symbol, and its local subscribers."""

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.members: dict[str, set[TickSubscriber]] = {}
        self.channel: str | None = None
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    async def add(self, symbol: str, subscriber: TickSubscriber) -> None:
        """Returns once ticks of ``symbol`` published from now on reach ``subscriber``."""
        async with self._lock:
            if self.channel is None:
                self.channel = await self.layer.new_channel()
            members = self.members.get(symbol)
            if members is None:
                await self.layer.group_add(symbol_group_name(symbol), self.channel)
                members = self.members[symbol] = set()
            members.add(subscriber)
            if self._task is None:
                self._task = asyncio.ensure_future(self._receive_forever())

    async def discard(self, symbol: str, subscriber: TickSubscriber) -> None:
        async with self._lock:
            members = self.members.get(symbol)
            if not members or subscriber not in members:
                return
            members.discard(subscriber)
            if not members:
                del self.members[symbol]
                await self.layer.group_discard(symbol_group_name(symbol), self.channel)
            if not self.members and self._task is not None:
                # Nothing left to deliver: stop receiving, so an idle process holds no
                # blocking read and a closing event loop has no task left behind. Not
                # awaited: a blocking read may take a while to unwind, and a subscriber
                # arriving meanwhile must not wait for it (a new loop starts at once).
                self._task.cancel()
                self._task = None

    async def _receive_forever(self) -> None:
        snapshots = snapshot_reader()
        while True:
            event = await self.layer.receive(self.channel)
            if event.get("type") != TICK_EVENT_TYPE:
                continue
            symbol, seq = event["symbol"], event["seq"]
            newest = snapshots.newest_seq(symbol)
            if newest and newest < seq - 1:
                # The layer lost ticks on the way to this process (a full or expired
                # queue): fetch them once here, so no subscriber has to.
                await self._refill(symbol, newest, seq)
            snapshots.observe(symbol=symbol, seq=seq, text=event["text"])
            for subscriber in list(self.members.get(symbol, ())):
                try:
                    await subscriber.tick_message(event)
                except Exception:
                    # One broken connection must not stop the others' ticks.
                    logger.exception("delivering a %s tick failed", symbol)

    async def _refill(self, symbol: str, newest: int, seq: int) -> None:
        snapshots = snapshot_reader()
        try:
            missed = await history.ticks_after(
                symbol=symbol, after_seq=newest, limit=seq - newest - 1
            )
        except Exception:
            logger.exception("refilling %s ticks %d..%d failed", symbol, newest + 1, seq - 1)
            return
        for tick in missed:
            snapshots.observe(symbol=symbol, seq=tick.seq, text=tick.to_json())


_fanouts: dict[asyncio.AbstractEventLoop, LocalFanout] = {}


def local_fanout() -> LocalFanout:
    loop = asyncio.get_running_loop()
    fanout = _fanouts.get(loop)
    if fanout is None:
        for old in [lp for lp in _fanouts if lp.is_closed()]:
            del _fanouts[old]
        fanout = _fanouts[loop] = LocalFanout()
    return fanout
