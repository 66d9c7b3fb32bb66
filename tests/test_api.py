"""The REST API at /api/, through Django's full URL and middleware stack, on real Redis."""

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from markets import publishing
from markets.candles import persist_closed_candles
from markets.models import Symbol
from markets.publishing import TickPublisher
from markets.redis import close_redis_client
from markets.ticks import TickDraft
from markets.universe import DEFAULT_UNIVERSE

T0 = 1_767_607_200_000  # 2026-01-05 10:00:00 UTC


@pytest.fixture
async def api(async_symbols, clean_redis):
    return AsyncClient()


def draft(symbol: str = "BTC-USD", price: float = 100.0, size: float = 1.0) -> TickDraft:
    return TickDraft(symbol, price, price - 0.5, price + 0.5, size)


async def publish_all(price: float = 100.0) -> None:
    """One tick now for every symbol of the default universe."""
    await TickPublisher.unfenced_for_tests().publish(
        [draft(i.ticker, price) for i in DEFAULT_UNIVERSE]
    )


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code and body["message"], body
    return body


# --- /api/symbols/


async def test_symbols_lists_every_active_symbol_with_quote_fields(api):
    await TickPublisher.unfenced_for_tests().publish(
        [draft("BTC-USD", 97000.5), draft("BTC-USD", 97010.0)]
    )
    response = await api.get("/api/symbols/")
    assert response.status_code == 200
    body = response.json()
    assert [s["ticker"] for s in body] == sorted(i.ticker for i in DEFAULT_UNIVERSE)
    btc = next(s for s in body if s["ticker"] == "BTC-USD")
    assert btc["name"] == "Bitcoin" and btc["asset_class"] == "crypto"
    assert (btc["last_price"], btc["bid"], btc["ask"], btc["last_seq"]) == (
        97010.0, 97009.5, 97010.5, 2,
    )  # fmt: skip
    assert btc["session_open"] == 97000.5
    assert btc["change_pct"] == pytest.approx((97010.0 - 97000.5) / 97000.5 * 100)
    assert btc["live"] is True
    assert abs(btc["last_ts"] - time.time() * 1000) < 5_000
    aapl = next(s for s in body if s["ticker"] == "AAPL")
    assert (aapl["last_price"], aapl["change_pct"], aapl["live"]) == (None, None, False)


async def test_symbols_filter_by_asset_class(api):
    for asset_class in ("crypto", "equity", "fx"):
        body = (await api.get("/api/symbols/", {"asset_class": asset_class})).json()
        expected = sorted(i.ticker for i in DEFAULT_UNIVERSE if i.asset_class == asset_class)
        assert [s["ticker"] for s in body] == expected
        assert {s["asset_class"] for s in body} == {asset_class}
    body = assert_error(
        await api.get("/api/symbols/", {"asset_class": "bonds"}), 422, "bad_request"
    )
    assert "asset_class" in body["message"]


async def test_inactive_symbols_are_neither_listed_nor_found(api):
    await Symbol.objects.filter(ticker="MSFT").aupdate(active=False)
    tickers = [s["ticker"] for s in (await api.get("/api/symbols/")).json()]
    assert "MSFT" not in tickers and "AAPL" in tickers
    assert_error(await api.get("/api/symbols/MSFT/"), 404, "unknown_symbol")


async def test_a_symbol_that_ticked_long_ago_is_not_live(api, monkeypatch):
    monkeypatch.setattr(publishing, "now_ms", lambda: int(time.time() * 1000) - 60_000)
    await TickPublisher.unfenced_for_tests().publish([draft("ETH-USD", 3400.0)])
    body = (await api.get("/api/symbols/ETH-USD/")).json()
    assert body["last_price"] == 3400.0 and body["live"] is False


# --- /api/symbols/{symbol}/


async def test_symbol_detail(api):
    await TickPublisher.unfenced_for_tests().publish(
        [draft("EUR-USD", 1.055), draft("EUR-USD", 1.0539)]
    )
    response = await api.get("/api/symbols/EUR-USD/")
    assert response.status_code == 200
    body = response.json()
    assert body["ticker"] == "EUR-USD" and body["tick_size"] == 0.00001
    assert body["last_price"] == 1.0539 and body["live"] is True
    assert body["change_pct"] == pytest.approx((1.0539 - 1.055) / 1.055 * 100)


async def test_symbol_detail_errors(api):
    body = assert_error(await api.get("/api/symbols/NOPE-USD/"), 404, "unknown_symbol")
    assert "NOPE-USD" in body["message"]
    # Not a well-formed ticker at all: rejected before any lookup.
    body = assert_error(await api.get("/api/symbols/btc%20usd/"), 422, "bad_request")
    assert "symbol" in body["message"]
    assert_error(await api.get("/api/symbols/" + "A" * 21 + "/"), 422, "bad_request")


# --- /api/symbols/{symbol}/ticks


