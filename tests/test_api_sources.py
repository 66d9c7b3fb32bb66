"""/api/symbols/ reports each symbol's feed source and the state its producer wrote.

The states come from the status hashes the feed loop itself writes (feeds.services,
flush_status), on real Redis: a real feed runs here with a simulated source, a coinbase
source pointed at a closed port, a replay that reaches the end of its file and a replay
of a file that does not exist.
"""

import asyncio
import socket
import threading
import time

import pytest
from django.test import AsyncClient

from feeds.services import run_feed
from markets import keys, quotes
from markets.models import Symbol
from markets.redis import shard_groups
from tests.feeds_helpers import stop_feeds

pytestmark = pytest.mark.usefixtures("async_symbols", "clean_redis")

SAMPLE = "feeds/samples/btc-usd.csv"


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound once by us, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def set_source(ticker: str, source: str, **options) -> None:
    await Symbol.objects.filter(ticker=ticker).aupdate(source=source, source_options=options)


async def listed(api) -> dict[str, dict]:
    response = await api.get("/api/symbols/")
    assert response.status_code == 200, response.content
    return {s["ticker"]: s for s in response.json()}


async def wait_until(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


class Feed:
    """A real feed loop (standby: it takes every free symbol) in this event loop."""

    def __init__(self) -> None:
        self.stop_event = threading.Event()
        self.task = asyncio.get_running_loop().create_task(
            run_feed(stop=self.stop_event, standby=True, tick_rate=2)
        )

    async def stop(self) -> None:
        await stop_feeds(self.stop_event, [self.task])


@pytest.fixture
async def feed():
    running = Feed()
    yield running
    await running.stop()


async def test_sources_and_states_before_any_feed_runs():
    body = await listed(AsyncClient())
    assert {s["source"] for s in body.values()} == {"simulated"}
    # No producer has reported: nobody runs these sources.
    assert {(s["source_state"], s["source_error"]) for s in body.values()} == {("unknown", None)}
    one = (await AsyncClient().get("/api/symbols/BTC-USD/")).json()
    assert (one["source"], one["source_state"], one["source_error"]) == (
        "simulated", "unknown", None,
    )  # fmt: skip


async def test_each_symbol_reports_its_source_and_the_state_its_feed_wrote(feed, settings):
    settings.COINBASE_WS_URL = f"ws://127.0.0.1:{closed_port()}"
    api = AsyncClient()
    await set_source("ETH-USD", "coinbase")
    await set_source("SOL-USD", "replay", file=SAMPLE, speed=1_000_000, symbol="BTC-USD")
    await set_source("XRP-USD", "replay", file="feeds/samples/no-such-file.csv")
    expected = {
        "BTC-USD": ("simulated", "up"),
        "ETH-USD": ("coinbase", "down"),
        "SOL-USD": ("replay", "ended"),
        "XRP-USD": ("replay", "down"),
    }

    async def reported():
        body = await listed(api)
        got = {t: (body[t]["source"], body[t]["source_state"]) for t in expected}
        return body if got == expected else None

    body = await wait_until(reported, what=f"the states {expected}")
    assert body["BTC-USD"]["source_error"] is None and body["BTC-USD"]["live"] is True
    assert "connect" in body["ETH-USD"]["source_error"], body["ETH-USD"]
    assert "no-such-file.csv" in body["XRP-USD"]["source_error"], body["XRP-USD"]
    assert body["SOL-USD"]["last_price"] is not None  # it played its rows, then ended
    # Every other symbol is simulated and up.
    others = {t: (s["source"], s["source_state"]) for t, s in body.items() if t not in expected}
    assert set(others.values()) == {("simulated", "up")}, others

    # The same judgement as /api/health/ (markets.quotes.source_block), from the same hash.
    status = await quotes.source_status(symbols=["ETH-USD"])
    assert status["ETH-USD"]["state"] == "down" and status["ETH-USD"]["source"] == "coinbase"
    assert quotes.source_block("coinbase", status["ETH-USD"])["state"] == "down"
    one = (await api.get("/api/symbols/ETH-USD/")).json()
    assert (one["source"], one["source_state"]) == ("coinbase", "down")
    assert one["source_error"].startswith("connect:")


async def test_a_report_of_another_source_or_an_old_one_is_unknown(feed):
    api = AsyncClient()
    for ticker in ("LTC-USD", "AAPL"):
        await wait_until(lambda t=ticker: _state(api, t, "up"), what=f"{ticker} to be up")
    await feed.stop()  # its last reports stay in Redis, no longer renewed
    assert await _state(api, "LTC-USD", "up")

    # A source changed while no producer applies it: the report is of the old one.
    await set_source("LTC-USD", "replay", file=SAMPLE, loop=True, symbol="BTC-USD")
    one = (await api.get("/api/symbols/LTC-USD/")).json()
    assert (one["source"], one["source_state"], one["source_error"]) == (
        "replay", "unknown", None,
    )  # fmt: skip

    # A report more than 5 s old: its producer stopped (dated back rather than waited for).
    [(client, _)] = shard_groups(["AAPL"])
    await client.hset(
        keys.source_status_key("AAPL"), "updated_ms", str(int(time.time() * 1000) - 6_000)
    )
    one = (await api.get("/api/symbols/AAPL/")).json()
    assert (one["source"], one["source_state"], one["source_error"]) == (
        "simulated", "unknown", None,
    )  # fmt: skip


async def _state(api, ticker: str, state: str) -> bool:
    return (await api.get(f"/api/symbols/{ticker}/")).json()["source_state"] == state


async def test_the_schema_documents_the_source_fields():
    schema = (await AsyncClient().get("/api/openapi.json")).json()
    fields = schema["components"]["schemas"]["SymbolOut"]["properties"]
    assert fields["source"]["enum"] == ["simulated", "replay", "coinbase", "binance"]
    assert fields["source_state"]["enum"] == ["up", "starting", "down", "ended", "unknown"]
    for name in ("source", "source_state", "source_error"):
        assert fields[name]["description"], name
    required = schema["components"]["schemas"]["SymbolOut"]["required"]
    assert {"source", "source_state", "source_error"} <= set(required)
