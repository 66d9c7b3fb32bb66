"""The channel layer: channels_redis's core layer, plus one call that sends a whole batch.

channels_redis sends to one group per call, and each call costs four Redis round trips
(clean the group, read its members, clean their queues, queue the message; the bulk send
asked for in django/channels_redis#399 is not released). The feed publishes every owned
symbol each time slot, so at 20 symbols x 50 ticks/s that was 4,000 round trips a second
and, on a 2-core machine, more CPU than the worker had (benchmarks/RESULTS.md, round 8).

``group_send_many`` sends a batch of (group, message) pairs in two round trips per Redis
host: one script reads and cleans the members of every group of the batch, one queues
every copy. What a receiver sees is exactly what ``group_send`` would have queued (the
same serialized message per channel key, the same capacity rule and expiry), so
``receive`` is channels_redis's own. The messages of one batch get increasing scores, so
a receiver reads them in the order given: one symbol's ticks stay in seq order.

``receive_many`` is the other half, for a channel with a single reader (each web
process's hub). channels_redis's ``receive`` costs four round trips per message (its
backup-queue dance, which makes a cancelled read lose nothing); ``receive_many`` takes
everything queued in one ZPOPMIN, and blocks with BZPOPMIN only when nothing is. A read
cancelled in flight may lose what it popped: its reader must be able to refill from
elsewhere (the hub refills ticks from history by seq).
"""

import collections
import logging
import time
import uuid
from collections.abc import Sequence

from channels_redis.core import RedisChannelLayer

from telemetry import metrics

logger = logging.getLogger(__name__)

# KEYS: group keys. ARGV[1]: members joined before this are expired (group_expiry).
# Returns each group's members.
_MEMBERS_LUA = """
local out = {}
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, ARGV[1])
  out[i] = redis.call('ZRANGE', KEYS[i], 0, -1)
end
return out
"""

# KEYS: channel keys, one per copy (a key repeats when it gets several messages).
# ARGV: n messages, n capacities, n scores, then the message cutoff and the expiry.
# Returns how many copies were dropped because their channel was full.
_QUEUE_LUA = """
local n = #KEYS
local cutoff = ARGV[3 * n + 1]
local expiry = ARGV[3 * n + 2]
local cleaned = {}
local over = 0
for i = 1, n do
  local key = KEYS[i]
  if not cleaned[key] then
    redis.call('ZREMRANGEBYSCORE', key, 0, cutoff)
    cleaned[key] = true
  end
  if redis.call('ZCOUNT', key, '-inf', '+inf') < tonumber(ARGV[n + i]) then
    redis.call('ZADD', key, ARGV[2 * n + i], ARGV[i])
    redis.call('EXPIRE', key, expiry)
  else
    over = over + 1
  end
end
return over
"""

# A full channel (a web process that died stays in its groups until group_expiry) would
# otherwise be reported with every batch: at most once per this many seconds, with a count.
OVER_CAPACITY_LOG_SECONDS = 60.0

# Scores of one batch step by this much (a double near 1.7e9 resolves ~2.4e-7).
_SCORE_STEP = 1e-6


class TickerChannelLayer(RedisChannelLayer):
    """channels_redis's core layer with ``group_send_many``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._members_script = None
        self._queue_script = None
        self._last_score = 0.0
        self.over_capacity = 0
        self._over_unlogged = 0
        self._over_logged_at = -OVER_CAPACITY_LOG_SECONDS

    def _scripts(self):
        if self._queue_script is None:
            # A Script object sends EVALSHA, and the body only when Redis lost it.
            conn = self.connection(0)
            self._members_script = conn.register_script(_MEMBERS_LUA)
            self._queue_script = conn.register_script(_QUEUE_LUA)
        return self._members_script, self._queue_script

    async def group_send_many(self, messages: Sequence[tuple[str, dict]]) -> int:
        """Send each message to its group, in order; returns the copies dropped as full."""
        if not messages:
            return 0
        members_script, queue_script = self._scripts()
        now = time.time()
        # 1. Every group's members, one script per host that holds group keys.
        groups = list(dict.fromkeys(group for group, _ in messages))
        for group in groups:
            assert self.require_valid_group_name(group), "Group name not valid"
        by_host: dict[int, list[str]] = collections.defaultdict(list)
        for group in groups:
            by_host[self.consistent_hash(group)].append(group)
        members: dict[str, list[str]] = {}
        cutoff = int(now) - self.group_expiry
        for index, host_groups in by_host.items():
            found = await members_script(
                keys=[self._group_key(g) for g in host_groups],
                args=[cutoff],
                client=self.connection(index),
            )
            for group, names in zip(host_groups, found, strict=True):
                members[group] = [n.decode("utf8") for n in names]
        # 2. Every copy, in the order given, one script per host that holds channel keys.
        copies: dict[int, tuple[list, list, list, list]] = collections.defaultdict(
            lambda: ([], [], [], [])
        )
        score = max(now, self._last_score + _SCORE_STEP)
        for group, message in messages:
            if not members[group]:
                continue
            per_host, payloads, capacities = self._map_channel_keys_to_connection(
                members[group], message
            )
            for index, channel_keys in per_host.items():
                keys, values, caps, scores = copies[index]
                for key in channel_keys:
                    keys.append(key)
                    values.append(payloads[key])
                    caps.append(capacities[key])
                    scores.append(score)
            score += _SCORE_STEP
        self._last_score = score
        over = 0
        for index, (keys, values, caps, scores) in copies.items():
            over += await queue_script(
                keys=keys,
                args=[*values, *caps, *scores, int(now) - int(self.expiry), self.expiry],
                client=self.connection(index),
            )
        if over:
            self.over_capacity += over
            self._over_unlogged += over
            metrics.CHANNEL_LAYER_ERRORS.labels("over_capacity").inc(over)
            at = time.monotonic()
            if at - self._over_logged_at >= OVER_CAPACITY_LOG_SECONDS:
                logger.warning(
                    "%d channel-layer copies dropped since the last report: a member's "
                    "channel is full (a web process behind, or gone)", self._over_unlogged,
                )  # fmt: skip
                self._over_unlogged = 0
                self._over_logged_at = at
        return over

    def new_batch_channel(self, prefix: str = "batch") -> str:
        """A channel name of this process's own for ``receive_many`` (not process-local,
        so its messages sit in a Redis key of their own)."""
        return f"{prefix}.{uuid.uuid4().hex}"

    async def receive_many(
        self, channel: str, *, limit: int = 1000, timeout: float | None = None
    ) -> list[dict]:
        """Up to ``limit`` messages of ``channel``, oldest first; waits up to ``timeout``
        (the layer's brpop_timeout by default) for the first, and returns [] if none came.
        """
        assert "!" not in channel, "receive_many reads channels from new_batch_channel()"
        key = self.prefix + channel
        conn = self.connection(self.consistent_hash(channel))
        popped = await conn.zpopmin(key, limit)
        if not popped:
            got = await conn.bzpopmin(key, timeout=timeout or self.brpop_timeout)
            if got is None:
                return []
            # Whatever was queued with it (a publisher's batch lands in one script) comes
            # in the same call: the hub delivers a batch's ticks together (one frame per
            # connection when batching) rather than the first tick alone.
            popped = [(got[1], got[2])]
            if limit > 1:
                popped += await conn.zpopmin(key, limit - 1)
        messages = []
        for member, _score in popped:
            message = self.deserialize(member)
            message.pop("__asgi_channel__", None)
            messages.append(message)
        return messages
