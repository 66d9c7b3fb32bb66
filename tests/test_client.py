"""ticker_client against a scripted server on 127.0.0.1: close codes, resume, reset, gaps.

The real server is in tests/test_client_live.py; here a small ``websockets`` server plays
exact scenarios (a 4008 close, a duplicate, a gap, a reset) that a real one produces only
by chance. Its frames follow the protocol, and the contract plugin checks them too.
"""

import asyncio
import json

import pytest
from ticker_client import (
    AuthError,
    Disconnected,
    Gap,
    Reset,
    Snapshot,
    Tick,
    TickerClient,
    backoff_delay,
)
from websockets.asyncio.server import serve

S = "BTC-USD"


def tick(seq: int) -> dict:
    return {
        "type": "tick", "symbol": S, "seq": seq, "ts": 1764072000000 + seq,
        "price": 100.0 + seq, "bid": 99.5 + seq, "ask": 100.5 + seq, "size": 1.0,
    }  # fmt: skip


class Script:
    """Runs scenario ``n`` for the n-th connection; records the commands received."""

    def __init__(self, *scenarios) -> None:
        self.scenarios = list(scenarios)
        self.commands: list[dict] = []
        self.connections = 0

    async def handler(self, ws) -> None:
        scenario = self.scenarios[min(self.connections, len(self.scenarios) - 1)]
        self.connections += 1
        await scenario(self, ws)

    async def command(self, ws) -> dict:
        msg = json.loads(await ws.recv())
        self.commands.append(msg)
        return msg


async def send(ws, *msgs) -> None:
    for msg in msgs:
        await ws.send(json.dumps(msg))


async def subscribed(script, ws, snapshot: list[int] | None = None, epoch: str = "e1") -> dict:
    cmd = await script.command(ws)
    assert cmd["action"] == "subscribe"
    await send(ws, {"type": "subscribed", "id": cmd["id"], "symbols": cmd["symbols"]})
    if snapshot is not None:
        await send(
            ws,
            {"type": "snapshot", "symbol": S, "epoch": epoch, "ticks": [tick(s) for s in snapshot]},
        )
    return cmd


async def run(script: Script, body, **options):
    async with serve(script.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}/ws/prices/"
        client = TickerClient(url, base_delay=0.05, max_delay=0.2, **options)
        async with client:
            async with asyncio.timeout(15):
                return await body(client)


async def collect(client, until) -> list:
    events = []
    async for event in client.events():
        events.append(event)
        if until(event):
            return events
    return events


async def hold(ws) -> None:
    await ws.wait_closed()


async def test_4008_resumes_at_once_with_since_and_epochs_and_drops_duplicates():
    async def first(script, ws):
        await subscribed(script, ws, snapshot=[1, 2, 3])
        await send(ws, tick(4), tick(5))
        await ws.close(4008, "slow consumer")

    async def second(script, ws):
        await subscribed(script, ws)
        await send(ws, tick(5), tick(6), tick(8))
        await hold(ws)

    script = Script(first, second)

    async def body(client):
        await client.subscribe([S])
        return await collect(client, lambda e: isinstance(e, Tick) and e.seq == 8), client.stats

    events, stats = await run(script, body)
    resume = script.commands[1]
    assert resume["since"] == {S: 5} and resume["epochs"] == {S: "e1"}
    assert [e.seq for e in events if isinstance(e, Tick)] == [4, 5, 6, 8]
    assert [e.retry_in for e in events if isinstance(e, Disconnected)] == [0.0]
    assert [(e.expected, e.got) for e in events if isinstance(e, Gap)] == [(7, 8)]
    assert stats.duplicates == 1 and stats.gaps == 1 and stats.reconnects == 1


async def test_reset_forgets_the_series_and_rebuilds_from_the_snapshot():
    async def only(script, ws):
        await subscribed(script, ws, snapshot=[9, 10])
        await send(ws, tick(11), {"type": "reset", "symbol": S, "reason": "epoch_changed"})
        await send(ws, {"type": "snapshot", "symbol": S, "epoch": "e2", "ticks": [tick(1)]})
        await send(ws, tick(2))
        await hold(ws)

    async def body(client):
        await client.subscribe([S])
        events = await collect(client, lambda e: isinstance(e, Tick) and e.seq == 2)
        return events, client.epoch(S)

    events, epoch = await run(Script(only), body)
    kinds = [type(e).__name__ for e in events if not type(e).__name__.endswith("nected")]
    assert kinds == ["Snapshot", "Tick", "Reset", "Snapshot", "Tick"]
    assert [e.seq for e in events if isinstance(e, Tick)] == [11, 2]
    assert isinstance(events[-2], Snapshot) and epoch == "e2"
    assert [e.reason for e in events if isinstance(e, Reset)] == ["epoch_changed"]


@pytest.mark.parametrize(("code", "least"), [(1013, 0.0), (1008, 0.3), (1012, 0.0)])
async def test_other_closes_back_off(code, least):
    async def refuse(script, ws):
        await ws.close(code, "go away")

    async def body(client):
        return await collect(client, lambda e: isinstance(e, Disconnected))

    events = await run(Script(refuse), body, policy_pause=0.3, random=lambda: 0.0)
    (disconnected,) = [e for e in events if isinstance(e, Disconnected)]
    assert disconnected.code == code
    assert disconnected.retry_in >= max(least, backoff_delay(0, base=0.05, random=lambda: 0.0))
    assert disconnected.retry_in > 0


@pytest.mark.parametrize("code", [4401, 4403])
async def test_refused_credentials_raise_auth_error_without_retrying(code):
    async def refuse(script, ws):
        await ws.close(code, "no")

    script = Script(refuse)

    async def body(client):
        with pytest.raises(AuthError) as raised:
            await collect(client, lambda e: False)
        return raised.value

    error = await run(script, body, token="tk_x")
    assert error.code == code
    assert script.connections == 1


async def test_auth_command_then_resubscribe_and_latest_skips_are_not_gaps():
    async def only(script, ws):
        auth = await script.command(ws)
        assert auth["action"] == "auth" and auth["token"] == "tk_x"
        await send(ws, {"type": "authenticated", "id": auth["id"], "user": "alice"})
        cmd = await subscribed(script, ws, snapshot=[])
        assert cmd["mode"] == "latest" and cmd["max_rate"] == 2 and cmd["batch_ms"] == 0
        await send(ws, tick(3), {**tick(7), "skipped": 3}, {"type": "ticks", "ticks": [tick(8)]})
        await hold(ws)

    async def body(client):
        await client.subscribe([S], mode="latest", max_rate=2, snapshot=0, batch_ms=0)
        events = await collect(client, lambda e: isinstance(e, Tick) and e.seq == 8)
        return events, client.stats

    events, stats = await run(Script(only), body, token="tk_x", auth="command")
    assert [e.seq for e in events if isinstance(e, Tick)] == [3, 7, 8]
    assert stats.gaps == 0 and stats.skipped == 3


def test_backoff_is_exponential_capped_and_jittered():
    assert backoff_delay(0, base=1, cap=8, random=lambda: 0.0) == 0.5
    assert backoff_delay(3, base=1, cap=8, random=lambda: 1.0) == 8
    assert backoff_delay(10, base=1, cap=8, random=lambda: 0.5) == 6
