"""The snapshot-to-live seam while a feed starts, in every delivery mode (issue 19).

Many clients subscribe to a symbol whose feed is new, so each one's snapshot is its own
read; the reads end in any order, and live ticks reach the hub in between. Each client
must then get every tick after its history (``all``: unbatched, and batched through a
cohort) or have every jump announced by ``skipped`` (``latest``).

Real Redis for the history reads and the hub's own connections; the reads are held
open by the test, and the hub is handed each tick's channel-layer event by hand, so the
order is the one under test every run. The last test runs the same over real sockets:
our uvicorn protocol in this process (so the reads can be held), real WebSocket clients.
"""

import asyncio
import json
from unittest import mock

import pytest
from uvicorn.config import Config
from uvicorn.server import Server
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from markets import history
from markets.publishing import TickPublisher, tick_event
from markets.ticks import TickDraft
from streaming.connection import Connection
from streaming.hub import local_hub
from streaming.outbox import ROUND
from streaming.protocol import Command, Mode
from tickerproject.stack import free_port
from tickerproject.uvicorn_ws import PacedWebSocketsProtocol

pytestmark = pytest.mark.usefixtures("clean_redis", "close_hub")

SYMBOL = "NVDA"


class NoGuard:
    """Anonymous connections to public symbols: nothing to recheck."""

    def watch(self, conn) -> None:
        pass

    def forget(self, conn) -> None:
        pass


class Client:
    """A Connection over a socket that takes every frame at once; what it received."""

    def __init__(self, name: str, *, mode: Mode = Mode.ALL, batch_ms: int | None = None):
        self.name = name
        self.mode = mode
        self.batch_ms = batch_ms
        self.texts: list[str] = []
        self.closed: list[int] = []
        self.conn = Connection(
            send_text=self._send, write=self._write, close=self._close, guard=NoGuard()
        )

    def _write(self, payload: bytes) -> bool:
        self.texts.append(payload.decode())
        return True

    async def _send(self, text: str) -> None:
        self.texts.append(text)

    async def _close(self, code: int) -> None:
        self.closed.append(code)

    async def subscribe(self, since: int | None = None) -> None:
        command = Command(
            action="subscribe",
            symbols=[SYMBOL],
            mode=self.mode,
            batch_ms=self.batch_ms,
            since={SYMBOL: since} if since is not None else {},
        )
        await self.conn.subscribe(command, [SYMBOL])

    def ticks(self, *, start: int = 0) -> list[tuple[int, int]]:
        """(seq, skipped) of every tick received from frame ``start`` on, snapshots
        included, in order."""
        out = []
        for text in self.texts[start:]:
            msg = json.loads(text)
            if msg["type"] in ("snapshot", "ticks"):
                out += [(t["seq"], 0) for t in msg["ticks"]]
            elif msg["type"] == "tick":
                out.append((msg["seq"], msg.get("skipped", 0)))
        return out

    def in_cohort(self) -> bool:
        """Whether its ticks come in the frames shared by a cohort (streaming.cohort)."""
        return all(sub.cohort is not None for sub in self.conn.subs.values())

    def last(self) -> int | None:
        ticks = self.ticks()
        return ticks[-1][0] if ticks else None

    def problems(self, since: int | None) -> list[str]:
        """Every seq the client lost: a gap in ``all``, a jump ``skipped`` does not explain."""
        found = []
        last = since
        for seq, skipped in self.ticks():
            if last is not None and seq != last + 1 + skipped:
                found.append(f"{self.name}: {last} -> {seq} (skipped {skipped})")
            last = seq
        return found


class HeldPublisher:
    """Publishes ticks into history; their channel-layer events wait for the test."""

    def __init__(self) -> None:
        self.publisher = TickPublisher.unfenced_for_tests()
        self.events: list[dict] = []

        async def hold(ticks) -> None:
            self.events += [tick_event(t, epoch=self.publisher.epoch_of(t.symbol)) for t in ticks]

        self.publisher._fan_out = hold

    async def publish(self, n: int = 1) -> None:
        for _ in range(n):
            await self.publisher.publish([TickDraft(SYMBOL, 100.0, 99.0, 101.0, 1.0)])

    async def arrive(self) -> None:
        """The held events reach the hub, as one batch of its receive loop."""
        events, self.events = self.events, []
        hub = local_hub()
        with ROUND:
            for event in events:
                await hub._on_tick(event)


