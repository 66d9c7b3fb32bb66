"""Ticks from a real Celery worker, through real Redis, served by real daphne, to a real client."""

import asyncio
import json
import os
import signal
import statistics
import time

import pytest
import redis
from websockets.asyncio.client import connect

from tests.realstack import real_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RATE = 10


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The file's one stack: two workers and beat, served by uvicorn on the stack's port
    and by daphne on another. The failover test, which kills a worker, runs last."""
    workdir = tmp_path_factory.mktemp("stack")
    with real_stack(workdir, workers=2, daphne=True, TICK_RATE=str(RATE)) as stack:
        yield stack


def server_url(stack, server: str) -> tuple[str, str]:
    """The WebSocket URL and Origin of the stack's ``server``."""
    port = stack.port if server == "uvicorn" else stack.daphne_port
    return f"ws://127.0.0.1:{port}/ws/prices/", f"http://127.0.0.1:{port}"


async def recv_json(ws, timeout: float = 10.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def request(ws, command: dict, expect: str, ticks: list | None = None) -> dict:
    """Send a command and return the answer of type ``expect``; the ticks that come
    before it are added to ``ticks`` (a collect_ticks window may end just before one)."""
    await ws.send(json.dumps(command))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        msg = await recv_json(ws)
        if msg["type"] == expect and msg.get("id") == command.get("id"):
            return msg
        assert msg["type"] in ("tick", "snapshot"), msg
        if msg["type"] == "tick" and ticks is not None:
            ticks.append(msg)
    raise AssertionError(f"no {expect} answer")


async def collect_ticks(ws, seconds: float, until=None) -> list[dict]:
    """The ticks received for ``seconds``, or until ``until(ticks)`` holds."""
    ticks = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0 and not (until and until(ticks)):
        try:
            raw = await asyncio.wait_for(ws.recv(), left)
        except TimeoutError:
            break
        msg = json.loads(raw)
        msg["_received_ms"] = time.time() * 1000
        assert msg["type"] == "tick", msg
        ticks.append(msg)
    return ticks


def assert_contiguous(ticks: list[dict]) -> None:
    by_symbol: dict[str, list[int]] = {}
    for t in ticks:
        by_symbol.setdefault(t["symbol"], []).append(t["seq"])
    for symbol, seqs in by_symbol.items():
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (symbol, seqs)


async def read_snapshots(ws, symbols: list[str]) -> dict[str, list[dict]]:
    """The snapshot frames that follow a subscribe, one per symbol."""
    snapshots = {}
    while len(snapshots) < len(symbols):
        msg = await recv_json(ws)
        assert msg["type"] == "snapshot", msg
        snapshots[msg["symbol"]] = msg["ticks"]
    return snapshots


async def wait_for_first_tick(ws, timeout: float = 30.0, snapshots: int = 0) -> dict:
    """The first tick, once ``snapshots`` snapshots came too: each symbol's comes before
    its own ticks, not before another's (on a busy machine a snapshot read can be slow)."""
    seen, first = 0, None
    while first is None or seen < snapshots:
        msg = await recv_json(ws, timeout)
        if msg["type"] == "tick":
            first = first or msg
        else:
            assert msg["type"] == "snapshot", msg
            seen += 1
    return first


@pytest.mark.parametrize("server", ["uvicorn", "daphne"])
async def test_ticks_reach_a_websocket_client_with_contiguous_seq(stack, server):
    rate = RATE
    url, origin = server_url(stack, server)
    async with connect(url, origin=origin) as ws:
        answer = await request(
            ws, {"action": "subscribe", "symbols": ["BTC-USD", "AAPL"], "id": 1}, "subscribed"
        )
        assert answer["symbols"] == ["BTC-USD", "AAPL"]
        snapshots = await read_snapshots(ws, ["BTC-USD", "AAPL"])
        first = await wait_for_first_tick(ws)
        window = 5.0
        ticks = await collect_ticks(ws, window)
        assert ticks[0]["seq"] == first["seq"] + 1 or ticks[0]["symbol"] != first["symbol"]
        # Each symbol's live stream continues exactly where its snapshot ended.
        for symbol, snap in snapshots.items():
            live = [t for t in [first, *ticks] if t["symbol"] == symbol]
            assert snap == [] or live[0]["seq"] == snap[-1]["seq"] + 1

        assert {t["symbol"] for t in ticks} == {"BTC-USD", "AAPL"}
        assert_contiguous(ticks)
        for t in ticks:
            # side (the aggressor) only where the source knows it: the simulator does.
            assert set(t) - {"_received_ms", "side"} == {
                "type", "symbol", "seq", "ts", "price", "bid", "ask", "size"
            }  # fmt: skip
            assert t.get("side", "buy") in ("buy", "sell")
            assert t["bid"] <= t["price"] <= t["ask"]
        per_second = len(ticks) / window
        # Two symbols at 10/s each; allow for the window edges and a loaded machine.
        assert 0.7 * 2 * rate <= per_second <= 1.15 * 2 * rate, per_second
        latencies = sorted(t["_received_ms"] - t["ts"] for t in ticks)
        p50 = statistics.median(latencies)
        p99 = latencies[int(0.99 * (len(latencies) - 1))]
        print(f"\nE2E {server} TICK_RATE={rate}: {per_second:.1f} ticks/s for 2 symbols, "
              f"latency p50 {p50:.1f} ms p99 {p99:.1f} ms")  # fmt: skip

        answer = await request(
            ws, {"action": "unsubscribe", "symbols": ["AAPL"], "id": 2}, "unsubscribed", ticks
        )
        assert answer["symbols"] == ["AAPL"]
        after = await collect_ticks(ws, 2.0)
        assert after, "BTC-USD ticks stopped too"
        assert {t["symbol"] for t in after} == {"BTC-USD"}
        assert_contiguous(ticks + after)


async def test_two_workers_never_both_produce_a_symbol_and_failover_keeps_seq(stack):
    rate = RATE
    async with connect(stack.ws_url, origin=stack.origin) as ws:
        symbols = ["BTC-USD", "ETH-USD", "EUR-USD", "MSFT"]
        await request(ws, {"action": "subscribe", "symbols": symbols}, "subscribed")
        await wait_for_first_tick(ws, snapshots=len(symbols))
        # Beat sends run_feed every second to either worker: both get some.
        window = 6.0
        before = await collect_ticks(ws, window)
        assert_contiguous(before)
        for symbol in symbols:
            count = sum(t["symbol"] == symbol for t in before)
            # Two producers of one symbol would double the rate.
            assert count <= rate * window * 1.15 + 2, (symbol, count)
            assert count >= rate * window * 0.6, (symbol, count)

        r = redis.Redis.from_url(stack.env["REDIS_URL"])
        owners = {s: r.get(f"{stack.prefix}:lease:{s}").decode().split(":")[1] for s in symbols}
        r.close()
        pids = {name: str(p.pid) for name, p in stack.procs.items() if name.startswith("worker")}
        assert set(owners.values()) <= set(pids.values()), (owners, pids)

        # Kill the producer outright: its leases lapse and the other worker takes over.
        victim = next(name for name, pid in pids.items() if pid in owners.values())
        killed_ms = time.time() * 1000
        os.kill(stack.procs[victim].pid, signal.SIGKILL)
        stack.stop(victim)

        # Until every symbol has ticked twice since (the victim's own could not).
        def produced_since(ticks: list[dict]) -> bool:
            since = [t["symbol"] for t in ticks if t["ts"] > killed_ms]
            return all(since.count(s) >= 2 for s in symbols)

        after = await collect_ticks(ws, 15.0, until=produced_since)
        assert produced_since(after), "no ticks of every symbol after failover"
        # seq carries on from the same Redis counter: no reset, no duplicate, no gap.
        assert_contiguous(before + after)
        survivors = [n for n in pids if n != victim]
        assert "now produces" in stack.log(survivors[0])
