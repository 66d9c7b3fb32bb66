"""Scale-out on one machine, as a simulation of several (docs/deployment.md).

Two web servers (the Procfile's, uvicorn) on two ports behind a real nginx running
deploy/nginx.conf, two Celery workers and one beat, all on one Redis. Clients through
nginx and directly on each web server all resume from the same seq and must receive
every tick of their symbols from there exactly once and in order. nginx passes the
client's address on, so the per-address connection cap counts the real client, not
nginx, and a client cannot choose the address it is counted under.

Delivery counts per path are printed (run with -s); only behaviour is asserted.
"""

import asyncio
import json
import time
import urllib.request
from collections import Counter

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.nginx import Nginx
from tests.realstack import RealStack
from tickerproject.stack import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SYMBOLS = ["BTC-USD", "ETH-USD", "AAPL", "EUR-USD"]
CAP = 5  # WS_MAX_CONNECTIONS_PER_IP of each web server
RUN_SECONDS = 10


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("scaleout")
    stack = RealStack(
        workdir,
        TICK_RATE="10",
        WS_MAX_CONNECTIONS_PER_IP=str(CAP),
        # Trust X-Forwarded-For from nginx's address only (uvicorn --proxy-headers).
        FORWARDED_ALLOW_IPS="127.0.0.1",
        # Seven processes share two cores here: a tick made late by that is not the
        # subject, so no client is closed as slow (4008) for it.
        MAX_TICK_AGE_MS="15000",
    )
    stack.prepare_database()
    second_port = free_port()
    nginx = Nginx(workdir / "nginx", [f"127.0.0.1:{stack.port}", f"127.0.0.1:{second_port}"])
    try:
        stack.start_web("web1")
        stack.start_web("web2", port=second_port)
        stack.start_worker("worker1")
        stack.start_worker("worker2")
        stack.start_beat()
        nginx.start()
        stack.web_urls = {  # type: ignore[attr-defined]
            "web1": f"ws://127.0.0.1:{stack.port}/ws/prices/",
            "web2": f"ws://127.0.0.1:{second_port}/ws/prices/",
        }
        yield stack, nginx
    finally:
        nginx.stop()
        stack.stop_all()


class Client:
    """Resumes every symbol from the same seq and records each tick's seq, in order."""

    def __init__(self, path: str, url: str, origin: str) -> None:
        self.path = path
        self.url = url
        self.origin = origin
        self.seqs: dict[str, list[int]] = {s: [] for s in SYMBOLS}
        self.other: list[dict] = []  # reset, error: none expected
        self.close_code: int | None = None
        self.subscribed = asyncio.Event()

    async def run(self, since: dict[str, int], stop: asyncio.Event):
        # No "epochs": nothing resets the counters during the test.
        command = {"action": "subscribe", "symbols": SYMBOLS, "since": since, "id": 1}
        try:
            async with connect(self.url, origin=self.origin, open_timeout=20) as ws:
                await ws.send(json.dumps(command))
                reader = asyncio.ensure_future(self._read(ws))
                await stop.wait()
                reader.cancel()
        except ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd else 1006

    async def _read(self, ws) -> None:
        try:
            async for frame in ws:
                msg = json.loads(frame)
                if msg["type"] == "tick":
                    self.seqs[msg["symbol"]].append(msg["seq"])
                elif msg["type"] == "ticks":
                    for tick in msg["ticks"]:
                        self.seqs[tick["symbol"]].append(tick["seq"])
                elif msg["type"] == "subscribed":
                    self.subscribed.set()
                else:
                    self.other.append(msg)
        except ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd else 1006

    def last(self, symbol: str) -> int:
        return self.seqs[symbol][-1] if self.seqs[symbol] else 0


async def current_seqs(url: str, origin: str) -> dict[str, int]:
    """Each symbol's newest seq, once every symbol has ticked."""
    deadline = time.monotonic() + 60
    while True:
        async with connect(url, origin=origin, open_timeout=20) as ws:
            await ws.send(json.dumps({"action": "subscribe", "symbols": SYMBOLS, "snapshot": 1}))
            snapshots = {}
            while len(snapshots) < len(SYMBOLS):
                msg = json.loads(await asyncio.wait_for(ws.recv(), 20))
                if msg["type"] == "snapshot":
                    snapshots[msg["symbol"]] = msg
        if all(m["ticks"] for m in snapshots.values()):
            return {s: m["ticks"][-1]["seq"] for s, m in snapshots.items()}
        assert time.monotonic() < deadline, "not every symbol ticked within 60 s"
        await asyncio.sleep(1)


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_http_is_proxied_to_the_web_servers(scaled):
    _, nginx = scaled
    status, body = http_get(f"{nginx.http_url}/api/symbols/BTC-USD/")
    assert status == 200, body[:500]
    assert json.loads(body)["ticker"] == "BTC-USD"
    status, body = http_get(f"{nginx.http_url}/")
    assert status == 200 and b"<html" in body.lower()


