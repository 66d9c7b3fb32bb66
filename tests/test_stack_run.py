"""`make run`'s launcher: the whole stack from one command, stopped by one Ctrl-C."""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from websockets.asyncio.client import connect

from tests.realstack import BASE_DIR, free_port, wait_for_port
from tickerproject.stack import find_redis_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_an_embedded_redis_binary_is_always_available():
    path = find_redis_server()
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=True)
    assert "Redis server" in out.stdout


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has exited all the same.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def more_than_100_connections(url: str, origin: str) -> dict:
    """`make run` raises the per-address cap (RUN_DEFAULTS): the 101st from 127.0.0.1 works."""
    held = []
    try:
        for _ in range(101):
            held.append(await connect(url, origin=origin, open_timeout=10))
        await held[-1].send('{"action": "ping", "id": 101}')
        return json.loads(await asyncio.wait_for(held[-1].recv(), 10))
    finally:
        for ws in held:
            await ws.close()


async def first_tick(url: str, origin: str) -> dict:
    async with connect(url, origin=origin) as ws:
        await ws.send(json.dumps({"action": "subscribe", "symbols": ["EUR-USD"]}))
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if msg["type"] == "tick":
                return msg


def test_run_serves_ticks_with_embedded_redis_and_ctrl_c_stops_every_child(tmp_path):
    port = free_port()
    scratch = tmp_path / "tmp"  # where the embedded Redis makes its directory
    scratch.mkdir()
    env = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "TICKER_VAR_DIR": str(tmp_path),
        "FEED_SUPERVISE_SECONDS": "1",
        "TICK_RATE": "5",
        "TMPDIR": str(scratch),
    }
    env.pop("REDIS_URL", None)  # the launcher must bring its own Redis
    env.pop("WS_MAX_CONNECTIONS_PER_IP", None)  # and its own cap
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tickerproject.stack", "run"],
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, timeout=60)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert response.status == 200
        tick = asyncio.run(
            first_tick(f"ws://127.0.0.1:{port}/ws/prices/", f"http://127.0.0.1:{port}")
        )
        assert tick["symbol"] == "EUR-USD" and tick["seq"] >= 1
        pong = asyncio.run(
            more_than_100_connections(
                f"ws://127.0.0.1:{port}/ws/prices/", f"http://127.0.0.1:{port}"
            )
        )
        assert pong["type"] == "pong"
        assert any(p.name.startswith("ticker-redis-") for p in scratch.iterdir())
        text = log_path.read_text()
        assert "embedded redis on 127.0.0.1:" in text
        pids = {name: int(pid) for name, pid in re.findall(r"(\w+) started \(pid=(\d+)\)", text)}
        assert set(pids) == {"redis", "web", "worker", "beat"}, text
    finally:
        # What Ctrl-C does in a terminal: SIGINT to the launcher.
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids.values()):
        time.sleep(0.2)
    assert not [name for name, pid in pids.items() if pid_alive(pid)], log_path.read_text()[-3000:]
    # The embedded Redis's directory went with it.
    assert not [p.name for p in scratch.iterdir() if p.name.startswith("ticker-redis-")]
