"""The delivery engine over a real stack: stalled clients, a Redis restart, group expiry.

Real uvicorn, real Celery worker and beat, real Redis, real sockets. Figures are
printed (run with -s to see them); benchmarks/RESULTS.md records them. The asserts
are what the design guarantees, not timing samples.
"""

import asyncio
import json
import subprocess
import sys
import time
from datetime import datetime

import psutil
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from markets.universe import DEFAULT_UNIVERSE
from tests.realstack import BASE_DIR, real_stack
from tests.stalled import StalledClient
from tickerproject.stack import free_port, redis_server_command, wait_for_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SYMBOLS = [i.ticker for i in DEFAULT_UNIVERSE]


def p99(values: list[float]) -> float:
    values = sorted(values)
    return values[int(0.99 * (len(values) - 1))] if values else float("nan")


class Healthy:
    """A client that reads every frame and checks each symbol's seq."""

    def __init__(self, stack, symbols: list[str]) -> None:
        self.stack = stack
        self.symbols = symbols
        self.last: dict[str, int] = {}
        self.gaps = 0
        self.duplicates = 0
        self.latencies: list[tuple[float, float]] = []  # (receipt s, ms)
        self.close_code: int | None = None
        self.snapshots = 0
        self.resets = 0

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        async with connect(self.stack.ws_url, origin=self.stack.origin) as ws:
            await ws.send(json.dumps({"action": "subscribe", "symbols": self.symbols}))
            reader = asyncio.ensure_future(self._read(ws))
            await stop.wait()
            reader.cancel()

    async def _read(self, ws) -> None:
        try:
            async for frame in ws:
                now = time.time()
                msg = json.loads(frame)
                if msg["type"] == "snapshot":
                    self.snapshots += 1
                    if msg["ticks"]:
                        self.last[msg["symbol"]] = msg["ticks"][-1]["seq"]
                elif msg["type"] == "reset":
                    self.resets += 1
                    self.last.pop(msg["symbol"], None)
                elif msg["type"] == "tick":
                    self.latencies.append((now, now * 1000 - msg["ts"]))
                    last = self.last.get(msg["symbol"])
                    if last is not None:
                        if msg["seq"] <= last:
                            self.duplicates += 1
                        elif msg["seq"] != last + 1:
                            self.gaps += 1
                    self.last[msg["symbol"]] = msg["seq"]
        except ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd else 1006


def web_rss(stack) -> int:
    proc = psutil.Process(stack.procs["web"].pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])


async def wait_for_ticks(stack, symbols: list[str], timeout: float = 30) -> None:
    """Block until every symbol has ticked once (the feed is running)."""
    async with connect(stack.ws_url, origin=stack.origin) as ws:
        await ws.send(json.dumps({"action": "subscribe", "symbols": symbols, "snapshot": 0}))
        seen: set[str] = set()
        deadline = time.monotonic() + timeout
        while seen != set(symbols):
            msg = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
            if msg["type"] == "tick":
                seen.add(msg["symbol"])


RAMP = 2  # the harness's seconds to connect its clients, before its window


def harness(stack, tmp_path, name: str, *, duration: float, options=()) -> dict:
    """Run the load-test harness (light and exact) as the healthy clients."""
    report = tmp_path / name
    subprocess.run(
        [sys.executable, "manage.py", "loadtest", "--url", stack.ws_url,
         "--clients", "50", "--symbols-per-client", "2", "--symbols", "20",
         "--tick-rate", "50", "--ramp", str(RAMP), "--duration", str(duration),
         "--processes", "1", "--report", str(report), *options],
        env=stack.env, cwd=BASE_DIR, check=True, capture_output=True, timeout=duration + 60,
    )  # fmt: skip
    return json.loads(report.with_suffix(".json").read_text())


# A stalled client announces an Ethernet-sized TCP segment (tests/stalled.py): on
# loopback's 64 KiB segments the kernel buffers ~2.6 MB for it before the server can see
# the stall (32-35 s at 22 symbols x 50 Hz); at 1460 it is ~75 kB, and the server closes
# it about a second after it stalls (the tests print when), well inside a 6 s window.
ETHERNET_MSS = 1460

# The stalled clients below are read after the harness's window: they must still find
# their 4008, so the close deadline is longer than that.
READ_LATER = {"WS_CLOSE_TIMEOUT": "90"}


@pytest.fixture(scope="module")
def stall_stack(tmp_path_factory):
    """The stalled-client tests' stack: 50 ticks/s, and READ_LATER."""
    with real_stack(tmp_path_factory.mktemp("stall"), TICK_RATE="50", **READ_LATER) as stack:
        yield stack


