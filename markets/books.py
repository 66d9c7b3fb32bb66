"""Order books in Redis and on the channel layer: the fenced publish step and its readers.

The producer (feeds.books) holds each symbol's authoritative book and hands this module
what to publish: either a snapshot (the whole top MAX_DEPTH, under a new epoch) or the
window diff of its top MAX_DEPTH since the last message it published. One script call
per Redis host, fenced by the same lease as ticks (a stale producer cannot publish a
book either), then:

- the book hash (markets.keys.book_key) holds the current top MAX_DEPTH, its epoch, its
  seq and its ts; the seq is the book's own counter, +1 per published message, so a
  reader sees any missed one;
- the log stream (markets.keys.book_log_key) holds the latest BOOK_LOG_DEPTH updates of
  the current epoch at ``<seq>-0`` (a snapshot empties it);
- one ``book.message`` event goes to the symbol's group (markets.symbols), for the web
  processes (streaming/)::

    {"type": "book.message", "symbol": s, "epoch": e, "seq": n, "prev_seq": n - 1 (0 for
     a snapshot), "ts": ms, "snapshot": bool, "bids": [[p, sz], ...], "asks": [...],
     "checksum": crc of the producer's top 10, "available": bool, "reason": str}

A symbol whose source keeps no book gets a snapshot with ``available`` false, no levels
and a ``reason``, so readers can say so rather than show an empty book.
"""

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from telemetry import metrics

from . import keys
from .book import View, checksum
from .publishing import UNFENCED_FOR_TESTS, now_ms
from .redis import redis_client, redis_for, shard_url
from .symbols import symbol_group_name

BOOK_EVENT_TYPE = "book.message"

# Results of the publish script, per book message (> 0 is the message's seq).
REFUSED = 0  # the lease is not the publisher's
NEEDS_SNAPSHOT = -1  # an update whose epoch is not the stored one (Redis lost the book)

# KEYS per message: lease, book hash, log stream. ARGV: token, log maxlen, then per
# message: epoch, snapshot ("1"/"0"), ts, view bids, view asks, update bids, update asks
# (JSON), available ("1"/"0"), reason. An update is only applied on top of the epoch it
# was diffed in: when the stored epoch differs (Redis lost or replaced the book), the
# script refuses it with -1 and the producer sends a snapshot under a new epoch instead.
_BOOK_LUA = """
local token = ARGV[1]
local maxlen = ARGV[2]
local out = {}
for i = 0, (#KEYS / 3) - 1 do
  local lease_key, book_key, log_key = KEYS[3*i+1], KEYS[3*i+2], KEYS[3*i+3]
  local a = 3 + 9*i
  local epoch, snapshot, ts = ARGV[a], ARGV[a+1], ARGV[a+2]
  if token ~= 'unfenced for tests' and redis.call('GET', lease_key) ~= token then
    out[i+1] = 0
  elseif snapshot ~= '1' and redis.call('HGET', book_key, 'epoch') ~= epoch then
    out[i+1] = -1
  else
    local seq = redis.call('HINCRBY', book_key, 'seq', 1)
    redis.call('HSET', book_key, 'epoch', epoch, 'ts', ts, 'bids', ARGV[a+3],
      'asks', ARGV[a+4], 'available', ARGV[a+7], 'reason', ARGV[a+8])
    if snapshot == '1' then
      redis.call('DEL', log_key)
    else
      redis.call('XADD', log_key, 'MAXLEN', '~', maxlen, seq .. '-0',
        'ts', ts, 'bids', ARGV[a+5], 'asks', ARGV[a+6])
    end
    out[i+1] = seq
  end
end
return out
"""


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class BookMessage:
    """What a producer publishes for one symbol: a snapshot or a window-diff update."""

    symbol: str
    epoch: str
    snapshot: bool
    view: View  # the producer's top MAX_DEPTH after this message
    update: View  # snapshot: the view itself; else window_diff(last view, view)
    available: bool = True
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Published:
    """A BookMessage the script accepted, with its seq and ts."""

    message: BookMessage
    seq: int
    ts: int

    def event(self) -> dict[str, Any]:
        m = self.message
        bids, asks = m.update
        return {
            "type": BOOK_EVENT_TYPE,
            "symbol": m.symbol,
            "epoch": m.epoch,
            "seq": self.seq,
            "prev_seq": 0 if m.snapshot else self.seq - 1,
            "ts": self.ts,
            "snapshot": m.snapshot,
            "bids": [list(level) for level in bids],
            "asks": [list(level) for level in asks],
            "checksum": checksum(*m.view),
            "available": m.available,
            "reason": m.reason,
        }