async def test_ticks_page_through_history(api):
    await TickPublisher.unfenced_for_tests().publish(
        [draft("AAPL", 230.0 + i / 100) for i in range(25)]
    )
    first = (await api.get("/api/symbols/AAPL/ticks", {"limit": 10})).json()
    assert [t["seq"] for t in first["ticks"]] == list(range(1, 11))
    assert first["has_more"] is True and first["symbol"] == "AAPL"
    assert set(first["ticks"][0]) == {"symbol", "seq", "ts", "price", "bid", "ask", "size"}
    assert first["ticks"][0]["price"] == 230.0
    rest = (await api.get("/api/symbols/AAPL/ticks", {"after_seq": 20, "limit": 10})).json()
    assert [t["seq"] for t in rest["ticks"]] == [21, 22, 23, 24, 25]
    assert rest["has_more"] is False
    exact = (await api.get("/api/symbols/AAPL/ticks", {"after_seq": 15, "limit": 10})).json()
    assert len(exact["ticks"]) == 10 and exact["has_more"] is False
    default = (await api.get("/api/symbols/AAPL/ticks")).json()
    assert len(default["ticks"]) == 25
    empty = (await api.get("/api/symbols/MSFT/ticks")).json()
    assert empty == {"symbol": "MSFT", "ticks": [], "has_more": False}


async def test_ticks_default_limit_and_cap_come_from_settings(api, settings):
    await TickPublisher.unfenced_for_tests().publish([draft("AAPL") for _ in range(120)])
    body = (await api.get("/api/symbols/AAPL/ticks")).json()
    assert len(body["ticks"]) == settings.API_TICKS_DEFAULT_LIMIT == 100
    ok = await api.get("/api/symbols/AAPL/ticks", {"limit": settings.API_TICKS_MAX_LIMIT})
    assert ok.status_code == 200 and len(ok.json()["ticks"]) == 120
    over = await api.get("/api/symbols/AAPL/ticks", {"limit": settings.API_TICKS_MAX_LIMIT + 1})
    assert "limit" in assert_error(over, 422, "bad_request")["message"]


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": -5}, {"limit": "ten"}, {"after_seq": -1}, {"after_seq": "x"}],
)
async def test_ticks_bad_parameters(api, params):
    body = assert_error(await api.get("/api/symbols/AAPL/ticks", params), 422, "bad_request")
    assert next(iter(params)) in body["message"]
    assert body["detail"][0]["loc"][-1] == next(iter(params))


async def test_ticks_of_an_unknown_symbol(api):
    assert_error(await api.get("/api/symbols/ZZZ/ticks"), 404, "unknown_symbol")


# --- /api/symbols/{symbol}/candles


async def publish_at(monkeypatch, points: list[tuple[int, float]], symbol: str = "BTC-USD"):
    clock = {"ms": T0}
    monkeypatch.setattr(publishing, "now_ms", lambda: clock["ms"])
    publisher = TickPublisher.unfenced_for_tests()
    for ms, price in points:
        clock["ms"] = ms
        await publisher.publish([draft(symbol, price, 0.5)])


async def test_candles_merge_persisted_and_live(api, monkeypatch):
    minute = 60_000
    points = [(T0 + m * minute + s * 20_000, 100.0 + m + s) for m in range(5) for s in range(3)]
    await publish_at(monkeypatch, points)
    await sync_to_async(persist_closed_candles)(at_ms=T0 + 3 * minute + 5_000)  # minutes 0-2
    response = await api.get("/api/symbols/BTC-USD/candles", {"interval": "1m"})
    assert response.status_code == 200
    body = response.json()
    assert body["symbol"] == "BTC-USD" and body["interval"] == "1m"
    got = body["candles"]
    assert [c["start"] for c in got] == [T0 + m * minute for m in range(5)]
    assert got[1] == {
        "start": T0 + minute,
        "end": T0 + 2 * minute,
        "open": 101.0,
        "high": 103.0,
        "low": 101.0,
        "close": 103.0,
        "volume": 1.5,
        "ticks": 3,
        "first_seq": 4,
        "last_seq": 6,
        "closed": True,
    }
    five = (await api.get("/api/symbols/BTC-USD/candles", {"interval": "5m"})).json()
    assert [(c["start"], c["ticks"], c["open"], c["close"]) for c in five["candles"]] == [
        (T0, 15, 100.0, 106.0)
    ]