def web_clients(stack) -> set[int]:
    """The ports of the clients the web server holds connections of."""
    proc = psutil.Process(stack.procs["web"].pid)
    return {
        c.raddr.port
        for p in [proc, *proc.children(recursive=True)]
        for c in p.net_connections("tcp")
        if c.raddr and c.laddr.port == stack.port
    }


async def harness_with_stalled(
    stack,
    tmp_path,
    name: str,
    stalled: list[StalledClient],
    symbols: list[str],
    *,
    duration: float,
    options=(),
    **subscribe,
) -> tuple[dict, float, str]:
    """The harness's run, with ``stalled`` opened once its 50 clients are all connected.

    So the stalls, and the server's closing of them, fall inside the harness's window
    (it opens when the ramp ends). Returns the report and about how many seconds of that
    window were left when the stalls began (the report's start is to the second), and
    when the server closed them.
    """  # fmt: skip
    before = web_clients(stack)  # an earlier test's, maybe still closing
    deadline = time.monotonic() + 60
    run = asyncio.ensure_future(
        asyncio.to_thread(harness, stack, tmp_path, name, duration=duration, options=options)
    )
    while len(web_clients(stack) - before) < 50:
        assert not run.done(), "the harness ended before its clients were all connected"
        assert time.monotonic() < deadline, "the harness's clients did not connect"
        await asyncio.sleep(0.05)
    stall_at = time.time()
    for s in stalled:
        await s.open_and_subscribe(symbols, **subscribe)
    report = await run
    window_end = datetime.fromisoformat(report["started_at"]).timestamp() + RAMP + duration
    return report, window_end - stall_at, slow_closes_since(stack, stall_at)


def slow_closes_since(stack, since: float) -> str:
    """When the web server closed slow consumers, in seconds after ``since`` (a figure)."""
    after = [
        datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp() - since
        for line in stack.log("web").splitlines()
        if "closing a slow consumer (4008)" in line
    ]
    after = [a for a in after if a >= 0]
    return f"{min(after):.1f}-{max(after):.1f} s" if after else "none logged"


async def test_stalled_clients_are_closed_with_4008_and_never_hold_up_the_others(
    stall_stack, tmp_path
):
    stack = stall_stack
    await wait_for_ticks(stack, SYMBOLS)
    baseline = await asyncio.to_thread(harness, stack, tmp_path, "baseline", duration=5)
    rss_before = web_rss(stack)
    stalled = [StalledClient(stack.ws_url, stack.origin, mss=ETHERNET_MSS) for _ in range(10)]
    with_stalled, left, closed = await harness_with_stalled(
        stack, tmp_path, "stalled", stalled, SYMBOLS, duration=6
    )
    rss_after = web_rss(stack)
    codes = [await s.read_to_close() for s in stalled]

    print(
        f"\nhealthy p99 {baseline['latency_ms']['p99']} ms before, "
        f"{with_stalled['latency_ms']['p99']} ms with 10 stalled clients (stalled with "
        f"~{left:.0f} s of the window left, closed {closed} later); web RSS "
        f"{rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB; codes {codes}; delivered "
        f"{with_stalled['throughput']['delivered_ratio']}; slow closes "
        f"{baseline['connections']['slow_consumer_closes']}/{with_stalled['connections']['slow_consumer_closes']}"
    )
    assert codes == [4008] * 10
    for run in (baseline, with_stalled):
        assert run["seq"]["gaps"] == run["seq"]["duplicates"] == 0
        assert run["connections"]["closed_early"] == 0
        # Ticks kept coming all through the stall, second by second.
        timeline = run["timeline"]
        measured = [
            n for n, phase in zip(timeline["ticks_per_s"], timeline["phase"], strict=True)
            if phase == "measure"
        ]  # fmt: skip
        assert measured and min(measured) > 0