class BookPublisher:
    """Publishes book messages, fenced by the producer's lease (like TickPublisher)."""

    def __init__(self, *, lease_token: str) -> None:
        if not lease_token or lease_token == UNFENCED_FOR_TESTS:
            raise ValueError(
                "BookPublisher needs the producer's lease token; tests that publish "
                "without a lease use BookPublisher.unfenced_for_tests()"
            )
        self._setup(lease_token)

    @classmethod
    def unfenced_for_tests(cls) -> "BookPublisher":
        """A publisher that skips the lease fence. For tests only: never in a producer."""
        publisher = cls.__new__(cls)
        publisher._setup(UNFENCED_FOR_TESTS)
        return publisher

    def _setup(self, lease_token: str) -> None:
        self.lease_token = lease_token
        self._script = redis_client().register_script(_BOOK_LUA)
        self._layer = get_channel_layer()
        # The source label of ticker_book_messages_published_total (set by the feed loop).
        self.source_of: Callable[[str], str] = lambda symbol: ""

    async def publish(self, messages: Sequence[BookMessage]) -> list[int]:
        """Store and fan out ``messages`` (one per symbol at most); their script results.

        A result is the message's seq, REFUSED (lease not ours) or NEEDS_SNAPSHOT.
        """
        if not messages:
            return []
        ts = now_ms()
        by_host: dict[str, list[int]] = {}
        for i, m in enumerate(messages):
            by_host.setdefault(shard_url(m.symbol), []).append(i)
        parts = list(by_host.values())
        replies = await asyncio.gather(
            *(self._run_script([messages[i] for i in part], ts) for part in parts)
        )
        results = [REFUSED] * len(messages)
        for part, reply in zip(parts, replies, strict=True):
            for i, result in zip(part, reply, strict=True):
                results[i] = int(result)
        published = [
            Published(m, seq, ts) for m, seq in zip(messages, results, strict=True) if seq > 0
        ]
        for p in published:
            symbol = p.message.symbol
            kind = "snapshot" if p.message.snapshot else "update"
            metrics.BOOK_MESSAGES.labels(symbol, self.source_of(symbol), kind).inc()
        await self._fan_out(published)
        return results

    async def _run_script(self, messages: Sequence[BookMessage], ts: int) -> list:
        script_keys: list[str] = []
        args: list[str | int] = [self.lease_token, settings.BOOK_LOG_DEPTH]
        for m in messages:
            script_keys += [keys.lease_key(m.symbol), keys.book_key(m.symbol)]
            script_keys.append(keys.book_log_key(m.symbol))
            args += [
                m.epoch,
                "1" if m.snapshot else "0",
                ts,
                _dumps(m.view[0]),
                _dumps(m.view[1]),
                _dumps(m.update[0]),
                _dumps(m.update[1]),
                "1" if m.available else "0",
                m.reason,
            ]
        return await self._script(keys=script_keys, args=args, client=redis_for(messages[0].symbol))

    async def _fan_out(self, published: list[Published]) -> None:
        if not published:
            return
        events = [(symbol_group_name(p.message.symbol), p.event()) for p in published]
        send_many = getattr(self._layer, "group_send_many", None)
        if send_many is not None:
            await send_many(events)
            return
        await asyncio.gather(*(self._layer.group_send(group, ev) for group, ev in events))


# --- Readers (REST, and web processes filling or refilling their books) ---------------


@dataclass(frozen=True, slots=True)
class BookState:
    """A symbol's current book as Redis holds it: the producer's top MAX_DEPTH."""

    symbol: str
    epoch: str
    seq: int
    ts: int
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]
    has_book: bool  # False: the symbol's source keeps no book (see reason)
    reason: str = ""

    def top(self, depth: int) -> View:
        return self.bids[:depth], self.asks[:depth]


@dataclass(frozen=True, slots=True)
class BookUpdate:
    """One logged update: the window diff of the producer's top MAX_DEPTH at ``seq``."""

    seq: int
    ts: int
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _levels(value: bytes | str | None) -> list[tuple[str, str]]:
    return [(p, s) for p, s in json.loads(_text(value) or "[]")]


def _state(symbol: str, fields: dict) -> BookState | None:
    got = {_text(k): v for k, v in fields.items()}
    if "epoch" not in got:
        return None
    return BookState(
        symbol=symbol,
        epoch=_text(got["epoch"]),
        seq=int(_text(got.get("seq")) or 0),
        ts=int(_text(got.get("ts")) or 0),
        bids=_levels(got.get("bids")),
        asks=_levels(got.get("asks")),
        has_book=_text(got.get("available")) != "0",
        reason=_text(got.get("reason")),
    )


async def read_book(*, symbol: str) -> BookState | None:
    """The symbol's current book, or None when no producer has published one."""
    return _state(symbol, await redis_for(symbol).hgetall(keys.book_key(symbol)))


async def book_updates_after(
    *, symbol: str, seq: int, epoch: str | None = None
) -> list[BookUpdate] | None:
    """Every update after ``seq`` up to the current one, in order, or None if any is gone.

    None means the caller cannot catch up from ``seq`` and must start again from
    ``read_book``: the book has a new epoch (or not ``epoch``), or the log no longer
    reaches back to ``seq + 1``. An empty list: ``seq`` is the current one.
    """
    pipe = redis_for(symbol).pipeline(transaction=True)
    pipe.hmget(keys.book_key(symbol), "epoch", "seq")
    pipe.xrange(keys.book_log_key(symbol), min=f"({seq}-0" if seq > 0 else "-")
    (current_epoch, current_seq), entries = await pipe.execute()
    if current_epoch is None or (epoch is not None and _text(current_epoch) != epoch):
        return None
    updates = []
    for entry_id, fields in entries:
        got = {_text(k): v for k, v in fields.items()}
        updates.append(
            BookUpdate(
                seq=int(_text(entry_id).split("-", 1)[0]),
                ts=int(_text(got.get("ts")) or 0),
                bids=_levels(got.get("bids")),
                asks=_levels(got.get("asks")),
            )
        )
    last = int(_text(current_seq) or 0)
    if seq > last:
        return None
    expected = list(range(seq + 1, last + 1))
    if [u.seq for u in updates] != expected:
        return None
    return updates
