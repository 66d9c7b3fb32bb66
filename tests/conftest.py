import pytest
from asgiref.sync import sync_to_async

from markets.services import seed_symbols

# Every price-stream frame the tests' websockets clients receive, and every command the
# client library sends, is checked against the AsyncAPI document (tests/asyncapi_contract.py).
pytest_plugins = ["tests.asyncapi_contract"]


@pytest.fixture
def symbols(transactional_db):
    """The default universe in the test database."""
    seed_symbols()


@pytest.fixture
async def async_symbols(transactional_db):
    await sync_to_async(seed_symbols)()


@pytest.fixture
async def clean_redis():
    """Drop this run's market keys before and after a test that counts seqs."""
    from django.conf import settings

    from markets.redis import close_redis_client, redis_client

    async def wipe():
        client = redis_client()
        async for key in client.scan_iter(match=f"{settings.REDIS_PREFIX}:*"):
            await client.delete(key)

    await wipe()
    yield
    await wipe()
    await close_redis_client()


@pytest.fixture
async def close_hub():
    """Each test runs its own event loop: stop that loop's streaming hub after it."""
    yield
    from channels.layers import channel_layers

    from streaming.hub import close_local_hub

    await close_local_hub()
    from streaming.guard import local_guard

    guard = local_guard.pop()
    if guard is not None:
        await guard.aclose()
    # The Redis layer keeps per-loop receive state; the next test's loop gets a fresh one.
    channel_layers.backends.clear()
