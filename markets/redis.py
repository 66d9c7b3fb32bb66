"""Redis clients for market state (seq counters, history), one per event loop."""

import asyncio
import weakref

import redis.asyncio as aioredis
from django.conf import settings

_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis]" = (
    weakref.WeakKeyDictionary()
)


def redis_client() -> aioredis.Redis:
    """The async client for the running loop; clients cannot cross event loops."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            socket_timeout=settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0][
                "socket_timeout"
            ],
            socket_connect_timeout=5,
            # Blocking: a burst waits for a free connection instead of failing with
            # redis-py 8's "Too many connections".
            max_connections=200,
            timeout=20,
        )
        client = aioredis.Redis.from_pool(pool)
        _clients[loop] = client
    return client


async def close_redis_client() -> None:
    """Close the running loop's client; call before the loop ends."""
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()
