"""Subscription: one connection's hold on one symbol, from pending to live.

A subscription starts *pending*: it has joined the symbol's feed, so live ticks reach
it, but its snapshot or replay is still on its way; it holds those ticks. go_live()
takes the seq the history reached and releases the held ticks through the same seq
check as every later tick, so the seam has no gap and no duplicate.
"""

import logging
from typing import TYPE_CHECKING

from .feed import SymbolFeed
from .outbox import Outbox
from .protocol import Mode

if TYPE_CHECKING:
    from .cohort import Cohort

logger = logging.getLogger(__name__)


class Subscription:
    """Pending -> live, the last seq sent, the delivery mode, and the outbox it feeds."""

    __slots__ = (
        "cohort", "feed", "held", "last_seq", "max_rate", "mode", "outbox", "snapshot_size",
    )  # fmt: skip

    def __init__(
        self,
        feed: SymbolFeed,
        outbox: Outbox,
        *,
        mode: Mode = Mode.ALL,
        max_rate: float | None = None,
        snapshot_size: int = 300,
    ) -> None:
        self.feed = feed
        self.outbox = outbox
        self.mode = mode
        self.max_rate = max_rate
        self.snapshot_size = snapshot_size
        self.last_seq = 0  # seq of the last tick sent (in history or live)
        # The cohort (streaming.cohort) that takes this subscription's ticks, if any.
        self.cohort: Cohort | None = None
        # Live ticks (seq, text, ts) held while history is on its way; None once live.
        self.held: list[tuple[int, str, int]] | None = []
        if mode is Mode.LATEST:
            outbox.add_slot(feed.symbol, max_rate=max_rate)

    @property
    def symbol(self) -> str:
        return self.feed.symbol

    @property
    def is_live(self) -> bool:
        return self.held is None

    def offer(
        self, seq: int, text: str, ts: int, live: bool = True, now: float | None = None
    ) -> bool:
        """Called by the feed with each tick; False once the connection is slow.

        ``live`` is False for ticks the feed fetched from history (a refill after an
        outage): those are never judged by their age.
        """
        held = self.held
        if held is not None:
            held.append((seq, text, ts))
            return True
        last = self.last_seq
        if seq <= last:
            return True  # already sent in a snapshot or replay
        if last and seq != last + 1 and self.mode is Mode.ALL:
            # The feed delivers contiguous ticks (it refills what the layer lost), so
            # only a seam can open a hole; fill it from the feed's recent ticks.
            texts = self.feed.cached_range(after_seq=last, before_seq=seq)
            if texts is None:
                logger.error(
                    "%s: ticks %d..%d are missing for a subscriber", self.symbol, last + 1, seq - 1
                )
            else:
                self.outbox.put_history(texts)
        self.last_seq = seq
        if self.mode is Mode.ALL:
            if live:
                return self.outbox.put_tick(text, ts, now)
            self.outbox.put_history([text])
            return True
        self.outbox.put_latest(self.feed.symbol, text, ts)
        return True

    def replay(self, texts: list[str], tss: list[int]) -> None:
        """Queue history after a resume point: all of it, or in ``latest`` only the newest."""
        if self.mode is Mode.ALL:
            self.outbox.put_history(texts)
        else:
            for text, ts in zip(texts, tss, strict=True):
                self.outbox.put_latest(self.feed.symbol, text, ts)

    def go_live(self, last_seq: int) -> bool:
        """Called once history up to ``last_seq`` is queued; False if that made it slow."""
        self.last_seq = last_seq
        held, self.held = self.held or [], None
        ok = True
        for seq, text, ts in held:
            ok = self.offer(seq, text, ts) and ok
        return ok

    def rewind(self) -> bool:
        """Called when history must be sent again (a reset): hold live ticks until then.

        Returns False for a subscription still waiting for its first history: whoever
        is sending that one will also take it live.
        """
        if self.held is not None:
            return False
        if self.cohort is not None:
            self.cohort.leave(self.outbox)  # pending again: ticks take the per-tick path
        self.held = []
        return True

    def close(self) -> None:
        if self.cohort is not None:
            self.cohort.leave(self.outbox)
        self.held = None
        if self.mode is Mode.LATEST:
            self.outbox.drop_slot(self.feed.symbol)
