"""Cohorts: batching connections that hold the same live symbols share one frame a round.

Delivering a tick to a subscriber costs a few Python calls (the seq check, the outbox's
bounds, its batch timer), and a batching connection then costs a frame built and
written per round: about 30 µs of the web process's CPU per connection and round on
the benchmark machine, most of it the same work for every connection that gets the
same ticks (benchmarks/RESULTS.md, round 10). Dashboards on the default symbol list,
or programs following one market, hold the same symbols.

A connection joins the cohort of its set of symbols when it can take shared frames:
it batches (``batch_ms`` above 0), every subscription is live in ``all`` mode, the
server offers the plain write (streaming.extensions), and each subscription has caught
up with its feed (the next tick the feed delivers is the next one it needs). Its
subscriptions then skip the per-tick path: the feed hands each tick once to each
cohort, and at the end of the delivery round the cohort builds one frame of the
round's ticks and writes it to every member whose socket takes it at once and whose
``batch_ms`` window is open. Any other member (a full socket, a reply waiting, a window
not yet open, ticks already too old) gets the ticks through its outbox exactly as
without the cohort, with the same bounds, order and 4008. A subscription's ``last_seq``
is kept by the feed on every tick, so a connection can leave at any time (a subscribe,
an unsubscribe, a reset, the end) and go on through the per-tick path with nothing to
catch up.
"""

from collections.abc import Iterable
from typing import TYPE_CHECKING

from telemetry.metrics import DELIVERY, LAG

from .loops import PerLoop
from .outbox import ROUND, Outbox, joined_frame, now_ms
from .protocol import Mode

if TYPE_CHECKING:
    from .feed import SymbolFeed
    from .subscription import Subscription


class Cohort:
    """The member connections of one set of feeds, and the ticks of the open round."""

    def __init__(self, feeds: frozenset["SymbolFeed"], registry: "Cohorts") -> None:
        self.feeds = feeds
        self._registry = registry
        self.members: dict[Outbox, list[Subscription]] = {}
        # The round's ticks, in the order the feeds delivered them, and their ts (0 for
        # a tick fetched from history, which is never judged by its age).
        self._texts: list[str] = []
        self._tss: list[int] = []

    def add(self, text: str, ts: int, live: bool) -> None:
        """Called by a feed with each tick it delivers."""
        if not ROUND.open:
            # Outside a delivery round (a catch-up after an outage): through each outbox.
            for outbox in list(self.members):
                _through_outbox(outbox, [text], [ts if live else 0])
            return
        if not self._texts:
            ROUND.cohorts.append(self)
        self._texts.append(text)
        self._tss.append(ts if live else 0)

    def release(self) -> None:
        """Called at the end of the delivery round: the round's ticks to every member."""
        texts, tss = self._texts, self._tss
        self._texts, self._tss = [], []
        if not texts or not self.members:
            return
        now = now_ms()
        oldest = min((ts for ts in tss if ts), default=0)
        payload: bytes | None = None
        shared = 0
        for outbox in list(self.members):
            if oldest and now - oldest > outbox.max_age_ms:
                _through_outbox(outbox, texts, tss)  # too old to show as live: its rules
                continue
            if outbox.can_write_shared(now):
                if payload is None:
                    payload = joined_frame(texts).encode()
                if outbox.write_shared(payload, now):
                    shared += 1
                    continue
            _through_outbox(outbox, texts, tss)
        if shared:
            DELIVERY.ticks += len(texts) * shared
            DELIVERY.frames += shared
            if oldest:
                LAG.observe_many((now - oldest) / 1000, shared)

    def leave(self, outbox: Outbox) -> None:
        """Called when a member can no longer take shared frames (or is gone)."""
        self._registry.leave(self, outbox)


def _through_outbox(outbox: Outbox, texts: list[str], tss: list[int]) -> None:
    """The per-tick path: queued behind what the outbox holds, with its bounds."""
    for text, ts in zip(texts, tss, strict=True):
        if ts:
            if not outbox.put_tick(text, ts):
                return  # closed as slow: nothing more goes to it
        else:
            outbox.put_history([text])


class Cohorts:
    """This event loop's cohorts, by set of feeds."""

    def __init__(self) -> None:
        self.by_feeds: dict[frozenset[SymbolFeed], Cohort] = {}

    def join(self, outbox: Outbox, subs: list["Subscription"]) -> Cohort:
        feeds = frozenset(sub.feed for sub in subs)
        cohort = self.by_feeds.get(feeds)
        if cohort is None:
            cohort = self.by_feeds[feeds] = Cohort(feeds, self)
            for feed in feeds:
                feed.cohorts.append(cohort)
        cohort.members[outbox] = subs
        for sub in subs:
            sub.cohort = cohort
        return cohort

    def leave(self, cohort: Cohort, outbox: Outbox) -> None:
        subs = cohort.members.pop(outbox, None)
        for sub in subs or ():
            sub.cohort = None
        if not cohort.members and self.by_feeds.get(cohort.feeds) is cohort:
            del self.by_feeds[cohort.feeds]
            for feed in cohort.feeds:
                feed.cohorts.remove(cohort)


local_cohorts = PerLoop(Cohorts)


def can_share(outbox: Outbox, subs: Iterable["Subscription"]) -> bool:
    """Whether a connection with ``outbox`` and ``subs`` is one that takes shared frames."""
    subs = list(subs)
    return bool(
        subs
        and outbox.batch_ms
        and outbox.can_share()
        and all(sub.mode is Mode.ALL and sub.held is None and sub.cohort is None for sub in subs)
    )


def caught_up(subs: Iterable["Subscription"]) -> bool:
    """Whether the next tick each feed delivers is the next one its subscription needs.

    A snapshot may be newer than the ticks this process has delivered yet; one older
    would leave the difference out, since a member's last_seq is set without the seq
    check (streaming.feed.SymbolFeed.deliver).
    """
    return all(sub.last_seq == sub.feed.last_seq for sub in subs)