async def test_candles_range_limit_and_open_candle(api, monkeypatch, settings):
    hour = 3_600_000
    now = int(time.time() * 1000)
    if hour - now % hour < 10_000:  # keep the current hour current for the whole test
        await asyncio.sleep((hour - now % hour) / 1000 + 0.1)
        now = int(time.time() * 1000)
    current = now - now % hour
    # Three closed 1h candles, then the current one.
    await publish_at(
        monkeypatch, [(current - 3 * hour + k * hour, 10.0 + k) for k in range(4)], "SOL-USD"
    )
    url = "/api/symbols/SOL-USD/candles"
    got = (await api.get(url, {"interval": "1h"})).json()["candles"]
    assert [c["open"] for c in got] == [10.0, 11.0, 12.0, 13.0]
    assert [c["closed"] for c in got] == [True, True, True, False]
    latest = (await api.get(url, {"interval": "1h", "limit": 2})).json()["candles"]
    assert [c["open"] for c in latest] == [12.0, 13.0]
    ranged = await api.get(
        url, {"interval": "1h", "start": current - 2 * hour, "end": current, "limit": 10}
    )
    assert [c["open"] for c in ranged.json()["candles"]] == [11.0, 12.0]
    first = (await api.get(url, {"interval": "1h", "start": 0, "limit": 1})).json()["candles"]
    assert [c["open"] for c in first] == [10.0]
    # Redis keeps 900 buckets per series: of 1s candles an hour apart, only the newest.
    seconds = (await api.get(url, {"interval": "1s"})).json()["candles"]
    assert [(c["end"] - c["start"], c["open"]) for c in seconds] == [(1000, 13.0)]
    over = {"interval": "1h", "limit": settings.API_CANDLES_MAX_LIMIT + 1}
    assert "limit" in assert_error(await api.get(url, over), 422, "bad_request")["message"]


@pytest.mark.parametrize(
    ("params", "word"),
    [
        ({"interval": "2m"}, "interval"),
        ({"interval": ""}, "interval"),
        ({"start": -1}, "start"),
        ({"end": "yesterday"}, "end"),
        ({"start": 2000, "end": 1000}, "start must be before end"),
        ({"start": 1000, "end": 1000}, "start must be before end"),
        ({"limit": 0}, "limit"),
        ({"start": 10**20}, "start"),
    ],
)
async def test_candles_bad_parameters(api, params, word):
    response = await api.get("/api/symbols/BTC-USD/candles", params)
    assert word in assert_error(response, 422, "bad_request")["message"]


async def test_candles_of_an_unknown_symbol(api):
    assert_error(await api.get("/api/symbols/NOPE/candles"), 404, "unknown_symbol")


# --- /api/health/


async def test_health_is_ok_when_every_active_symbol_ticks(api):
    await publish_all()
    response = await api.get("/api/health/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok" and body["stale"] == []
    assert body["redis"]["ok"] and body["database"]["ok"]
    assert body["redis"]["latency_ms"] >= 0 and body["redis"]["error"] is None
    assert set(body["feed"]) == {i.ticker for i in DEFAULT_UNIVERSE}
    assert all(0 <= age < 5 for age in body["feed"].values())


async def test_health_is_degraded_when_symbols_are_stale(api, monkeypatch, settings):
    await publish_all()
    monkeypatch.setattr(publishing, "now_ms", lambda: int(time.time() * 1000) - 60_000)
    await TickPublisher.unfenced_for_tests().publish(
        [draft("AAPL")]
    )  # its newest tick is a minute old
    await TickPublisher.unfenced_for_tests().publish([draft("NVDA")])
    await Symbol.objects.filter(ticker="XRP-USD").aupdate(active=False)  # not counted
    await sync_to_async(Symbol.objects.create)(
        ticker="NEW-USD", name="Never ticked", asset_class="crypto", quote_currency="USD",
        tick_size="0.01", start_price="1", annual_volatility=0.5,
    )  # fmt: skip
    response = await api.get("/api/health/")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded" and body["redis"]["ok"] and body["database"]["ok"]
    assert body["stale"] == ["AAPL", "NEW-USD", "NVDA"]
    assert body["feed"]["NEW-USD"] is None and 59 < body["feed"]["AAPL"] < 70
    assert "XRP-USD" not in body["feed"]


async def test_health_is_degraded_when_redis_is_down(async_symbols, settings):
    from tests.realstack import free_port

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    await close_redis_client()
    try:
        response = await AsyncClient().get("/api/health/")
    finally:
        await close_redis_client()
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded" and body["database"]["ok"] is True
    assert body["redis"]["ok"] is False and "Error" in body["redis"]["error"]
    assert set(body["stale"]) == {i.ticker for i in DEFAULT_UNIVERSE}


# --- Schema and docs


async def test_openapi_schema_lists_every_endpoint(api):
    response = await api.get("/api/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert set(schema["paths"]) == {
        "/api/symbols/",
        "/api/symbols/{symbol}/",
        "/api/symbols/{symbol}/ticks",
        "/api/symbols/{symbol}/candles",
        "/api/symbols/{symbol}/book",
        "/api/health/",
        "/api/me/",
        "/api/me/watchlist",
        "/api/alerts/",
        "/api/alerts/history",
        "/api/alerts/{alert_id}",
    }
    candles = schema["paths"]["/api/symbols/{symbol}/candles"]["get"]
    params = {p["name"]: p for p in candles["parameters"]}
    assert params["limit"]["schema"]["maximum"] == 1000
    assert set(candles["responses"]) == {"200", "401", "403", "404", "422"}


async def test_docs_page_uses_only_local_assets(api):
    response = await api.get("/api/docs")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in html
    assert "http://" not in html and "https://" not in html  # no CDN
    assert '"validatorUrl": null' in html
