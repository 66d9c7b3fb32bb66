"""A Redis call cancelled at any point leaves no socket open (issue 22).

The feed loop cancels every Redis call past its deadline (feeds/services.py, bounded).
An asyncio connection left open outside its pool would be freed by the garbage collector
later, with a ResourceWarning in whichever test. Such a leak was once blamed on these
cancellations; its cause was elsewhere (docs/operations.md, "A feed that stops
publishing"). Here a script call through the feed's own clients (markets.redis), against
a private redis-server, is cancelled after each step of the event loop until one is late
enough to find it done: on a cold client (connect, EVALSHA, NOSCRIPT, SCRIPT LOAD,
EVALSHA again) and on one whose connection the server dropped (redis-py's retry: 20 ms
of backoff, which the millisecond waits step over, then the reconnect). Each
time the loop's clients are then closed, and no connection may be left on the server and
no ResourceWarning come out of the garbage collector.
"""

import asyncio
import gc
import subprocess
import time
import warnings

import pytest
import redis
from django.test import override_settings

from markets.redis import close_redis_client, redis_client
from tickerproject.stack import free_port, redis_server_command, wait_for_port

# Cancelled after 0, 1, 2... steps of the loop (a cold call takes about 30 on an idle
# machine), then, on a loaded one where a reply can take many empty steps, after 1, 2,
# 4... ms: whatever the load, some try is late enough to find the call done.
LOOP_STEPS = 100
DOUBLINGS = 16


async def wait(n: int) -> None:
    if n < LOOP_STEPS:
        for _ in range(n):
            await asyncio.sleep(0)
    else:
        await asyncio.sleep(0.001 * 2 ** (n - LOOP_STEPS))


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory):
    port = free_port()
    proc = subprocess.Popen(
        redis_server_command(port, str(tmp_path_factory.mktemp("redis-cancel"))),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        admin = redis.Redis(port=port)
        admin.client_setname("admin")
        yield f"redis://127.0.0.1:{port}/0", admin
        admin.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def others(admin) -> list[dict]:
    return [c for c in admin.client_list() if c["name"] != "admin"]


async def cancelled_call(admin, path: str, n: int) -> bool:
    """One script call, cancelled after ``wait(n)``; whether it had ended by then."""
    client = redis_client()
    script = client.register_script("return 1")
    if path == "dropped":
        await client.ping()
        admin.client_kill_filter(_type="normal", skipme=True)
    admin.script_flush()
    call = asyncio.ensure_future(script(keys=[], args=[]))
    await wait(n)
    completed = call.done()
    call.cancel()
    await asyncio.gather(call, return_exceptions=True)
    await close_redis_client()
    return completed


def assert_no_resource_warning(where: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], where


async def assert_nothing_left(admin, where: str) -> None:
    deadline = time.monotonic() + 10  # the server sees a close a moment after it is made
    while left := others(admin):
        assert time.monotonic() < deadline, f"{where}: {len(left)} connection(s) left open"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("path", ["cold", "dropped"])
async def test_a_script_call_cancelled_at_any_point_leaves_no_socket_open(private_redis, path):
    url, admin = private_redis
    with override_settings(REDIS_URL=url, REDIS_SHARD_URLS=[url]):
        completed, n = False, 0
        while not completed:
            assert n < LOOP_STEPS + DOUBLINGS, "the call never completed"
            completed = await cancelled_call(admin, path, n)
            # A connection dropped open stays on the server's list until the garbage
            # collector frees it (and then warns, which fails the test too).
            await assert_nothing_left(admin, f"{path}, cancelled after wait({n})")
            n += 1
        # One full collection for the sweep, not one per call: about 0.1 s each here.
        assert_no_resource_warning(f"{path}, after {n} cancelled calls")
