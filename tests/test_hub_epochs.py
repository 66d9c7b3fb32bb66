"""A web process and ticks of a numbering Redis no longer holds (streaming.hub).

Redis that loses its data (a restart, a failover) starts each symbol's numbering again
in a new epoch. A fan-out in flight when it went can still reach the new server: redis-py
retries a command whose connection dropped (markets.sentinel.retry_policy), so ticks
numbered under the old epoch arrive after the new one began. A CI run of
test_e2e_delivery's Redis restart saw clients reset twice per symbol: the stale tick's
seq, far past the new numbering's, was taken for a hole, which history could not fill.

Real Redis; the hub is handed each tick's channel-layer event by hand (tests.test_seam),
so the order under test is the same every run.
"""

import asyncio
import json
from unittest import mock

import pytest

from markets import history
from streaming.hub import local_hub
from tests.test_seam import SYMBOL, Client, HeldPublisher, Reads, until

pytestmark = pytest.mark.usefixtures("clean_redis", "close_hub")


def frames(client: Client) -> list[dict]:
    return [json.loads(t) for t in client.texts]


def after_reset(client: Client) -> list[tuple[int, int]]:
    """(seq, skipped) of every tick received after the client's last reset."""
    resets = [i for i, f in enumerate(frames(client)) if f["type"] == "reset"]
    return client.ticks(start=resets[-1] + 1) if resets else []


async def an_old_epoch_with_a_tick_in_flight(
    lose_everything,
) -> tuple[HeldPublisher, Client, list[dict], str]:
    """A client live on ticks 1-3; tick 4's event on its way when Redis loses everything
    (``lose_everything``: clean_redis's wipe of every market key)."""
    ticks = HeldPublisher()
    await ticks.publish(3)
    await ticks.arrive()
    client = Client("all")
    await client.subscribe()
    await until(lambda: client.last() == 3, "the client has 1-3")
    old_epoch = await history.current_epoch(symbol=SYMBOL)
    await ticks.publish()
    in_flight, ticks.events = ticks.events, []
    assert in_flight[0]["epoch"] == old_epoch and in_flight[0]["seq"] == 4
    await lose_everything()
    # Epochs are the publish's time in ms: a new one needs another millisecond.
    await asyncio.sleep(0.002)
    return ticks, client, in_flight, old_epoch


async def test_a_tick_of_the_lost_epoch_after_the_reset_is_dropped_not_taken_for_a_hole(
    clean_redis,
):
    ticks, client, in_flight, old_epoch = await an_old_epoch_with_a_tick_in_flight(clean_redis)
    await ticks.publish(2)  # the new numbering: 1 and 2
    assert await history.current_epoch(symbol=SYMBOL) != old_epoch
    hub = local_hub()
    # The web process comes back from the outage: it catches its feeds up.
    await hub._catch_up(hub.feeds[SYMBOL])
    resets = [f for f in frames(client) if f["type"] == "reset"]
    assert [r["reason"] for r in resets] == [history.RESET_EPOCH_CHANGED]
    # Then the retried fan-out of the old epoch's tick 4 arrives, then the new ones.
    ticks.events = in_flight + ticks.events
    await ticks.arrive()
    await ticks.publish()
    await ticks.arrive()
    await until(lambda: client.last() == 3 and len(after_reset(client)) == 3, "new 1-3")
    assert [f["reason"] for f in frames(client) if f["type"] == "reset"] == ["epoch_changed"]
    assert after_reset(client) == [(1, 0), (2, 0), (3, 0)]
    assert hub.stale_ticks == 1
    assert client.closed == []


async def test_a_tick_of_the_lost_epoch_never_reaches_a_client_reset_to_an_empty_history(
    clean_redis,
):
    ticks, client, in_flight, _ = await an_old_epoch_with_a_tick_in_flight(clean_redis)
    hub = local_hub()
    # Caught up before the producer's first tick on the new server: an empty snapshot.
    await hub._catch_up(hub.feeds[SYMBOL])
    assert after_reset(client) == []
    ticks.events = in_flight
    await ticks.arrive()  # the old epoch's tick 4
    await ticks.publish(2)
    await ticks.arrive()
    await until(lambda: len(after_reset(client)) == 2, "the new numbering's 1 and 2")
    assert after_reset(client) == [(1, 0), (2, 0)]
    assert [f["reason"] for f in frames(client) if f["type"] == "reset"] == ["epoch_changed"]
    assert hub.stale_ticks == 1


async def test_the_new_epochs_first_tick_resets_once_and_the_catch_up_then_finds_nothing(
    clean_redis,
):
    ticks, client, _lost, _ = await an_old_epoch_with_a_tick_in_flight(clean_redis)
    await ticks.publish(2)
    hub = local_hub()
    # The new numbering's ticks reach the hub before it catches up; the old epoch's tick
    # 4 never does.
    await ticks.arrive()
    await until(lambda: after_reset(client) == [(1, 0), (2, 0)], "the reset and 1-2")
    await hub._catch_up(hub.feeds[SYMBOL])
    await ticks.publish()
    await ticks.arrive()
    await until(lambda: client.last() == 3, "the new numbering's 3")
    assert [f["reason"] for f in frames(client) if f["type"] == "reset"] == ["epoch_changed"]
    assert after_reset(client) == [(1, 0), (2, 0), (3, 0)]
    assert hub.stale_ticks == 0


async def test_a_feed_nobody_holds_takes_the_new_epoch_without_a_reset(clean_redis):
    ticks, client, _lost, _ = await an_old_epoch_with_a_tick_in_flight(clean_redis)
    client.conn.unsubscribe([SYMBOL])
    hub = local_hub()
    feed = hub.feeds[SYMBOL]  # kept a while for a subscriber that comes back
    assert not feed.subscribers
    await ticks.publish()
    await ticks.arrive()
    assert feed.epoch == await history.current_epoch(symbol=SYMBOL)
    assert (feed.last_seq, hub.resets, hub.stale_ticks) == (1, 0, 0)


async def test_a_new_feeds_first_read_ending_while_the_hub_asks_about_an_epoch_resets_nobody():
    # A fresh-clone run under load: a new feed's first tick made the hub ask Redis about
    # its epoch; the feed's first snapshot read ended meanwhile and named that epoch; the
    # hub took the feed for one that had delivered another epoch and reset its client.
    ticks = HeldPublisher()
    await ticks.publish(3)
    ticks.events = []
    reads = Reads()
    asked, answer = asyncio.Event(), asyncio.Event()
    real = history.current_epoch

    async def held_current_epoch(**kwargs):
        result = await real(**kwargs)
        asked.set()
        await answer.wait()
        return result

    client = Client("all")
    with reads.patch(), mock.patch.object(history, "current_epoch", held_current_epoch):
        subscribing = asyncio.ensure_future(client.subscribe())
        await until(lambda: reads.done_reading == 1, "the first read")  # up to 3, held
        await ticks.publish()  # 4
        arriving = asyncio.ensure_future(ticks.arrive())
        await asyncio.wait_for(asked.wait(), 5)  # the hub asks Redis about 4's epoch
        reads.gate.set()
        await subscribing  # the read ends first: the feed knows the epoch now
        answer.set()
        await arriving
    await until(lambda: client.last() == 4, "tick 4")
    assert [f for f in frames(client) if f["type"] == "reset"] == []
    assert client.ticks() == [(1, 0), (2, 0), (3, 0), (4, 0)]
    assert local_hub().resets == 0
