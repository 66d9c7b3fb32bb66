"""Redis clients for market state (seq counters, history, candles, leases, source status).

Market data is sharded by symbol across ``settings.REDIS_SHARD_URLS`` (one host unless
set): every key of one symbol (markets.keys) lives on the host ``shard_index(symbol)``
picks, so a symbol's publish stays one atomic script on one server. ``redis_for(symbol)``
is the one way to reach a symbol's keys; ``redis_client()`` is the first host, for keys
that belong to no symbol and for probes.

Async clients are made per event loop (they cannot cross loops); sync clients (Celery
tasks) once per process and host. A host may be a Sentinel-managed group (a
``redis+sentinel://`` URL, markets.sentinel): its clients ask the sentinels for the primary
on every connect, so they follow a failover. Every client here is built by this module,
with the timeouts and retries the settings choose (REDIS_SOCKET_TIMEOUT,
REDIS_CONNECT_TIMEOUT, REDIS_RETRIES).
"""

import asyncio
import binascii
import weakref
from collections.abc import Iterable

import redis
import redis.asyncio as aioredis
from django.conf import settings

from . import sentinel

_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, aioredis.Redis]]" = (
    weakref.WeakKeyDictionary()
)
_sync_clients: dict[str, redis.Redis] = {}


def shard_index(name: str, count: int | None = None) -> int:
    """The shard (0..count-1) of ``name``; the same in every process and on every run.

    The ring channels_redis itself uses for groups: crc32 of the name folded to 4096
    points, split into ``count`` equal arcs. Adding a host moves about 1/N of the
    symbols (whose keys then start afresh on the new host: a new epoch, see README).
    """
    count = len(settings.REDIS_SHARD_URLS) if count is None else count
    if count <= 1:
        return 0
    point = binascii.crc32(name.encode("utf-8")) & 0xFFF
    return int(point / (4096 / count))


def shard_url(symbol: str) -> str:
    """The Redis URL holding every key of ``symbol``."""
    return settings.REDIS_SHARD_URLS[shard_index(symbol)]


def by_shard(symbols: Iterable[str]) -> dict[str, list[str]]:
    """``symbols`` grouped by the URL of their shard, each group in the given order."""
    groups: dict[str, list[str]] = {}
    for symbol in symbols:
        groups.setdefault(shard_url(symbol), []).append(symbol)
    return groups


def _async_client(url: str) -> aioredis.Redis:
    loop = asyncio.get_running_loop()
    per_loop = _clients.get(loop)
    if per_loop is None:
        per_loop = _clients[loop] = {}
    client = per_loop.get(url)
    if client is None:
        options = dict(
            socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
            socket_connect_timeout=settings.REDIS_CONNECT_TIMEOUT,
            retry=sentinel.retry_policy(settings.REDIS_RETRIES),
            # Blocking: a burst waits for a free connection instead of failing with
            # redis-py 8's "Too many connections".
            max_connections=200,
            timeout=20,
        )
        group = sentinel.parse(url)
        if group is None:
            pool = aioredis.BlockingConnectionPool.from_url(url, **options)
        else:
            pool = sentinel.async_pool(
                group, sentinel_timeout=settings.REDIS_SENTINEL_TIMEOUT, **options
            )
        client = per_loop[url] = aioredis.Redis.from_pool(pool)
    return client


def redis_client() -> aioredis.Redis:
    """The running loop's client of REDIS_URL (the first host): keys of no symbol, probes.

    Never for a symbol's keys: those are on ``redis_for(symbol)``.
    """
    return _async_client(settings.REDIS_URL)


def redis_for(symbol: str) -> aioredis.Redis:
    """The running loop's client of the host holding every key of ``symbol``."""
    return _async_client(shard_url(symbol))


def shard_clients() -> list[aioredis.Redis]:
    """The running loop's client of every shard, in REDIS_SHARD_URLS order."""
    return [_async_client(url) for url in settings.REDIS_SHARD_URLS]


def shard_groups(symbols: Iterable[str]) -> list[tuple[aioredis.Redis, list[str]]]:
    """``symbols`` grouped by shard, each with the running loop's client of that shard."""
    return [(_async_client(url), group) for url, group in by_shard(symbols).items()]


def new_sync_client(url: str | None = None) -> redis.Redis:
    """A new synchronous client of ``url`` (REDIS_URL by default); its caller closes it."""
    url = settings.REDIS_URL if url is None else url
    options = dict(
        socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
        socket_connect_timeout=settings.REDIS_CONNECT_TIMEOUT,
        retry=sentinel.retry_policy(settings.REDIS_RETRIES, asynchronous=False),
    )
    group = sentinel.parse(url)
    if group is None:
        return redis.Redis.from_url(url, **options)
    pool = sentinel.sync_pool(group, sentinel_timeout=settings.REDIS_SENTINEL_TIMEOUT, **options)
    return redis.Redis.from_pool(pool)


def sync_redis_for(symbol: str | None = None) -> redis.Redis:
    """A synchronous client of ``symbol``'s host (of REDIS_URL without one), per process."""
    url = settings.REDIS_URL if symbol is None else shard_url(symbol)
    client = _sync_clients.get(url)
    if client is None:
        client = _sync_clients[url] = new_sync_client(url)
    return client


async def close_redis_client() -> None:
    """Close the running loop's clients (every host); call before the loop ends.

    Only the loop's owner, once nothing else on it uses them: a call in flight under the
    close is retried on a new socket and given back to the closed pool, which nobody holds
    any more, so that socket stays open until the garbage collector finds it (issue 22).
    """
    per_loop = _clients.pop(asyncio.get_running_loop(), None) or {}
    for client in per_loop.values():
        await client.aclose()


async def ping_all() -> None:
    """PING REDIS_URL and every shard at once; raises if any one does not answer."""
    clients = [redis_client(), *(_async_client(u) for u in settings.REDIS_SHARD_URLS)]
    await asyncio.gather(*(c.ping() for c in dict.fromkeys(clients)))


def close_sync_clients() -> None:
    """Close this process's synchronous clients (tests that stop their Redis servers)."""
    while _sync_clients:
        _, client = _sync_clients.popitem()
        client.close()