async def test_batching_clients_share_frames_and_a_stalled_one_among_them_is_closed(
    stall_stack, tmp_path
):
    # The harness's 50 clients and 10 that never read all hold the same 20 symbols with
    # batch_ms: one cohort (streaming.cohort). The stalled members' shared frames stop
    # being written, their ticks take the per-tick path, and that ends in 4008.
    stack = stall_stack
    await wait_for_ticks(stack, SYMBOLS[:20])
    stalled = [StalledClient(stack.ws_url, stack.origin, mss=ETHERNET_MSS) for _ in range(10)]
    options = ["--batch-ms", "50", "--symbols-per-client", "20"]
    run, left, closed = await harness_with_stalled(
        stack, tmp_path, "batched", stalled, SYMBOLS[:20], duration=6,
        options=options, batch_ms=50,
    )  # fmt: skip
    codes = [await s.read_to_close() for s in stalled]

    print(
        f"\nbatched p50/p99 {run['latency_ms']['p50']}/{run['latency_ms']['p99']} ms; "
        f"frames {run['throughput'].get('frames_per_s')}/s; delivered "
        f"{run['throughput']['delivered_ratio']}; stalled with ~{left:.0f} s of the window "
        f"left, closed {closed} later, codes {codes}"
    )
    assert codes == [4008] * 10
    assert run["seq"]["gaps"] == run["seq"]["duplicates"] == run["seq"]["out_of_order"] == 0
    assert run["connections"]["closed_early"] == 0
    # Batched: the ticks came in ticks frames, at most one a client per batch_ms (50
    # clients, 20 frames a second each at most; a ramp-time frame may spill over).
    tp = run["throughput"]
    assert tp["batch_frames_per_s"] > 0
    assert tp["frames_per_s"] <= 50 * (1000 / 50) * 1.05


class Web:
    """One of a stack's web servers: its URLs, the connections it holds, its log."""

    def __init__(self, stack, name: str = "web", port: int | None = None) -> None:
        self.stack, self.name = stack, name
        port = stack.port if port is None else port
        self.ws_url = f"ws://127.0.0.1:{port}/ws/prices/"
        self.origin = f"http://127.0.0.1:{port}"

    def held_ports(self) -> set[int]:
        """The client ports of the TCP connections the web process holds."""
        proc = psutil.Process(self.stack.procs[self.name].pid)
        return {c.raddr.port for c in proc.net_connections("tcp") if c.raddr}

    def log(self) -> str:
        return self.stack.log(self.name)


