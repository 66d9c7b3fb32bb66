"""Per-symbol producer leases in Redis: at most one producer publishes a symbol.

A lease is a key holding the owner's token with a TTL. The owner renews it well
before it expires; publishing checks it atomically (markets.publishing), so a
producer that stalled past its TTL cannot publish even before it notices.
"""

import asyncio
import logging
from collections.abc import Iterable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from markets.keys import lease_key
from markets.redis import redis_client, shard_groups
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
    """A producer's leases. Each lease is on its symbol's own host (markets.redis), with
    the symbol's other keys, so the publish script can check it; ``redis`` pins them all
    to one client instead (tests on one Redis)."""

    def __init__(
        self, redis: aioredis.Redis | None = None, *, token: str, ttl_seconds: float
    ) -> None:
        self.token = token
        self.ttl_ms = int(ttl_seconds * 1000)
        self._redis = redis
        script_client = redis or redis_client()
        self._renew = script_client.register_script(_RENEW_LUA)
        self._release = script_client.register_script(_RELEASE_LUA)

    def _groups(self, symbols: list[str]) -> list[tuple[aioredis.Redis, list[str]]]:
        return [(self._redis, symbols)] if self._redis is not None else shard_groups(symbols)

    async def acquire(self, symbols: Iterable[str]) -> list[str]:
        """Take every free lease among ``symbols``, and those already ours; returns both.

        Leases already holding our token are taken again (extended, by the renewal
        script): a round whose reply was lost (a timeout, a dropped connection) or whose
        sources failed to start left leases that SET NX alone would count as another
        producer's for a whole TTL (issue 22, "orphaned leases").
        """
        symbols = list(symbols)
        if not symbols:
            return []

        async def take(client: aioredis.Redis, group: list[str]) -> list[str]:
            pipe = client.pipeline(transaction=False)
            for symbol in group:
                pipe.set(lease_key(symbol), self.token, nx=True, px=self.ttl_ms)
            results = await pipe.execute()
            return [s for s, ok in zip(group, results, strict=True) if ok]

        got = set().union(*await asyncio.gather(*(take(c, g) for c, g in self._groups(symbols))))
        if got:
            LEASE_CHANGES.labels("taken").inc(len(got))
        rest = [s for s in symbols if s not in got]
        if rest:
            got.update(await self._extend(rest))
        return [s for s in symbols if s in got]

    async def renew(self, symbols: Iterable[str]) -> list[str]:
        """Extend the leases still ours; returns those, dropping any that were lost."""
        symbols = list(symbols)
        if not symbols:
            return []
        held = await self._extend(symbols)
        if len(held) < len(symbols):
            LEASE_CHANGES.labels("lost").inc(len(symbols) - len(held))
        return held

    async def _extend(self, symbols: list[str]) -> list[str]:
        """Those of ``symbols`` whose lease holds our token, each extended to the TTL."""

        async def extend(client: aioredis.Redis, group: list[str]) -> list[str]:
            results = await self._renew(
                keys=[lease_key(s) for s in group], args=[self.token, self.ttl_ms], client=client
            )
            return [s for s, ok in zip(group, results, strict=True) if int(ok)]

        kept = set().union(*await asyncio.gather(*(extend(c, g) for c, g in self._groups(symbols))))
        return [s for s in symbols if s in kept]

    async def release(self, symbols: Iterable[str]) -> None:
        """Give leases back at once so another producer can take over without waiting."""
        symbols = list(symbols)
        if not symbols:
            return
        try:
            await asyncio.gather(
                *(
                    self._release(keys=[lease_key(s) for s in g], args=[self.token], client=c)
                    for c, g in self._groups(symbols)
                )
            )
            LEASE_CHANGES.labels("released").inc(len(symbols))
        except (RedisError, OSError) as exc:
            # Best effort: on shutdown Redis may already be gone; the TTL frees them.
            logger.warning("could not release leases (%s); they expire on their own", exc)
