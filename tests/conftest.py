import pytest
from asgiref.sync import sync_to_async

from markets.services import seed_symbols

# Every price-stream frame the tests' websockets clients receive, and every command the
# client library sends, is checked against the AsyncAPI document (tests/asyncapi_contract.py).
pytest_plugins = ["tests.asyncapi_contract"]

# Test files that assert timings or load figures (a failover within 5 s, ticks in every
# second of a stall, a flood's effect on others, fault-to-degraded times, benchmark
# runs): marked `serial`, which make test runs after the rest, two files at a time with
# nothing else running, so the rest of the suite's load cannot fail them.
SERIAL_FILES = {
    "test_e2e_delivery.py",
    "test_e2e_stack.py",
    "test_failover.py",
    "test_limits.py",
    "test_limits_e2e.py",
    "test_loadtest.py",
    "test_ops_live.py",
    # Not timing, and not the feed loop's stall any more: test_feeds_loop.py and
    # test_lease_and_publishing.py, serial since 2026-11-26 for a run_feed that stopped
    # publishing (one "Redis unavailable" line, then nothing), run in the parallel part
    # again: the cause was a non-standby run_feed that took a failed first acquire round
    # for "another producer has it all" and returned without a word (02b67ef; issue 22,
    # docs/operations.md). test_redis_shards.py, serial for an asyncio Redis connection
    # its feed-loop test left open (a ResourceWarning in whichever test the garbage
    # collector found it), is back too: `feeds list`'s gather_rows, which that test runs
    # on the feed's own loop, closed the loop's clients under the feed's calls in flight
    # (issue 22, docs/operations.md).
}


# The files that take longest (wall time, in make test's parallel part), longest first:
# they are collected first, and make test hands xdist its files in that order
# (--no-loadscope-reorder), so that the part does not end on one of them running alone
# in one worker while the other worker has nothing left (issue 19). Measured in a fresh
# clone's make test; a file not listed runs after these, in its usual order.
SLOW_FIRST = [
    # The serial part's two longest, so that its two processes start with them.
    "test_e2e_delivery.py",
    "test_loadtest.py",
    # The parallel part's.
    "test_accounts_live.py",
    "test_ws_auth.py",
    "test_api_live.py",
    "test_fuzz.py",
    "test_e2e_history.py",
    "test_asyncapi_live.py",
    "test_security_settings.py",
    "test_compose.py",
    "test_consumer.py",
    "test_feed_faults.py",
    "test_accounts.py",
    "test_client_live.py",
    "test_feeds_e2e.py",
    "test_alerts.py",
    "test_redis_shards.py",
    "test_feeds_loop.py",
    "test_scaleout.py",
    "test_sentinel_failover.py",
]


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name in SERIAL_FILES:
            item.add_marker(pytest.mark.serial)
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    # A stable sort: the other files, and the tests within each, keep their order.
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def _flush_by_delete(truncate):
    """PostgreSQL's sql_flush, with DELETE in place of TRUNCATE when no sequence is reset.

    Each test on `transactional_db` (the `symbols` fixtures, so most consumer tests) ends
    with a flush of every table. On the CI machines' PostgreSQL a TRUNCATE of the 20 tables
    took 0.21 s and DELETEs of the same rows 0.009 s: TRUNCATE makes new files for every
    table and index, DELETE only removes the few rows a test wrote. test_consumer.py took
    20 s against SQLite's 7 (issue 19). Both empty every table; Django's foreign keys on
    PostgreSQL are deferred to the commit, so the order of the DELETEs does not matter.
    """

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        if reset_sequences or allow_cascade or not tables:
            return truncate(
                self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade
            )
        return [
            f"{style.SQL_KEYWORD('DELETE FROM')} {style.SQL_FIELD(self.quote_name(t))};"
            for t in tables
        ]

    return sql_flush


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's test database; on PostgreSQL, flushed by DELETE (_flush_by_delete),
    and its leftover sessions ended at the end.

    ORM calls made through sync_to_async run in asgiref's executor threads, whose
    connections nobody closes; PostgreSQL will not drop a database with sessions open
    (SQLite does not care). .ci/run runs the suite on PostgreSQL.
    """
    from django.db import connection

    if connection.vendor != "postgresql":
        yield
        return
    operations = type(connection.ops)
    truncate = operations.sql_flush
    operations.sql_flush = _flush_by_delete(truncate)
    try:
        yield
    finally:
        operations.sql_flush = truncate
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
    """Drop this run's market keys before and after a test that counts seqs.

    Yields the wipe, for a test that loses every key mid-way (a Redis restart without
    persistence: tests/test_hub_epochs.py)."""
    from django.conf import settings

    from markets.redis import close_redis_client, redis_client

    async def wipe():
        client = redis_client()
        async for key in client.scan_iter(match=f"{settings.REDIS_PREFIX}:*"):
            await client.delete(key)

    await wipe()
    yield wipe
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
