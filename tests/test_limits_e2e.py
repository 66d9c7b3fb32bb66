"""Limits over a real uvicorn (the default ASGI_SERVER) and real sockets.

- The 101st connection from 127.0.0.1 is closed with 1013 (WS_MAX_CONNECTIONS_PER_IP,
  default 100).
- A client flooding pings, and one churning subscribe/unsubscribe, get a bounded number
  of rate_limited errors and are closed with 1008 once they have flooded for
  WS_FLOOD_CLOSE_SECONDS; the server's memory does not grow with what they sent, and the
  healthy clients of the same server keep receiving every tick, in order, with no gap,
  all along.

Behaviour only: no latency figure is asserted here (benchmarks/flood.py measures that).
"""

import asyncio
import json
import sys
import time
from collections import defaultdict

import psutil
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.realstack import BASE_DIR, real_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FLOOD_SECONDS = 4.0
SYMBOLS = ["BTC-USD", "ETH-USD"]
HEALTHY = 4


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with real_stack(
        tmp_path_factory.mktemp("limitstack"),
        TICK_RATE="10",
        WS_FLOOD_CLOSE_SECONDS=str(FLOOD_SECONDS),
        # On a shared 2-core machine the flooder's own process competes for the CPU; a
        # healthy client must not be closed for a tick made late by that (4008).
        MAX_TICK_AGE_MS="10000",
    ) as s:
        yield s


def test_the_101st_connection_from_one_address_is_closed_with_1013(stack):
    async def run() -> None:
        held = []
        try:
            for _ in range(100):
                ws = await connect(stack.ws_url, origin=stack.origin, open_timeout=10)
                held.append(ws)
            await held[-1].send('{"action": "ping", "id": 100}')
            assert json.loads(await held[-1].recv())["type"] == "pong"
            extra = await connect(stack.ws_url, origin=stack.origin, open_timeout=10)
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(extra.recv(), 5)
            assert info.value.rcvd.code == 1013
            assert "too many connections" in info.value.rcvd.reason
            # One leaves, one more gets in.
            await held.pop().close()
            await asyncio.sleep(0.5)
            ws = await connect(stack.ws_url, origin=stack.origin, open_timeout=10)
            held.append(ws)
            await ws.send('{"action": "ping"}')
            assert json.loads(await ws.recv())["type"] == "pong"
        finally:
            await asyncio.gather(*(ws.close() for ws in held))

    asyncio.run(run())


class Healthy:
    """A well-behaved client: every tick it receives, with the time it arrived."""

    def __init__(self) -> None:
        self.ticks: dict[str, list[tuple[float, int]]] = defaultdict(list)
        self.closed: int | None = None

    async def run(self, url: str, origin: str, stop: asyncio.Event) -> None:
        async with connect(url, origin=origin, open_timeout=10) as ws:
            await ws.send(json.dumps({"action": "subscribe", "symbols": SYMBOLS, "snapshot": 0}))
            while not stop.is_set():
                try:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                except TimeoutError:
                    continue
                except ConnectionClosed as exc:
                    self.closed = exc.rcvd.code if exc.rcvd else -1
                    return
                if msg["type"] == "tick":
                    self.ticks[msg["symbol"]].append((time.monotonic(), msg["seq"]))


async def run_flooder(stack, mode: str) -> dict:
    """tests/flooder.py in its own process: its busy loop never delays the healthy ones."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.flooder", stack.ws_url, stack.origin, mode,
        "--seconds", str(FLOOD_SECONDS + 20),
        cwd=BASE_DIR, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), FLOOD_SECONDS + 60)
    assert proc.returncode == 0
    return json.loads(out.decode().strip().splitlines()[-1])


def check_flooder(f: dict, allowed: set[str]) -> None:
    assert f["close_code"] == 1008, f
    # Closed once it had flooded for FLOOD_SECONDS past its burst, not long after.
    assert FLOOD_SECONDS <= f["lasted"] < FLOOD_SECONDS + 5, f
    assert set(f["replies"]) <= allowed, f
    errors = f["errors"]
    assert {e["code"] for e in errors} == {"rate_limited"}, f
    # Bounded: at most one a second (and a last one), each with the count it stands for.
    assert 1 <= len(errors) <= f["lasted"] + 2, f
    assert all(e["dropped"] >= 1 for e in errors), f
    # It sent far more than the server read from it.
    answered = sum(f["replies"].values()) - len(errors)
    assert f["sent"] > 10 * (answered + sum(e["dropped"] for e in errors)), f


def check_healthy(clients: list[Healthy], start: float, end: float) -> None:
    for c in clients:
        assert c.closed is None, c.closed
        for symbol in SYMBOLS:
            ticks = c.ticks[symbol]
            seqs = [s for _, s in ticks]
            # Every tick, in order, no gap, no duplicate.
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), symbol
            # And they kept arriving through the flood: some in every 2 s of it.
            window = start
            while window + 2 <= end:
                assert any(window <= t < window + 2 for t, _ in ticks), (symbol, window - start)
                window += 1


def test_flooders_are_rate_limited_and_closed_while_healthy_clients_get_every_tick(stack):
    web = psutil.Process(stack.procs["web"].pid)

    async def run() -> None:
        stop = asyncio.Event()
        healthy = [Healthy() for _ in range(HEALTHY)]
        tasks = [asyncio.ensure_future(h.run(stack.ws_url, stack.origin, stop)) for h in healthy]
        # Ticks are flowing to everyone first.
        deadline = time.monotonic() + 30
        while not all(len(h.ticks[s]) >= 3 for h in healthy for s in SYMBOLS):
            assert time.monotonic() < deadline, "no ticks reached the healthy clients"
            await asyncio.sleep(0.2)
        rss_before = web.memory_info().rss

        start = time.monotonic()
        pings = await run_flooder(stack, "pings")
        churn = await run_flooder(stack, "churn")
        end = time.monotonic()
        await asyncio.sleep(1.5)
        rss_after = web.memory_info().rss
        stop.set()
        await asyncio.gather(*tasks)

        check_flooder(pings, {"pong", "error"})
        check_flooder(churn, {"subscribed", "snapshot", "unsubscribed", "error", "tick", "ticks"})
        check_healthy(healthy, start, end)
        # The flooders' bytes stayed in their sockets, not in the server.
        assert rss_after - rss_before < 40 * 2**20, (rss_before, rss_after)

    asyncio.run(run())
    log = stack.log("web")
    assert "Traceback" not in log, log[-3000:]
    assert log.count("flooded commands") == 2, log[-3000:]
