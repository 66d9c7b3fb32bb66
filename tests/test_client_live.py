"""ticker_client over a real stack: server restarts, auth, modes, and the examples.

Real uvicorn, Celery worker, beat and Redis (tests/realstack.py) with WS_REQUIRE_AUTH on,
so every connection authenticates with a token made in the stack's database. The client
runs in this process; the example scripts and the notebook run as their own processes.
Every command the client sends and every frame it receives is checked against the
AsyncAPI document (tests/asyncapi_contract.py).
"""

import asyncio
import csv
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest
from ticker_client import (
    AuthError,
    Connected,
    Disconnected,
    Gap,
    Reset,
    Snapshot,
    Tick,
    TickerClient,
)

from tests.clienthelpers import make_token, revoke_token
from tests.realstack import BASE_DIR, real_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RATE = 20
SYMBOLS = ["BTC-USD", "ETH-USD", "AAPL"]
EXAMPLES = BASE_DIR / "examples"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with real_stack(
        tmp_path_factory.mktemp("clientstack"),
        TICK_RATE=str(RATE),
        WS_REQUIRE_AUTH="1",
        ENTITLEMENT_RECHECK_SECONDS="0.5",
    ) as s:
        yield s


@pytest.fixture(scope="module")
def token(stack) -> str:
    return make_token(stack, "client")[0]


