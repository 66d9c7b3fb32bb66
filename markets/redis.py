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
        client = aioredis.Redis.from_url(
            settings.REDIS_URL,
            socket_timeout=settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0][
                "socket_timeout"
            ],
            socket_connect_timeout=5,
            max_connections=200,
        )
        _clients[loop] = client
    return client


async def close_redis_client() -> None:
    """Close the running loop's client; call before the loop ends."""
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()
