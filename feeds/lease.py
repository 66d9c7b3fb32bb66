"""Per-symbol producer leases in Redis: at most one producer publishes a symbol.

A lease is a key holding the owner's token with a TTL. The owner renews it well
before it expires; publishing checks it atomically (markets.publishing), so a
producer that stalled past its TTL cannot publish even before it notices.
"""

import logging
from collections.abc import Iterable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from markets.keys import lease_key
from telemetry.metrics import LEASE_CHANGES

logger = logging.getLogger(__name__)

_RENEW_LUA = """
local out = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

_RELEASE_LUA = """
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
return 1
"""


class SymbolLeases:
    def __init__(self, redis: aioredis.Redis, *, token: str, ttl_seconds: float) -> None:
        self.token = token
        self.ttl_ms = int(ttl_seconds * 1000)
        self._redis = redis
        self._renew = redis.register_script(_RENEW_LUA)
        self._release = redis.register_script(_RELEASE_LUA)

    async def acquire(self, symbols: Iterable[str]) -> list[str]:
        """Take every free lease among ``symbols``; returns those now held."""
        symbols = list(symbols)
        if not symbols:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for symbol in symbols:
            pipe.set(lease_key(symbol), self.token, nx=True, px=self.ttl_ms)
        results = await pipe.execute()
        taken = [s for s, ok in zip(symbols, results, strict=True) if ok]
        if taken:
            LEASE_CHANGES.labels("taken").inc(len(taken))
        return taken

    async def renew(self, symbols: Iterable[str]) -> list[str]:
        """Extend the leases still ours; returns those, dropping any that were lost."""
        symbols = list(symbols)
        if not symbols:
            return []
        results = await self._renew(
            keys=[lease_key(s) for s in symbols], args=[self.token, self.ttl_ms]
        )
        held = [s for s, ok in zip(symbols, results, strict=True) if int(ok)]
        if len(held) < len(symbols):
            LEASE_CHANGES.labels("lost").inc(len(symbols) - len(held))
        return held

    async def release(self, symbols: Iterable[str]) -> None:
        """Give leases back at once so another producer can take over without waiting."""
        symbols = list(symbols)
        if not symbols:
            return
        try:
            await self._release(keys=[lease_key(s) for s in symbols], args=[self.token])
            LEASE_CHANGES.labels("released").inc(len(symbols))
        except RedisError as exc:
            # Best effort: on shutdown Redis may already be gone; the TTL frees them.
            logger.warning("could not release leases (%s); they expire on their own", exc)
