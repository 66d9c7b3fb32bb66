"""Publishing ticks: number them, keep them in history, and fan them out to subscribers.

One Redis round trip per batch (per host, when market data is sharded: markets.redis)
does the numbering, the history write and the candle updates, fenced by the producer's
lease, so a producer that lost its lease can never
publish. The fence is always on: ``TickPublisher`` needs the lease token, and the one
way round it is ``TickPublisher.unfenced_for_tests()``, for tests only.
"""

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from telemetry import metrics

from . import keys
from .candles import INTERVALS, retention_ms
from .redis import redis_client, redis_for, shard_url
from .symbols import symbol_group_name
from .ticks import Tick, TickDraft

logger = logging.getLogger(__name__)

# Event type of a tick on the channel layer (streaming.hub.Hub receives it).
TICK_EVENT_TYPE = "tick.message"
# The lease token that skips the fence; producer tokens never contain spaces.
UNFENCED_FOR_TESTS = "unfenced for tests"

# KEYS per tick: seq, history, lease, epoch, candle clock, then one candle index per
# interval. ARGV: token, maxlen, now_ms, interval count, per interval (length ms,
# retention ms), then per tick ts, price, bid, ask, size, side ("" when unknown).
# Returns each tick's seq, or 0 where the lease is not ours (then each symbol's epoch
# and the symbols that started a new one: the check below). Only the token
# UNFENCED_FOR_TESTS skips the lease check (an empty token is refused like any other
# that does not hold the lease).
#
# Candles are updated here, in the step that INCRs seq, so a tick is counted in its
# candles exactly when it gets a seq: once. A candle hash is "<index key>:<start ms>"
# (markets.keys.candle_key); o/h/l/c keep the publisher's own price strings, so no
# Lua number formatting can alter them. See markets.candles for the bucket rule.
_PUBLISH_LUA = """
local token = ARGV[1]
local maxlen = ARGV[2]
local now = ARGV[3]
local n_iv = tonumber(ARGV[4])
local stride = 5 + n_iv
local first_tick_arg = 5 + 2 * n_iv
local out = {}

local function candle(index_key, ms, keep_ms, at, price, size, seq)
  local start = at - at % ms
  local start_s = string.format('%d', start)
  local key = index_key .. ':' .. start_s
  local cur = redis.call('HMGET', key, 'h', 'l', 'v', 'n')
  if not cur[1] then
    redis.call('HSET', key, 'start', start_s, 'o', price, 'h', price, 'l', price,
      'c', price, 'v', size, 'n', 1, 'first_seq', seq, 'last_seq', seq)
    redis.call('PEXPIRE', key, keep_ms)
    redis.call('ZADD', index_key, start_s, start_s)
    redis.call('ZREMRANGEBYSCORE', index_key, '-inf', '(' .. string.format('%d', start - keep_ms))
    redis.call('PEXPIRE', index_key, keep_ms)
  else
    local p, h, l = tonumber(price), cur[1], cur[2]
    if p > tonumber(h) then h = price end
    if p < tonumber(l) then l = price end
    -- %.17g round-trips a double exactly: the volume is a plain float sum.
    redis.call('HSET', key, 'h', h, 'l', l, 'c', price, 'last_seq', seq,
      'v', string.format('%.17g', tonumber(cur[3]) + tonumber(size)),
      'n', string.format('%d', tonumber(cur[4]) + 1))
  end
end

-- Never reuse a seq (issue 22): a failover can lose the last writes the old primary
-- acknowledged. Before a symbol's first tick of the call its counter is checked against
-- what this publisher last got for it (two trailing ARGV per tick: that seq and its
-- epoch, 0 and '' when it knows none) and against the history's newest entry. A counter
-- behind it, another epoch, or a history without the counter's tick: the numbering
-- starts over (seq 0, so the next INCR opens a new epoch), never reissuing a number.
--
-- And a counter last used on another Redis server (run_id): a replica promoted by a
-- failover may hold the counter and the history both a few writes behind, consistent
-- with each other, and a producer that takes over then knows nothing to compare: the
-- numbering starts over there too. The last ARGV names the hash of which server numbered
-- each counter (markets.keys.numbered_by_key; not in KEYS: one hash per host, and ticker
-- shards by host, not with Redis Cluster).
local numbered_by = ARGV[#ARGV]
local known_base = #ARGV - 1 - 2 * (#KEYS / stride)
local run_id = false
local checked, firsts, news = {}, {}, {}
local function check(i, seq_key, hist_key, epoch_key)
  if checked[seq_key] then return end
  checked[seq_key] = true
  firsts[#firsts + 1] = i
  if not run_id then
    run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
  end
  local by = redis.call('HGET', numbered_by, seq_key)
  local kseq = tonumber(ARGV[known_base + 2*i + 1])
  local cur = tonumber(redis.call('GET', seq_key) or '0')
  local why = false
  if kseq > 0 and (cur < kseq or redis.call('GET', epoch_key) ~= ARGV[known_base + 2*i + 2]) then
    why = 'seq_behind'
  elseif cur > 0 and by and by ~= run_id then
    why = 'server_changed'
  elseif cur > 0 then
    local top = redis.call('XREVRANGE', hist_key, '+', '-', 'COUNT', 1)
    if #top == 0 or tonumber(string.match(top[1][1], '^(%d+)')) ~= cur then
      why = 'history_tail_lost'
    end
  end
  if by ~= run_id then redis.call('HSET', numbered_by, seq_key, run_id) end
  if why then
    redis.call('SET', seq_key, 0)
    news[#news + 1] = i
    news[#news + 1] = why
  end
end

for i = 0, (#KEYS / stride) - 1 do
  local k = stride * i
  local seq_key, hist_key, lease_key, epoch_key, clock_key =
    KEYS[k+1], KEYS[k+2], KEYS[k+3], KEYS[k+4], KEYS[k+5]
  local a = first_tick_arg + 6*i
  if token ~= 'unfenced for tests' and redis.call('GET', lease_key) ~= token then
    out[i+1] = 0
  else
    check(i, seq_key, hist_key, epoch_key)
    local seq = redis.call('INCR', seq_key)
    if seq == 1 then
      -- A new counter means a new epoch: history from an older one is meaningless.
      redis.call('DEL', hist_key)
      redis.call('SET', epoch_key, now)
    end
    if ARGV[a+5] == '' then
      redis.call('XADD', hist_key, 'MAXLEN', '~', maxlen, seq .. '-0',
        'ts', ARGV[a], 'price', ARGV[a+1], 'bid', ARGV[a+2], 'ask', ARGV[a+3],
        'size', ARGV[a+4])
    else
      redis.call('XADD', hist_key, 'MAXLEN', '~', maxlen, seq .. '-0',
        'ts', ARGV[a], 'price', ARGV[a+1], 'bid', ARGV[a+2], 'ask', ARGV[a+3],
        'size', ARGV[a+4], 'side', ARGV[a+5])
    end
    -- Candles follow a per-symbol clock that never goes back: a tick stamped before
    -- the newest bucket joins that bucket, so a bucket with a newer one is final.
    local at = tonumber(ARGV[a])
    local last = tonumber(redis.call('GET', clock_key) or '0')
    if last > at then at = last end
    local seq_s = string.format('%d', seq)
    for j = 1, n_iv do
      candle(KEYS[k+5+j], tonumber(ARGV[3+2*j]), ARGV[4+2*j], at, ARGV[a+1], ARGV[a+4], seq_s)
    end
    redis.call('SET', clock_key, string.format('%d', at), 'PX', ARGV[4+2*n_iv])
    out[i+1] = seq
  end
end
-- Each symbol's epoch, at its first tick of the call: what the publisher remembers.
local epochs = {}
for _, i in ipairs(firsts) do
  epochs[#epochs + 1] = i
  epochs[#epochs + 1] = redis.call('GET', KEYS[stride*i + 4]) or ''
end
return {out, epochs, news}
"""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def tick_event(tick: Tick, *, epoch: str = "") -> dict:
    """The channel-layer event for one tick; the JSON is encoded once, here, for all.

    ``epoch`` names the numbering ``tick.seq`` belongs to: a web process drops a tick of an
    epoch history no longer holds (a fan-out that a retry carried onto a restarted or
    promoted Redis) instead of taking its seq for the current numbering's. "" for unknown.
    """
    return {
        "type": TICK_EVENT_TYPE,
        "symbol": tick.symbol,
        "seq": tick.seq,
        "ts": tick.ts,
        "epoch": epoch,
        "text": tick.to_json(),
    }


