"""Publishing ticks: number them, keep them in history, and fan them out to subscribers.

One Redis round trip per batch does the numbering and the history write, fenced by
the producer's lease, so a producer that lost its lease can never publish.
"""

import asyncio
import time
from collections.abc import Sequence

from channels.layers import get_channel_layer
from django.conf import settings

from . import keys
from .redis import redis_client
from .symbols import symbol_group_name
from .ticks import Tick, TickDraft

# Event type the consumer handles (PriceStreamConsumer.tick_message).
TICK_EVENT_TYPE = "tick.message"

# KEYS per tick: seq, history, lease, epoch.  ARGV: token, maxlen, now_ms, then per tick
# ts, price, bid, ask, size.  Returns each tick's seq, or 0 where the lease is not ours.
_PUBLISH_LUA = """
local token = ARGV[1]
local maxlen = ARGV[2]
local now = ARGV[3]
local out = {}
for i = 0, (#KEYS / 4) - 1 do
  local seq_key, hist_key, lease_key, epoch_key =
    KEYS[4*i+1], KEYS[4*i+2], KEYS[4*i+3], KEYS[4*i+4]
  local a = 4 + 5*i
  if token ~= '' and redis.call('GET', lease_key) ~= token then
    out[i+1] = 0
  else
    local seq = redis.call('INCR', seq_key)
    if seq == 1 then
      -- A new counter means a new epoch: history from an older one is meaningless.
      redis.call('DEL', hist_key)
      redis.call('SET', epoch_key, now)
    end
    redis.call('XADD', hist_key, 'MAXLEN', '~', maxlen, seq .. '-0',
      'ts', ARGV[a], 'price', ARGV[a+1], 'bid', ARGV[a+2], 'ask', ARGV[a+3],
      'size', ARGV[a+4])
    out[i+1] = seq
  end
end
return out
"""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def tick_event(tick: Tick) -> dict:
    """The channel-layer event for one tick; the JSON is encoded once, here, for all."""
    return {
        "type": TICK_EVENT_TYPE,
        "symbol": tick.symbol,
        "seq": tick.seq,
        "text": tick.to_json(),
    }


class TickPublisher:
    """Publishes batches of ticks from one long-lived event loop."""

    def __init__(self, *, lease_token: str = "") -> None:
        self.lease_token = lease_token
        self._redis = redis_client()
        self._script = self._redis.register_script(_PUBLISH_LUA)
        self._layer = get_channel_layer()

    async def publish(self, drafts: Sequence[TickDraft]) -> list[Tick]:
        """Number, store and fan out ``drafts``; returns the ticks actually published."""
        if not drafts:
            return []
        ts = now_ms()
        script_keys: list[str] = []
        args: list[str | int] = [self.lease_token, settings.HISTORY_DEPTH, ts]
        for d in drafts:
            script_keys += [
                keys.seq_key(d.symbol),
                keys.history_key(d.symbol),
                keys.lease_key(d.symbol),
                keys.epoch_key(d.symbol),
            ]
            args += [ts, repr(d.price), repr(d.bid), repr(d.ask), repr(d.size)]
        seqs = await self._script(keys=script_keys, args=args)
        ticks = [
            Tick(d.symbol, int(seq), ts, d.price, d.bid, d.ask, d.size)
            for d, seq in zip(drafts, seqs, strict=True)
            if int(seq) > 0
        ]
        await asyncio.gather(
            *(self._layer.group_send(symbol_group_name(t.symbol), tick_event(t)) for t in ticks)
        )
        return ticks


async def publish_tick(draft: TickDraft, *, lease_token: str = "") -> Tick | None:
    """Publish one tick; convenient for tests and one-off producers, not for hot loops."""
    published = await TickPublisher(lease_token=lease_token).publish([draft])
    return published[0] if published else None