class Reads:
    """History reads that each wait, once they have read Redis, for the gate of their wave."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.done_reading = 0
        self._snapshot, self._resume = history.snapshot, history.resume

    def held(self, real):
        async def read(**kwargs):
            result = await real(**kwargs)
            gate = self.gate
            self.done_reading += 1
            await gate.wait()
            return result

        return read

    def patch(self):
        return mock.patch.multiple(
            history, snapshot=self.held(self._snapshot), resume=self.held(self._resume)
        )


async def until(condition, what: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.01)


async def test_clients_whose_reads_end_after_a_newer_one_lose_no_tick_in_any_mode():
    ticks = HeldPublisher()
    await ticks.publish(5)
    reads = Reads()
    first_gate = reads.gate
    # Wave one: a client of each mode subscribes to the new feed (one resumes); each
    # one's read reaches seq 5 and is held open.
    first = {
        Client("all"): None,
        Client("all-batched", batch_ms=20): None,
        Client("latest", mode=Mode.LATEST): None,
        Client("all-batched-since", batch_ms=20): 2,
    }
    with reads.patch():
        subscribing = [asyncio.ensure_future(c.subscribe(since)) for c, since in first.items()]
        await until(lambda: reads.done_reading == len(first), "the first reads")
        # Tick 6 is published, and a later subscriber's read, let through, reaches it
        # before the tick's channel-layer event reaches the hub.
        await ticks.publish()
        reads.gate = asyncio.Event()
        reads.gate.set()
        later = Client("later")
        await later.subscribe()
        await ticks.arrive()
        # Now the first reads end: those clients go live with history up to 5.
        first_gate.set()
        await asyncio.gather(*subscribing)
    for _ in range(3):  # ticks 7-9, each a batch of its own
        await ticks.publish()
        await ticks.arrive()
    clients = {**first, later: None}
    await until(
        lambda: all(c.last() == 9 for c in clients),
        "every client reached tick 9",
    )
    assert [c.name for c in clients if c.in_cohort()] == ["all-batched", "all-batched-since"]
    assert [code for c in clients for code in c.closed] == []
    problems = [p for c, since in clients.items() for p in c.problems(since)]
    assert not problems, "\n".join(problems)


async def test_live_clients_keep_every_tick_when_a_newer_read_overtakes_the_hub():
    ticks = HeldPublisher()
    await ticks.publish(5)
    reads = Reads()
    clients = [
        Client("all"),
        Client("all-batched", batch_ms=20),
        Client("latest", mode=Mode.LATEST),
    ]
    with reads.patch():
        subscribing = [asyncio.ensure_future(c.subscribe()) for c in clients]
        await until(lambda: reads.done_reading == len(clients), "the first reads")
        await ticks.publish()
        await ticks.arrive()  # tick 6 reaches the hub while the reads (up to 5) are held
        reads.gate.set()
        await asyncio.gather(*subscribing)
    await until(lambda: all(c.last() == 6 for c in clients), "every client has 6")
    assert [c.name for c in clients if c.in_cohort()] == ["all-batched"]
    # Tick 7 is on its way to this process when a new subscriber's read finds it.
    await ticks.publish()
    later = Client("later")
    await later.subscribe()
    assert later.last() == 7
    await ticks.arrive()  # 7 reaches the hub
    for _ in range(2):  # then 8 and 9
        await ticks.publish()
        await ticks.arrive()
    clients.append(later)
    await until(lambda: all(c.last() == 9 for c in clients), "every client reached 9")
    assert [code for c in clients for code in c.closed] == []
    problems = [p for c in clients for p in c.problems(None)]
    assert not problems, "\n".join(problems)


class SocketClient:
    """A real WebSocket client of a server in this process; what it received."""

    def __init__(self, url: str, name: str, **subscribe) -> None:
        self.url, self.name, self.subscribe = url, name, subscribe
        self.texts: list[str] = []
        self.closed: list[int] = []
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        ready = asyncio.Event()
        self.task = asyncio.ensure_future(self._run(ready))
        await asyncio.wait_for(ready.wait(), 5)

    async def _run(self, ready: asyncio.Event) -> None:
        origin = self.url.replace("ws://", "http://").removesuffix("/ws/prices/")
        try:
            async with connect(self.url, origin=origin) as ws:
                await ws.send(json.dumps({"action": "subscribe", **self.subscribe}))
                ready.set()
                async for text in ws:
                    self.texts.append(text)
        except ConnectionClosed as exc:
            self.closed.append(exc.rcvd.code if exc.rcvd else 1006)

    ticks = Client.ticks
    last = Client.last
    problems = Client.problems


@pytest.fixture
async def server(async_symbols):
    """Our uvicorn protocol serving the app on a free port of 127.0.0.1, in this loop."""
    from tickerproject.asgi import application

    port = free_port()
    config = Config(
        application,
        host="127.0.0.1",
        port=port,
        ws=PacedWebSocketsProtocol,
        lifespan="off",
        log_level="warning",
    )
    uvicorn = Server(config)
    serving = asyncio.ensure_future(uvicorn.serve())
    await until(lambda: uvicorn.started or serving.done(), "the server started")
    yield f"ws://127.0.0.1:{port}/ws/prices/"
    uvicorn.should_exit = True
    await asyncio.wait_for(serving, 10)


async def test_over_real_sockets_clients_of_every_mode_lose_no_tick_at_a_starting_feed(server):
    ticks = HeldPublisher()
    await ticks.publish(5)
    reads = Reads()
    first_gate = reads.gate
    sub = {"symbols": [SYMBOL]}
    first = [
        SocketClient(server, "all", **sub),
        SocketClient(server, "all-batched", batch_ms=20, **sub),
        SocketClient(server, "latest", mode="latest", **sub),
    ]
    with reads.patch():
        for c in first:
            await c.start()
        await until(lambda: reads.done_reading == len(first), "the first reads")
        await ticks.publish()  # 6, which a later subscriber's read finds first
        reads.gate = asyncio.Event()
        reads.gate.set()
        later = SocketClient(server, "later", **sub)
        await later.start()
        await until(lambda: later.last() == 6, "the later snapshot")
        await ticks.arrive()
        first_gate.set()
        await until(lambda: all(c.last() for c in first), "the first snapshots")
    for _ in range(3):  # ticks 7-9, each a batch of its own
        await ticks.publish()
        await ticks.arrive()
    clients = [*first, later]
    await until(lambda: all(c.last() == 9 for c in clients), "every client reached tick 9")
    [batched] = [conn for conn in connections() if conn.outbox.batch_ms]
    assert all(s.cohort is not None for s in batched.subs.values())  # the shared frames
    for c in clients:
        c.task.cancel()
    assert [code for c in clients for code in c.closed] == []
    problems = [p for c in clients for p in c.problems(None)]
    assert not problems, "\n".join(problems)


def connections():
    """The open connections of this loop's server (the guard watches every one)."""
    from streaming.guard import local_guard

    return list(local_guard().connections)
