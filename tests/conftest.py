import pytest
from asgiref.sync import sync_to_async

from markets.services import seed_symbols

# Every price-stream frame the tests' websockets clients receive, and every command the
# client library sends, is checked against the AsyncAPI document (tests/asyncapi_contract.py).
pytest_plugins = ["tests.asyncapi_contract"]

# Test files that assert timings or load figures (a failover within 5 s, ticks in every
# second of a stall, a flood's effect on others, fault-to-degraded times, benchmark
# runs): marked `serial`, which make test runs alone after the rest runs in parallel, so
# another test's load cannot fail them.
SERIAL_FILES = {
    "test_e2e_delivery.py",
    "test_e2e_stack.py",
    "test_failover.py",
    "test_limits.py",
    "test_limits_e2e.py",
    "test_loadtest.py",
    "test_ops_live.py",
    # Not timing: a run_feed of this file hung past the 300 s timeout twice (2026-11-26;
    # a third time in test_redis_shards.py, after browser tests in the same xdist worker:
    # make test now runs the browser tests in a process of their own),
    # with test_browser_login.py run before it or beside it, never alone; not reproduced
    # since. Suspected: the feed's symbol-table read waits on asgiref's one process-wide
    # thread, which another caller can hold. The feed loop no longer waits on that read
    # (5c5f487): a recurrence logs "reading the symbol table is taking long" and fails
    # the test's assertions instead of hanging.
    "test_lease_and_publishing.py",
    # The same family, again in an xdist worker, with no browser test in that process
    # (2026-11-26, fresh-clone run of e4a6159): a run_feed logged one "Redis unavailable
    # (ConnectionError)" and then published nothing for 20 s, and the next feed-loop test
    # in that worker got no status report in 15 s. So Playwright is not the cause. Every
    # occurrence so far was in the parallel part; these run serially until it is found.
    "test_redis_shards.py",
    "test_feeds_loop.py",
}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name in SERIAL_FILES:
            item.add_marker(pytest.mark.serial)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's test database, and on PostgreSQL its leftover sessions ended first.

    ORM calls made through sync_to_async run in asgiref's executor threads, whose
    connections nobody closes; PostgreSQL will not drop a database with sessions open
    (SQLite does not care). .ci/run runs the suite on PostgreSQL.
    """
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


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