class TickPublisher:
    """Publishes batches of ticks from one long-lived event loop, fenced by a lease.

    Only ticks of symbols whose lease (feeds.lease) holds ``lease_token`` are published.
    """

    def __init__(self, *, lease_token: str) -> None:
        if not lease_token or lease_token == UNFENCED_FOR_TESTS:
            raise ValueError(
                "TickPublisher needs the producer's lease token; tests that publish "
                "without a lease use TickPublisher.unfenced_for_tests()"
            )
        self._setup(lease_token)

    @classmethod
    def unfenced_for_tests(cls) -> "TickPublisher":
        """A publisher that skips the lease fence. For tests only: never in a producer."""
        publisher = cls.__new__(cls)
        publisher._setup(UNFENCED_FOR_TESTS)
        return publisher

    def _setup(self, lease_token: str) -> None:
        self.lease_token = lease_token
        # Called on each symbol's own host (markets.redis): one script call per host.
        self._script = redis_client().register_script(_PUBLISH_LUA)
        self._layer = get_channel_layer()
        # The source label of ticker_ticks_published_total: the feed loop sets it to
        # the source each symbol runs (feeds.services); "" when nobody says.
        self.source_of: Callable[[str], str] = lambda symbol: ""
        self._published: dict[tuple[str, str], Any] = {}
        # Per symbol, the last seq this publisher got and its epoch: what the publish
        # script checks the stored counter against (never reuse a seq).
        self._known: dict[str, tuple[int, str]] = {}

    def forget(self, symbol: str) -> None:
        """Called when this publisher stops producing ``symbol`` (its lease went)."""
        self._known.pop(symbol, None)

    def epoch_of(self, symbol: str) -> str:
        """The epoch of ``symbol``'s numbering at this publisher's last publish ("" if none)."""
        return self._known.get(symbol, (0, ""))[1]

    async def publish(self, drafts: Sequence[TickDraft]) -> list[Tick]:
        """Number, store and fan out ``drafts``; returns the ticks actually published."""
        if not drafts:
            return []
        ts = now_ms()
        # Every key of a symbol is on its own host (markets.redis), so the batch splits
        # into one atomic script call per host; each symbol's ticks stay in one call.
        by_host: dict[str, list[int]] = {}  # positions in ``drafts``
        for i, d in enumerate(drafts):
            by_host.setdefault(shard_url(d.symbol), []).append(i)
        parts = list(by_host.values())
        results = await asyncio.gather(
            *(self._run_script([drafts[i] for i in part], ts) for part in parts)
        )
        seqs = [0] * len(drafts)
        for part, part_seqs in zip(parts, results, strict=True):
            for i, seq in zip(part, part_seqs, strict=True):
                seqs[i] = int(seq)
        ticks = [
            Tick(d.symbol, seq, ts, d.price, d.bid, d.ask, d.size, d.side)
            for d, seq in zip(drafts, seqs, strict=True)
            if seq > 0
        ]
        self._count(drafts, ticks)
        await self._fan_out(ticks)
        return ticks

    async def _fan_out(self, ticks: list[Tick]) -> None:
        """Send each tick to its symbol's group; one symbol's ticks in seq order."""
        if not ticks:
            return
        events = [
            (symbol_group_name(t.symbol), tick_event(t, epoch=self.epoch_of(t.symbol)))
            for t in ticks
        ]
        send_many = getattr(self._layer, "group_send_many", None)
        if send_many is not None:
            # markets.layer: the whole batch in two round trips, in the order given.
            await send_many(events)
            return
        # Other layers (the in-memory one of unit tests, channels_redis's pubsub): symbols
        # concurrently, but one symbol's ticks in turn, since a batch may hold several
        # ticks of a symbol (a fast replay, an exchange burst).
        by_group: dict[str, list[dict]] = {}
        for group, event in events:
            by_group.setdefault(group, []).append(event)
        await asyncio.gather(*(self._send_in_order(g, evs) for g, evs in by_group.items()))

    async def _run_script(self, drafts: Sequence[TickDraft], ts: int) -> list:
        """The publish script over ``drafts``, all of whose symbols live on one host."""
        script_keys: list[str] = []
        args: list[str | int] = [self.lease_token, settings.HISTORY_DEPTH, ts, len(INTERVALS)]
        for name, length in INTERVALS.items():
            args += [length, retention_ms(name)]
        for d in drafts:
            script_keys += [
                keys.seq_key(d.symbol),
                keys.history_key(d.symbol),
                keys.lease_key(d.symbol),
                keys.epoch_key(d.symbol),
                keys.candle_clock_key(d.symbol),
                *(keys.candle_index_key(d.symbol, name) for name in INTERVALS),
            ]
            args += [ts, repr(d.price), repr(d.bid), repr(d.ask), repr(d.size), d.side or ""]
        for d in drafts:
            args += self._known.get(d.symbol, (0, ""))
        args.append(keys.numbered_by_key())
        seqs, epochs, news = await self._script(
            keys=script_keys, args=args, client=redis_for(drafts[0].symbol)
        )
        epoch_of = {
            drafts[int(i)].symbol: e.decode() if isinstance(e, bytes) else e
            for i, e in zip(epochs[::2], epochs[1::2], strict=True)
        }
        for d, seq in zip(drafts, seqs, strict=True):
            if int(seq) > 0:
                self._known[d.symbol] = (int(seq), epoch_of[d.symbol])
        for i, why in zip(news[::2], news[1::2], strict=True):
            why = why.decode() if isinstance(why, bytes) else why
            metrics.FEED_EPOCHS.labels(why).inc()
            logger.warning(
                "%s: Redis lost writes, or may have (%s); its numbering starts a new epoch, so "
                "resuming subscribers get a reset and a fresh snapshot",
                drafts[int(i)].symbol, why,
            )  # fmt: skip
        return seqs

    async def _send_in_order(self, group: str, events: list[dict]) -> None:
        for event in events:
            await self._layer.group_send(group, event)

    def _count(self, drafts: Sequence[TickDraft], ticks: list[Tick]) -> None:
        """ticker_ticks_published_total per symbol and source, once per batch."""
        per_symbol = Counter(t.symbol for t in ticks)
        for symbol, n in per_symbol.items():
            key = (symbol, self.source_of(symbol))
            child = self._published.get(key)
            if child is None:
                child = self._published[key] = metrics.TICKS_PUBLISHED.labels(*key)
            child.inc(n)
        if len(ticks) < len(drafts):
            for d in drafts:
                if d.symbol not in per_symbol:
                    metrics.TICKS_REFUSED.labels(d.symbol).inc()


async def publish_tick(draft: TickDraft, *, lease_token: str) -> Tick | None:
    """Publish one tick under a lease; for one-off producers, not for hot loops."""
    published = await TickPublisher(lease_token=lease_token).publish([draft])
    return published[0] if published else None


async def publish_tick_unfenced_for_tests(draft: TickDraft) -> Tick | None:
    """Publish one tick without a lease. For tests only."""
    published = await TickPublisher.unfenced_for_tests().publish([draft])
    return published[0] if published else None