def start_redis(port: int, workdir) -> subprocess.Popen:
    proc = subprocess.Popen(
        redis_server_command(port, str(workdir)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port)
    return proc


class OwnRedis:
    """A Redis server of a stack's own, which a test may kill and start again."""

    def __init__(self, workdir) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = start_redis(self.port, workdir)

    def restart(self) -> None:
        self.proc = start_redis(self.port, self.workdir)

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL: nothing saved, every key and group is gone
        self.proc.wait()


# Keepalive within seconds (a stall past it is 3 s), and the shortest group expiry.
CLOSE_TIMEOUT = 6
QUICK_EXPIRY = {
    "WS_PING_INTERVAL": "1",
    "WS_PING_TIMEOUT": "1",
    "WS_CLOSE_TIMEOUT": str(CLOSE_TIMEOUT),
    "CHANNEL_GROUP_EXPIRY": "4",
    "CHANNEL_GROUP_RENEW_SECONDS": "1",
}


@pytest.fixture(scope="module")
def own_redis_stack(tmp_path_factory):
    """A stack on a Redis of its own, with QUICK_EXPIRY's settings, served by uvicorn on
    its port and by daphne (``stack.daphne``) on another.

    The keepalive tests (one per server), the group-renewal test and the Redis-restart
    test share it, in that order (the file's): the restart, which loses every key, last.
    """
    workdir = tmp_path_factory.mktemp("own-redis")
    redis = OwnRedis(workdir)
    try:
        with real_stack(
            workdir, daphne=True, TICK_RATE="50", REDIS_URL=redis.url, **QUICK_EXPIRY
        ) as stack:
            stack.daphne = Web(stack, "daphne", stack.daphne_port)
            yield stack, redis
    finally:
        redis.kill()


@pytest.mark.parametrize("server", ["uvicorn", "daphne"])
async def test_clients_stalled_past_the_keepalive_see_4008_or_a_dropped_connection(
    own_redis_stack, server
):
    # Issue 19: stalled past the keepalive, a client found 1011 behind its backlog, its
    # 4008 stuck behind uvicorn's wait for a drain that never came, and the server held
    # the connection for as long as the client did not read. The stalled clients keep
    # loopback's segment size, so their kernel buffers are far from full when the
    # keepalive ends them: the keepalive closes them, not the outbox's bounds.
    stack, _ = own_redis_stack
    web = Web(stack) if server == "uvicorn" else stack.daphne
    await wait_for_ticks(web, SYMBOLS)
    readers = [StalledClient(web.ws_url, web.origin) for _ in range(5)]
    never = [StalledClient(web.ws_url, web.origin) for _ in range(5)]
    for s in readers + never:
        await s.open_and_subscribe(SYMBOLS)
    stalled_at = time.monotonic()
    await asyncio.sleep(3)  # the stall: longer than ping interval and timeout together
    read_after = time.monotonic() - stalled_at
    codes = await asyncio.gather(*(s.read_to_close() for s in readers))
    # Those that never read: the server lets go of their connections, bounded in time.
    ports = {s.local_port for s in never}
    deadline = time.monotonic() + 2 + CLOSE_TIMEOUT + 15
    while held := ports & web.held_ports():
        assert time.monotonic() < deadline, f"the server still holds {len(held)} of them"
        await asyncio.sleep(0.2)
    never_codes = [await s.read_to_close(timeout=10) for s in never]
    web_log = web.log()

    print(
        f"\n{server}: read after {read_after:.1f} s: codes {codes}, ended "
        f"{[s.ended for s in readers]} at "
        f"{[round(s.ended_at - stalled_at, 1) for s in readers]} s, "
        f"{[len(s.frames) for s in readers]} frames; never "
        f"read: codes {never_codes}, ended {[s.ended for s in never]}"
    )
    for s, code in zip(readers + never, codes + never_codes, strict=True):
        assert code in (4008, None) and s.ended in ("close", "reset", "eof"), (code, s.ended)
    assert all(s.frames for s in readers)  # their backlog came first
    if server == "uvicorn":
        # uvicorn (our protocol) writes the 4008 right behind the backlog and resets the
        # connection only CLOSE_TIMEOUT after it, so after the connection opened: a reader
        # gets its backlog and the 4008 or, if TCP hands the backlog over slower than that
        # (a 4 KB receive window, whose updates can wait for the sender's zero-window
        # probes: a CI run read 38 to 1,750 of ~2,200 frames by then), the reset, never
        # sooner. Reading at 3 s, all of them got the 4008 in most runs; that is a timing
        # sample, not a guarantee.
        for s, code in zip(readers, codes, strict=True):
            open_for = s.ended_at - s.opened_at
            assert code == 4008 or open_for >= CLOSE_TIMEOUT, (code, s.ended, open_for)
    assert "code 1011" not in web_log


async def test_group_membership_is_renewed_before_it_expires(own_redis_stack):
    stack, _ = own_redis_stack  # groups expire after 4 s unless renewed, every 1 s
    await wait_for_ticks(stack, ["AAPL"])
    client = Healthy(stack, ["AAPL"])
    stop = asyncio.Event()
    task = asyncio.ensure_future(client.run(stop))
    await asyncio.sleep(9)  # more than two expiries
    stop.set()
    await task
    start = client.latencies[0][0]
    seconds = {int(t - start) for t, _ in client.latencies}
    assert set(range(8)) <= seconds
    assert (client.gaps, client.duplicates) == (0, 0)


async def test_after_redis_is_killed_and_restarted_open_and_new_connections_get_ticks(
    own_redis_stack,
):
    stack, redis = own_redis_stack
    await wait_for_ticks(stack, ["BTC-USD", "ETH-USD"])
    clients = [Healthy(stack, ["BTC-USD", "ETH-USD"]) for _ in range(3)]
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(c.run(stop)) for c in clients]
    await until(lambda: all(c.latencies for c in clients), "every client got a tick", 30)
    failures = stack.log("web").count("channel layer receive failed")
    redis.kill()
    # Down until the web server has seen it go (its hub's receive failed), then back.
    await until(
        lambda: stack.log("web").count("channel layer receive failed") > failures,
        "the web server saw Redis go",
        30,
    )
    redis.restart()
    back = time.time()
    await until(
        lambda: all(any(t > back for t, _ in c.latencies) for c in clients),
        "ticks again",
        30,
        fail=False,
    )
    recovered = [min((t for t, _ in c.latencies if t > back), default=None) for c in clients]
    await wait_for_ticks(stack, ["BTC-USD"], timeout=10)  # a new connection
    stop.set()
    await asyncio.gather(*tasks)
    web_log = stack.log("web")
    print(f"\nticks again {[round(t - back, 2) for t in recovered if t]} s after Redis returned")
    shown = ("channel layer", "reset", "stale", "epoch")
    print(*[line for line in web_log.splitlines() if any(w in line for w in shown)], sep="\n")
    assert all(t is not None for t in recovered), web_log[-3000:]
    for c in clients:
        assert c.close_code is None
        # Redis lost everything, so seq started again: each symbol was reset, not gapped,
        # and once: a tick of the old numbering that a retried fan-out carried onto the
        # new server is dropped (tests/test_hub_epochs.py), not taken for a hole.
        assert (c.gaps, c.duplicates) == (0, 0)
        assert c.resets == 2
    assert "channel layer back after" in web_log


async def until(condition, what: str, timeout: float, *, fail: bool = True) -> bool:
    """Wait for ``condition()``; past ``timeout`` seconds fail the test, or return False."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            assert not fail, f"not within {timeout} s: {what}"
            return False
        await asyncio.sleep(0.1)
    return True
