import pytest
from asgiref.sync import sync_to_async

from markets.services import seed_symbols


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
