import asyncio
import json
import time
from unittest import mock

import pytest

from markets import history
from markets.publishing import publish_tick
from markets.snapshots import SnapshotReader
from markets.ticks import TickDraft

pytestmark = pytest.mark.usefixtures("clean_redis")


async def test_concurrent_subscribers_share_one_read_and_encode():
    for i in range(5):
        await publish_tick(TickDraft("AAPL", 100.0 + i, 99.0, 101.0, 1.0))
    reader = SnapshotReader()
    joined_at = time.monotonic()
    with mock.patch.object(history, "snapshot", wraps=history.snapshot) as read:
        snaps = await asyncio.gather(
            *(reader.read(symbol="AAPL", joined_at=joined_at) for _ in range(50))
        )
    assert read.await_count == 1
    assert len({id(s) for s in snaps}) == 1
    frame = json.loads(snaps[0].text)
    assert frame["type"] == "snapshot" and frame["symbol"] == "AAPL"
    assert [t["seq"] for t in frame["ticks"]] == [1, 2, 3, 4, 5]
    assert snaps[0].last_seq == 5


async def test_a_subscriber_that_joined_after_a_read_began_gets_a_fresh_read():
    reader = SnapshotReader()
    await publish_tick(TickDraft("MSFT", 400.0, 399.0, 401.0, 1.0))
    first = await reader.read(symbol="MSFT", joined_at=time.monotonic())
    # This tick was published after the first read; a later joiner must see it.
    await publish_tick(TickDraft("MSFT", 401.0, 400.0, 402.0, 1.0))
    second = await reader.read(symbol="MSFT", joined_at=time.monotonic())
    assert (first.last_seq, second.last_seq) == (1, 2)


async def test_a_failed_read_reaches_every_waiter_and_the_next_read_retries():
    reader = SnapshotReader()
    joined_at = time.monotonic()
    with mock.patch.object(history, "snapshot", side_effect=ConnectionError("down")):
        results = await asyncio.gather(
            *(reader.read(symbol="AAPL", joined_at=joined_at) for _ in range(3)),
            return_exceptions=True,
        )
    assert all(isinstance(r, ConnectionError) for r in results)
    snap = await reader.read(symbol="AAPL", joined_at=time.monotonic())
    assert snap.last_seq == 0 and json.loads(snap.text)["ticks"] == []
