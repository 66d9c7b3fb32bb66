"""markets.layer.TickerChannelLayer.group_send_many over a real Redis."""

import asyncio
import time
import uuid

import pytest
from django.conf import settings

from markets.layer import TickerChannelLayer


@pytest.fixture
async def layer():
    made = []

    def make(**config) -> TickerChannelLayer:
        made.append(
            TickerChannelLayer(
                hosts=[settings.REDIS_URL], prefix=f"test-layer-{uuid.uuid4().hex[:8]}", **config
            )
        )
        return made[-1]

    yield make
    for one in made:
        conn = one.connection(0)
        async for key in conn.scan_iter(match=f"{one.prefix}*"):
            await conn.delete(key)
        await one.flush()


async def drain(layer: TickerChannelLayer, channel: str) -> list[int]:
    got = []
    while True:
        try:
            got.append((await asyncio.wait_for(layer.receive(channel), 0.3))["n"])
        except TimeoutError:
            return got


async def test_a_batch_reaches_every_member_of_each_group_in_the_order_given(layer):
    one = layer()
    a, b = await one.new_channel(), await one.new_channel()
    await one.group_add("g1", a)
    await one.group_add("g1", b)
    await one.group_add("g2", a)
    batch = [("g1", 1), ("g2", 2), ("g1", 3), ("nobody", 4), ("g2", 5), ("g1", 6)]
    over = await one.group_send_many([(g, {"type": "t", "n": n}) for g, n in batch])
    assert over == 0
    assert await drain(one, a) == [1, 2, 3, 5, 6]
    assert await drain(one, b) == [1, 3, 6]


async def test_batches_and_single_sends_keep_their_order_across_calls(layer):
    one = layer()
    a = await one.new_channel()
    await one.group_add("g", a)
    for start in range(0, 60, 3):
        await one.group_send_many([("g", {"type": "t", "n": start + i}) for i in range(3)])
    await one.group_send("g", {"type": "t", "n": 60})
    assert await drain(one, a) == list(range(61))


async def test_a_full_channel_drops_the_copies_past_its_capacity_and_says_how_many(layer):
    one = layer(capacity=2)
    a = await one.new_channel()
    await one.group_add("g", a)
    over = await one.group_send_many([("g", {"type": "t", "n": n}) for n in range(5)])
    assert over == 3
    assert one.over_capacity == 3
    assert await drain(one, a) == [0, 1]


async def test_members_older_than_group_expiry_are_left_out_and_forgotten(layer):
    one = layer(group_expiry=60)
    a, b = await one.new_channel(), await one.new_channel()
    await one.group_add("g", a)
    await one.group_add("g", b)
    # b joined long ago and never renewed.
    await one.connection(0).zadd(one._group_key("g"), {b: time.time() - 3600})
    await one.group_send_many([("g", {"type": "t", "n": 1})])
    assert await drain(one, a) == [1]
    assert await drain(one, b) == []
    assert await one.connection(0).zrange(one._group_key("g"), 0, -1) == [a.encode()]


async def test_receive_many_takes_everything_queued_in_order_and_waits_when_empty(layer):
    one = layer()
    hub = one.new_batch_channel("hub")
    await one.group_add("g1", hub)
    await one.group_add("g2", hub)
    await one.group_send_many([(g, {"type": "t", "n": n}) for n, g in enumerate(["g1", "g2"] * 5)])
    await one.group_send("g1", {"type": "t", "n": 10})
    got = await one.receive_many(hub)
    assert [m["n"] for m in got] == list(range(11))
    assert all("__asgi_channel__" not in m for m in got)
    # Nothing queued: it waits for the next message rather than spinning.
    waiter = asyncio.ensure_future(one.receive_many(hub, timeout=5))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    await one.group_send_many([("g2", {"type": "t", "n": n}) for n in (11, 12, 13)])
    # Woken by the first, it also takes what came with it: the batch stays one batch.
    assert [m["n"] for m in await asyncio.wait_for(waiter, 5)] == [11, 12, 13]
    assert await one.receive_many(hub, timeout=0.2) == []


async def test_receive_many_returns_at_most_limit_and_leaves_the_rest_queued(layer):
    one = layer()
    hub = one.new_batch_channel()
    await one.group_add("g", hub)
    await one.group_send_many([("g", {"type": "t", "n": n}) for n in range(7)])
    assert [m["n"] for m in await one.receive_many(hub, limit=5)] == [0, 1, 2, 3, 4]
    assert [m["n"] for m in await one.receive_many(hub, limit=5)] == [5, 6]