def history(stack, token: str, symbol: str, after_seq: int, upto: int) -> list[dict]:
    """Ticks after_seq < seq <= upto from the REST API (the server's own record)."""
    found: list[dict] = []
    while not found or found[-1]["seq"] < upto:
        request = urllib.request.Request(
            f"{stack.http_url}/api/symbols/{symbol}/ticks?after_seq={after_seq}&limit=1000",
            headers={"Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            page = json.load(response)["ticks"]
        assert page, f"history of {symbol} ends before {upto}"
        found += page
        after_seq = page[-1]["seq"]
    return [t for t in found if t["seq"] <= upto]


class Reader:
    """Reads a client's events in a task; per symbol, the seqs of the ticks yielded."""

    def __init__(self, client: TickerClient) -> None:
        self.client = client
        self.ticks: dict[str, list[Tick]] = defaultdict(list)
        self.snapshot_last: dict[str, int] = {}
        self.events: list[object] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for event in self.client.events():
            if isinstance(event, Tick):
                self.ticks[event.symbol].append(event)
            else:
                self.events.append(event)
                if isinstance(event, Snapshot) and event.ticks:
                    self.snapshot_last.setdefault(event.symbol, event.ticks[-1].seq)

    def count(self, symbol: str) -> int:
        return len(self.ticks[symbol])

    async def wait_for(self, more: int, timeout: float = 60.0) -> None:
        """Until every symbol has ``more`` ticks beyond what it has now."""
        goal = {s: self.count(s) + more for s in SYMBOLS}
        async with asyncio.timeout(timeout):
            while any(self.count(s) < goal[s] for s in SYMBOLS):
                if self.task.done():
                    self.task.result()
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass


async def test_every_tick_is_yielded_exactly_once_in_order_across_asgi_server_restarts(
    stack, token
):
    async with TickerClient(stack.ws_url, token=token, base_delay=0.2, max_delay=2.0) as client:
        reader = Reader(client)
        # "latest" first, so a busy machine cannot close it as a slow consumer while the
        # stack warms up; until every symbol has history.
        await client.subscribe(SYMBOLS, snapshot=1, mode="latest", timeout=30)
        async with asyncio.timeout(30):
            while len(reader.snapshot_last) < len(SYMBOLS):
                await client.unsubscribe(SYMBOLS)
                await client.subscribe(SYMBOLS, snapshot=1, mode="latest", timeout=30)
                await asyncio.sleep(0.2)
        await client.unsubscribe(SYMBOLS)
        reader.ticks.clear()
        reader.snapshot_last.clear()
        result = await client.subscribe(SYMBOLS, snapshot=5, timeout=30)
        assert set(result.subscribed) == set(SYMBOLS) and result.refused == {}
        await reader.wait_for(20)
        downtime = {}
        for sig in (signal.SIGTERM, signal.SIGKILL):
            # Stopping and starting block; the client's loop keeps running meanwhile.
            stopped_at = time.monotonic()
            await asyncio.to_thread(stack.stop, "web", sig)
            await asyncio.sleep(1.0)  # ticks go on being published while no server runs
            await asyncio.to_thread(stack.start_web)
            downtime[sig.name] = time.monotonic() - stopped_at
            await reader.wait_for(2 * RATE)
        await reader.stop()
        stats = client.stats

    total = duplicates = 0
    for symbol in SYMBOLS:
        seqs = [t.seq for t in reader.ticks[symbol]]
        first = reader.snapshot_last.get(symbol, seqs[0] - 1) + 1
        # Every tick exactly once, in order, from the one after the snapshot on.
        assert seqs == list(range(first, first + len(seqs))), (
            symbol,
            [
                (
                    e
                    if not isinstance(e, Snapshot)
                    else (e.symbol, e.epoch, [t.seq for t in e.ticks])
                )
                for e in reader.events
            ],
        )
        duplicates += len(seqs) - len(set(seqs))
        total += len(seqs)
        # And they are the server's ticks: the same as its history says.
        recorded = history(stack, token, symbol, first - 1, seqs[-1])
        assert [(t["seq"], t["price"], t["ts"]) for t in recorded] == [
            (t.seq, t.price, t.ts) for t in reader.ticks[symbol]
        ]
    assert not [e for e in reader.events if isinstance(e, Gap | Reset)]
    assert stats.gaps == 0 and stats.resets == 0
    assert stats.reconnects >= 2
    disconnects = [e for e in reader.events if isinstance(e, Disconnected)]
    assert [e for e in reader.events if isinstance(e, Connected)][-1].reconnects == stats.reconnects
    print(
        "\nCLIENT RESUME across 2 ASGI server restarts (SIGTERM, SIGKILL; down "
        + ", ".join(f"{k} {v:.1f} s" for k, v in downtime.items())
        + f") at TICK_RATE={RATE} x {len(SYMBOLS)} symbols: {total} ticks yielded, gaps 0, "
        f"duplicates yielded {duplicates} (dropped by the client: {stats.duplicates}), "
        f"reconnects {stats.reconnects} after {len(disconnects)} drops, close codes "
        f"{dict(stats.close_codes)}"
    )


async def test_a_bad_token_raises_auth_error_without_a_retry_loop(stack):
    client = TickerClient(stack.ws_url, token="tk_not-a-real-token", base_delay=0.05)
    async with client:
        started = time.monotonic()
        with pytest.raises(AuthError) as raised:
            async for _ in client.events():
                pass
        assert raised.value.code == 4401
        assert time.monotonic() - started < 10
        await asyncio.sleep(0.3)
        assert client.stats.close_codes == {4401: 1}  # one attempt, no retry
        assert client.stats.reconnects == 0


async def test_no_token_when_the_server_requires_one_is_an_auth_error(stack):
    async with TickerClient(stack.ws_url) as client:
        with pytest.raises(AuthError) as raised:
            await client.subscribe(["BTC-USD"], timeout=20)
        assert raised.value.code == 4401


async def test_the_auth_command_and_a_revoked_token_closing_with_4403(stack):
    secret, pk = make_token(stack, "revocable")
    async with TickerClient(stack.ws_url, token=secret, auth="command") as client:
        await client.subscribe(["ETH-USD"], mode="latest", snapshot=0)
        ticks = client.ticks()
        assert (await anext(ticks)).symbol == "ETH-USD"
        await asyncio.to_thread(revoke_token, stack, pk)
        with pytest.raises(AuthError) as raised:
            async with asyncio.timeout(20):
                async for _ in ticks:
                    pass
        assert raised.value.code == 4403


async def test_modes_batches_refusals_and_commands(stack, token):
    async with TickerClient(stack.ws_url, token=token, batch_ms=50) as client:
        result = await client.subscribe(["BTC-USD", "NOPE"], snapshot=0)
        assert result.subscribed == ("BTC-USD",) and result.refused == {"NOPE": "unknown_symbol"}
        await client.subscribe(["ETH-USD"], mode="latest", max_rate=2, snapshot=0)
        assert await client.list_subscriptions() == ["BTC-USD", "ETH-USD"]
        assert 0 < await client.ping() < 5
        per_symbol: dict[str, list[Tick]] = defaultdict(list)
        async with asyncio.timeout(30):
            async for tick in client:
                per_symbol[tick.symbol].append(tick)
                if len(per_symbol["ETH-USD"]) >= 4 and len(per_symbol["BTC-USD"]) >= 40:
                    break
        btc = [t.seq for t in per_symbol["BTC-USD"]]
        assert btc == list(range(btc[0], btc[0] + len(btc)))
        eth = per_symbol["ETH-USD"]
        # latest at 2/s: announced jumps only (seq = previous + skipped + 1), no gaps.
        for before, after in itertools.pairwise(eth):
            assert after.seq == before.seq + after.skipped + 1
        assert client.stats.gaps == 0 and client.stats.skipped > 0
        await client.unsubscribe(["BTC-USD"])
        assert client.symbols == ["ETH-USD"]
        assert await client.list_subscriptions() == ["ETH-USD"]


# --- the examples, as their own processes ------------------------------------------


def run_example(stack, token: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "TICKER_WS_URL": stack.ws_url, "TICKER_TOKEN": token}
    return subprocess.run(
        [sys.executable, *args],
        env=env,
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_print_ticks_example(stack, token):
    done = run_example(stack, token, str(EXAMPLES / "print_ticks.py"), "BTC-USD", "--count", "15")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 15 and all("BTC-USD" in line for line in lines)
    seqs = [int(line.split("#")[1].split()[0]) for line in lines]
    assert seqs == list(range(seqs[0], seqs[0] + 15))
    assert "15 ticks printed" in done.stderr


def test_the_csv_recording_example_writes_what_the_replay_feed_reads(stack, token, tmp_path):
    from feeds.sources.replay import Row, detect_format, read_rows

    out = tmp_path / "recording.csv"
    done = run_example(
        stack, token, str(EXAMPLES / "record_csv.py"), "BTC-USD", "ETH-USD",
        "--out", str(out), "--count", "100",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with out.open() as f:
        records = list(csv.DictReader(f))
    assert list(records[0]) == ["ts", "symbol", "price", "size", "bid", "ask"]
    assert len(records) == 100
    assert {r["symbol"] for r in records} == {"BTC-USD", "ETH-USD"}, done.stderr
    assert detect_format(out) == "csv"
    rows = [row for _, row in read_rows(out, "csv")]
    assert len(rows) == 100 and all(isinstance(r, Row) for r in rows)
    first = rows[0]
    assert first.symbol == records[0]["symbol"] and first.price == float(records[0]["price"])
    assert first.bid is not None and first.ask is not None and first.ts_ms == int(records[0]["ts"])


def test_the_live_chart_notebook_runs_headless(stack, token, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("TICKER_WS_URL", stack.ws_url)
    monkeypatch.setenv("TICKER_TOKEN", token)
    monkeypatch.setenv("TICKER_MAX_TICKS", "30")
    notebook = nbformat.read(EXAMPLES / "live_chart.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(EXAMPLES)}},
    )
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "30 live ticks drawn" in text, text
    widgets = [
        o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert widgets, "the FigureWidget was not displayed"
    state = notebook.metadata.get("widgets", {}).get(
        "application/vnd.jupyter.widget-state+json", {}
    )
    assert state.get("state"), "no widget state was recorded"


def test_the_examples_import_no_django():
    for path in [*EXAMPLES.glob("*.py"), *Path(BASE_DIR / "client" / "ticker_client").glob("*.py")]:
        assert "django" not in path.read_text().lower(), path