async def test_every_client_through_nginx_and_direct_gets_every_tick_once_in_order(scaled):
    stack, nginx = scaled
    origin = nginx.http_url
    since = await current_seqs(nginx.ws_url, origin)
    logged = len(nginx.log("access.log").splitlines())  # the clients' lines come after
    clients = [Client("nginx", nginx.ws_url, origin) for _ in range(4)]
    for name, url in stack.web_urls.items():
        clients += [Client(name, url, origin_of(url)) for _ in range(2)]
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(c.run(since, stop)) for c in clients]
    await asyncio.wait_for(asyncio.gather(*(c.subscribed.wait() for c in clients)), 30)
    await asyncio.sleep(RUN_SECONDS)
    # Every client must reach the newest seq any client has seen, for every symbol.
    target = {s: max(c.last(s) for c in clients) for s in SYMBOLS}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(  # noqa: ASYNC110 - polls the clients
        c.last(s) < target[s] for c in clients for s in SYMBOLS
    ):
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.gather(*tasks)

    counts: dict[str, list[int]] = {}
    for c in clients:
        assert c.close_code is None, (c.path, c.close_code)
        assert c.other == [], (c.path, c.other[:3])
        for s in SYMBOLS:
            upto = [seq for seq in c.seqs[s] if seq <= target[s]]
            # Exactly once, in order: since+1, since+2, ..., target, nothing else.
            assert upto == list(range(since[s] + 1, target[s] + 1)), (c.path, s, upto[:5])
            # Past the target, still in order and gap-free.
            assert c.seqs[s] == list(range(since[s] + 1, since[s] + 1 + len(c.seqs[s])))
        counts.setdefault(c.path, []).append(
            sum(len([q for q in c.seqs[s] if q <= target[s]]) for s in SYMBOLS)
        )
    expected = sum(target[s] - since[s] for s in SYMBOLS)
    assert expected > 0
    spread = await upgraded_per_upstream(nginx, after=logged, count=4)
    print(
        f"\n{len(SYMBOLS)} symbols, seq {since} -> {target}: {expected} ticks per client"
        + "".join(
            f"\n  {path}: {len(n)} clients, {sum(n)} ticks delivered ({', '.join(map(str, n))}),"
            " 0 gaps, 0 duplicates, in order"
            for path, n in counts.items()
        )
        + f"\n  nginx sent its clients to: {dict(spread)}"
    )
    assert all(n == expected for ns in counts.values() for n in ns)
    # nginx balanced its WebSockets over both web servers.
    assert set(spread) == {u.split("//")[1].split("/")[0] for u in stack.web_urls.values()}


async def upgraded_per_upstream(nginx: Nginx, after: int, count: int) -> Counter:
    """WebSockets per web server from nginx's access log past line ``after`` (logged at close)."""
    deadline = time.monotonic() + 10
    while True:
        spread = Counter(
            line.split()[1]
            for line in nginx.log("access.log").splitlines()[after:]
            if "/ws/prices/" in line and " 101 " in line
        )
        if spread.total() >= count or time.monotonic() > deadline:
            return spread
        await asyncio.sleep(0.2)


def origin_of(ws_url: str) -> str:
    return ws_url.replace("ws://", "http://").split("/ws/")[0]


async def open_and_ping(url: str, origin: str, source: str, headers: dict | None = None):
    """A connection from loopback address ``source``: its pong, or the close code."""
    ws = await connect(
        url,
        origin=origin,
        open_timeout=20,
        local_addr=(source, 0),
        additional_headers=headers or {},
    )
    try:
        await ws.send('{"action": "ping", "id": 1}')
        msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
        return ws, msg["type"]
    except ConnectionClosed as exc:
        return ws, exc.rcvd.code if exc.rcvd else 1006


async def test_the_per_address_cap_counts_the_client_behind_nginx_not_nginx(scaled):
    stack, nginx = scaled
    origin = nginx.http_url
    held = []
    try:
        # From 127.0.0.2 through nginx: CAP on each web server, then refused (1013).
        results = []
        for _ in range(2 * CAP + 2):
            ws, result = await open_and_ping(nginx.ws_url, origin, "127.0.0.2")
            held.append(ws)
            results.append(result)
        accepted = results.count("pong")
        assert accepted == 2 * CAP, results
        assert set(results) == {"pong", 1013}, results
        # Another client through the same nginx is not refused: the cap counted
        # 127.0.0.2, not nginx's own 127.0.0.1.
        ws, result = await open_and_ping(nginx.ws_url, origin, "127.0.0.3")
        held.append(ws)
        assert result == "pong"
        # A client cannot pass itself off as another through nginx: its X-Forwarded-For
        # is replaced with its own address.
        forged = {"X-Forwarded-For": "127.0.0.2"}
        ws, result = await open_and_ping(nginx.ws_url, origin, "127.0.0.4", forged)
        held.append(ws)
        assert result == "pong"
        # The web servers believe the header from a trusted address (FORWARDED_ALLOW_IPS,
        # here nginx's 127.0.0.1) whoever sends it, which is why that must name the
        # proxy only and the web servers must not be reachable by clients directly.
        direct = stack.web_urls["web1"]
        ws, result = await open_and_ping(direct, origin_of(direct), "127.0.0.1", forged)
        held.append(ws)
        assert result == 1013
    finally:
        for ws in held:
            await ws.close()
