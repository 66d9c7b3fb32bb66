"""Protocol tests for PriceStreamConsumer over the real ASGI app and the Redis channel layer."""

import asyncio
import json
from unittest import mock

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import override_settings

from markets import keys
from markets.publishing import TickPublisher
from markets.redis import redis_client
from markets.ticks import TickDraft
from tickerproject.asgi import application

pytestmark = pytest.mark.usefixtures("async_symbols", "clean_redis", "close_hub")

ORIGIN = (b"origin", b"http://127.0.0.1:8000")
# The server's own origin is the Host the handshake names (streaming/origin.py).
HOST = (b"host", b"127.0.0.1:8000")


def draft(symbol: str = "BTC-USD", price: float = 100.0) -> TickDraft:
    return TickDraft(symbol, price, price - 0.5, price + 0.5, 0.25)


async def publish(*drafts: TickDraft) -> list:
    return await TickPublisher.unfenced_for_tests().publish(list(drafts))


class Client:
    """A WebsocketCommunicator with JSON helpers."""

    def __init__(self, headers=(ORIGIN, HOST)) -> None:
        self.comm = WebsocketCommunicator(application, "/ws/prices/", headers=list(headers))

    async def __aenter__(self) -> "Client":
        connected, _ = await self.comm.connect()
        assert connected
        return self

    async def __aexit__(self, *exc) -> None:
        await self.comm.disconnect()

    async def send(self, payload) -> None:
        await self.comm.send_to(text_data=json.dumps(payload))

    async def recv(self, timeout: float = 3) -> dict:
        return json.loads(await self.comm.receive_from(timeout))

    async def nothing(self, timeout: float = 0.3) -> bool:
        return await self.comm.receive_nothing(timeout)

    async def subscribe(self, *symbols: str, **extra) -> dict:
        await self.send({"action": "subscribe", "symbols": list(symbols), **extra})
        return await self.recv()

    async def error(self, payload, code: str) -> dict:
        if isinstance(payload, str):
            await self.comm.send_to(text_data=payload)
        else:
            await self.send(payload)
        msg = await self.recv()
        assert msg["type"] == "error", msg
        assert msg["code"] == code, msg
        assert msg["message"]
        return msg

    async def assert_alive(self) -> None:
        await self.send({"action": "ping", "id": "alive"})
        assert (await self.recv())["type"] == "pong"


async def test_subscribe_answers_and_sends_a_snapshot_per_new_symbol():
    async with Client() as c:
        await c.send({"action": "subscribe", "symbols": ["BTC-USD", "AAPL"], "id": 1})
        assert await c.recv() == {"type": "subscribed", "id": 1, "symbols": ["BTC-USD", "AAPL"]}
        snaps = [await c.recv(), await c.recv()]
        assert [(s["type"], s["symbol"], s["ticks"]) for s in snaps] == [
            ("snapshot", "BTC-USD", []),
            ("snapshot", "AAPL", []),
        ]
        # Subscribing again is harmless: answered, but no second snapshot.
        again = await c.subscribe("BTC-USD", id=2)
        assert again == {"type": "subscribed", "id": 2, "symbols": ["BTC-USD"]}
        assert await c.nothing()
        await c.send({"action": "list", "id": 3})
        assert await c.recv() == {
            "type": "subscriptions",
            "id": 3,
            "symbols": ["AAPL", "BTC-USD"],
            "streams": {"AAPL": ["ticks"], "BTC-USD": ["ticks"]},
            "depth": {},
        }


async def test_an_idle_connection_holds_one_task_its_own():
    # channels' await_many_dispatch ran each receive in a task of its own: two a
    # connection, with their contexts and waits (benchmarks/RESULTS.md, round 11).
    async with Client() as first:
        await first.assert_alive()  # what a process starts once (the guard) is running
        before = len(asyncio.all_tasks())
        clients = [Client() for _ in range(5)]
        for c in clients:
            await c.__aenter__()
        try:
            for c in clients:
                await c.assert_alive()
            assert len(asyncio.all_tasks()) - before == 5  # the communicators' own
        finally:
            for c in clients:
                await c.__aexit__()


async def test_ping_answers_pong_with_epoch_ms_and_echoes_id():
    from markets.publishing import now_ms

    async with Client() as c:
        before = now_ms()
        await c.send({"action": "ping", "id": 4})
        pong = await c.recv()
        assert pong["type"] == "pong" and pong["id"] == 4
        assert before <= pong["ts"] <= now_ms()
        await c.send({"action": "ping"})
        assert (await c.recv())["id"] is None


async def test_known_symbols_subscribe_and_unknown_ones_get_an_error():
    async with Client() as c:
        await c.send({"action": "subscribe", "symbols": ["BTC-USD", "NOPE", "ZZZ"], "id": 7})
        assert await c.recv() == {"type": "subscribed", "id": 7, "symbols": ["BTC-USD"]}
        assert (await c.recv())["type"] == "snapshot"
        err = await c.recv()
        assert err["code"] == "unknown_symbol" and err["id"] == 7
        assert err["symbols"] == ["NOPE", "ZZZ"]
        # Only unknown: the error alone, nothing subscribed.
        await c.error({"action": "subscribe", "symbols": ["NOPE"], "id": 8}, "unknown_symbol")
        await c.send({"action": "list"})
        assert (await c.recv())["symbols"] == ["BTC-USD"]


async def test_ticks_of_subscribed_symbols_arrive_and_stop_after_unsubscribe():
    async with Client() as c:
        await c.subscribe("BTC-USD", "ETH-USD")
        await c.recv(), await c.recv()
        await publish(draft("BTC-USD", 97000.5), draft("AAPL", 230.0))
        tick = await c.recv()
        assert tick == {
            "type": "tick",
            "symbol": "BTC-USD",
            "seq": 1,
            "ts": tick["ts"],
            "price": 97000.5,
            "bid": 97000.0,
            "ask": 97001.0,
            "size": 0.25,
        }
        assert isinstance(tick["ts"], int)
        assert await c.nothing()  # AAPL was never subscribed
        await c.send({"action": "unsubscribe", "symbols": ["BTC-USD"], "id": 2})
        assert await c.recv() == {"type": "unsubscribed", "id": 2, "symbols": ["BTC-USD"]}
        await publish(draft("BTC-USD"), draft("ETH-USD"))
        assert (await c.recv())["symbol"] == "ETH-USD"
        assert await c.nothing()


async def test_snapshot_holds_recent_history_and_live_ticks_continue_after_it():
    for i in range(5):
        await publish(draft("BTC-USD", 100.0 + i))
    async with Client() as c:
        await c.subscribe("BTC-USD")
        snap = await c.recv()
        assert snap["type"] == "snapshot" and snap["epoch"]
        assert [t["seq"] for t in snap["ticks"]] == [1, 2, 3, 4, 5]
        assert [t["price"] for t in snap["ticks"]] == [100.0, 101.0, 102.0, 103.0, 104.0]
        await publish(draft("BTC-USD"))
        assert (await c.recv())["seq"] == 6


async def test_resume_replays_every_tick_after_since_without_a_snapshot():
    for _ in range(5):
        await publish(draft("BTC-USD"))
    async with Client() as c:
        await c.subscribe("BTC-USD", since={"BTC-USD": 2})
        assert [(await c.recv())["seq"] for _ in range(3)] == [3, 4, 5]
        await publish(draft("BTC-USD"))
        assert (await c.recv())["seq"] == 6
        assert await c.nothing()


async def test_resume_past_truncated_history_sends_reset_then_snapshot():
    for _ in range(6):
        await publish(draft("ETH-USD"))
    await redis_client().xtrim(keys.history_key("ETH-USD"), minid="4-0", approximate=False)
    async with Client() as c:
        await c.subscribe("ETH-USD", since={"ETH-USD": 1})
        assert await c.recv() == {
            "type": "reset",
            "symbol": "ETH-USD",
            "reason": "history_truncated",
        }
        snap = await c.recv()
        assert [t["seq"] for t in snap["ticks"]] == [4, 5, 6]


async def test_resume_after_the_seq_counter_was_reset_sends_reset_with_its_reason():
    for _ in range(3):
        await publish(draft("AAPL"))
    async with Client() as c:
        await c.subscribe("AAPL")
        epoch = (await c.recv())["epoch"]
    # Redis lost the counter: numbering starts over in a new epoch.
    await redis_client().delete(keys.seq_key("AAPL"))
    await publish(draft("AAPL"))
    async with Client() as c:
        await c.subscribe("AAPL", since={"AAPL": 3}, epochs={"AAPL": epoch})
        assert await c.recv() == {"type": "reset", "symbol": "AAPL", "reason": "epoch_changed"}
        snap = await c.recv()
        assert snap["epoch"] != epoch
        assert [t["seq"] for t in snap["ticks"]] == [1]
    # Without epochs, a since beyond the counter is detected too.
    async with Client() as c:
        await c.subscribe("AAPL", since={"AAPL": 3})
        assert (await c.recv())["reason"] == "epoch_changed"


async def test_the_empty_epoch_of_a_snapshot_before_the_first_tick_resumes_without_reset():
    async with Client() as c:
        await c.subscribe("AAPL")
        snap = await c.recv()
        assert (snap["epoch"], snap["ticks"]) == ("", [])
        await publish(draft("AAPL"), draft("AAPL"))
        assert [(await c.recv())["seq"] for _ in range(2)] == [1, 2]
    await publish(draft("AAPL"))
    # The client resumes with the epoch it was given; the numbering it saw start is the
    # current one, so it gets the missed tick, not a reset.
    async with Client() as c:
        await c.subscribe("AAPL", since={"AAPL": 2}, epochs={"AAPL": ""})
        assert (await c.recv())["seq"] == 3


async def test_batch_ms_groups_ticks_into_one_frame():
    async with Client() as c:
        await c.subscribe("BTC-USD", "ETH-USD", batch_ms=100)
        await c.recv(), await c.recv()
        await publish(draft("BTC-USD"), draft("ETH-USD"))
        await publish(draft("BTC-USD"))
        frame = await c.recv()
        assert frame["type"] == "ticks"
        assert [(t["symbol"], t["seq"]) for t in frame["ticks"]] == [
            ("BTC-USD", 1),
            ("ETH-USD", 1),
            ("BTC-USD", 2),
        ]


async def test_a_tick_the_channel_layer_lost_is_filled_from_history():
    async with Client() as c:
        await c.subscribe("BTC-USD")
        await c.recv()
        await publish(draft("BTC-USD"))
        assert (await c.recv())["seq"] == 1
        quiet = TickPublisher.unfenced_for_tests()
        quiet._layer = mock.AsyncMock()  # group_send goes nowhere
        await quiet.publish([draft("BTC-USD")])
        assert await c.nothing()
        await publish(draft("BTC-USD"))
        assert [(await c.recv())["seq"] for _ in range(2)] == [2, 3]


async def test_no_message_costs_a_database_hop_and_symbols_are_read_once_per_ttl():
    from streaming import known

    with (
        mock.patch(
            "channels.consumer.aclose_old_connections", new_callable=mock.AsyncMock
        ) as cleanup,
        mock.patch.object(known, "all_active_tickers", wraps=known.all_active_tickers) as read,
    ):
        async with Client() as c:
            for symbol in ("BTC-USD", "ETH-USD", "AAPL"):
                await c.subscribe(symbol)
                await c.recv()
            await c.assert_alive()
            await publish(draft("BTC-USD"))
            assert (await c.recv())["type"] == "tick"
    assert cleanup.await_count == 0
    assert read.call_count == 1  # three subscribes, one read within SYMBOLS_CACHE_SECONDS


async def test_a_symbol_deactivated_in_the_database_is_refused_once_the_cache_expires():
    from markets.models import Symbol
    from streaming.known import known_symbols

    async with Client() as c:
        await c.subscribe("MSFT")
        await c.recv()
        await Symbol.objects.filter(ticker="AAPL").aupdate(active=False)
        known_symbols()._read_at = float("-inf")  # as if SYMBOLS_CACHE_SECONDS passed
        await c.error({"action": "subscribe", "symbols": ["AAPL"]}, "unknown_symbol")


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ("{not json", "bad_json"),
        ("   ", "bad_json"),
        ("[1, 2]", "bad_request"),
        ('"subscribe"', "bad_request"),
        ({"symbols": ["BTC-USD"]}, "bad_request"),
        ({"action": 5}, "bad_request"),
        ({"action": "subscribe"}, "bad_request"),
        ({"action": "subscribe", "symbols": []}, "bad_request"),
        ({"action": "subscribe", "symbols": "BTC-USD"}, "bad_request"),
        ({"action": "subscribe", "symbols": ["btc-usd"]}, "bad_request"),
        ({"action": "subscribe", "symbols": ["ticks.*"]}, "bad_request"),
        ({"action": "subscribe", "symbols": ["A" * 21]}, "bad_request"),
        ({"action": "subscribe", "symbols": ["BTC USD"]}, "bad_request"),
        ({"action": "subscribe", "symbols": ["../../x"]}, "bad_request"),
        ({"action": "subscribe", "symbols": [{"$ne": 1}]}, "bad_request"),
        ({"action": "unsubscribe", "symbols": [1]}, "bad_request"),
        ({"action": "ping", "id": {"x": 1}}, "bad_request"),
        ({"action": "ping", "id": True}, "bad_request"),
        ({"action": "subscribe", "symbols": ["AAPL"], "since": {"MSFT": 1}}, "bad_request"),
        ({"action": "subscribe", "symbols": ["AAPL"], "since": {"AAPL": -1}}, "bad_request"),
        ({"action": "subscribe", "symbols": ["AAPL"], "since": [1]}, "bad_request"),
        ({"action": "subscribe", "symbols": ["AAPL"], "epochs": {"AAPL": 5}}, "bad_request"),
        ({"action": "subscribe", "symbols": ["AAPL"], "batch_ms": 5000}, "bad_request"),
        ({"action": "subscribe", "symbols": ["AAPL"], "batch_ms": "50"}, "bad_request"),
        ({"action": "subscribe", "symbols": ["AAPL"], "since": {"AAPL": 2**63}}, "bad_request"),
        ({"action": "subscribe", "symbols": ["AAPL"], "mode": "fast"}, "bad_request"),
        ({"action": "subscribe", "symbols": ["AAPL"], "max_rate": 5}, "bad_request"),
        (
            {"action": "subscribe", "symbols": ["AAPL"], "mode": "latest", "max_rate": 0},
            "bad_request",
        ),
        (
            {"action": "subscribe", "symbols": ["AAPL"], "mode": "latest", "max_rate": "1"},
            "bad_request",
        ),
        ({"action": "subscribe", "symbols": ["AAPL"], "snapshot": 301}, "bad_request"),
        ({"action": "subscribe", "symbols": ["AAPL"], "snapshot": -1}, "bad_request"),
        ({"action": "subscribe", "symbols": ["AAPL"], "snapshot": True}, "bad_request"),
        ("[" * 100_000, "message_too_large"),
        ("[" * 5000, "bad_json"),
        ({"action": "buy", "symbols": ["AAPL"]}, "unknown_action"),
        ({"action": "SUBSCRIBE"}, "unknown_action"),
    ],
)
async def test_malformed_commands_get_an_error_and_the_connection_stays_open(payload, code):
    async with Client() as c:
        await c.error(payload, code)
        await c.assert_alive()


async def test_error_echoes_the_id_when_it_can_be_read():
    async with Client() as c:
        assert (await c.error({"action": "nope", "id": "abc"}, "unknown_action"))["id"] == "abc"
        assert (await c.error("{oops", "bad_json"))["id"] is None


async def test_binary_frames_are_answered_with_bad_request():
    async with Client() as c:
        await c.comm.send_to(bytes_data=b'{"action": "ping"}')
        msg = await c.recv()
        assert msg["code"] == "bad_request"
        await c.assert_alive()


async def test_oversized_messages_are_refused_and_the_connection_stays_open():
    async with Client() as c:
        big = json.dumps({"action": "ping", "pad": "x" * (64 * 1024)})
        await c.error(big, "message_too_large")
        await c.assert_alive()


@override_settings(MAX_SYMBOLS_PER_CONNECTION=3)
async def test_symbol_limit_per_connection_is_enforced():
    async with Client() as c:
        err = await c.error(
            {"action": "subscribe", "symbols": ["AAPL", "MSFT", "NVDA", "TSLA"], "id": 1},
            "too_many_symbols",
        )
        assert "3" in err["message"]
        await c.subscribe("AAPL", "MSFT")
        await c.recv(), await c.recv()
        await c.error({"action": "subscribe", "symbols": ["NVDA", "TSLA"]}, "too_many_symbols")
        await c.send({"action": "list"})
        assert (await c.recv())["symbols"] == ["AAPL", "MSFT"]
        # Re-subscribing held symbols does not count twice.
        assert (await c.subscribe("AAPL", "MSFT", "NVDA"))["type"] == "subscribed"


def test_the_default_symbol_limit_is_50():
    assert settings.MAX_SYMBOLS_PER_CONNECTION == 50


@pytest.mark.parametrize(
    "origin",
    [
        b"http://evil.example.com",
        b"http://127.0.0.1.evil.com:8000",
        None,
        b"null",
        # The right host is not enough: scheme and port count too (issue 20).
        b"http://127.0.0.1:18555",
        b"http://127.0.0.1",
        b"ftp://127.0.0.1:8000",
        b"ftp://127.0.0.1",
        b"https://127.0.0.1:8000",
        b"http://localhost:1",
        b"http://localhost:8000",
    ],
)
async def test_a_foreign_or_missing_origin_is_refused(origin):
    headers = [HOST] + ([(b"origin", origin)] if origin is not None else [])
    comm = WebsocketCommunicator(application, "/ws/prices/", headers=headers)
    connected, _ = await comm.connect()
    assert not connected
    await comm.disconnect()


async def accepted(*headers) -> bool:
    comm = WebsocketCommunicator(application, "/ws/prices/", headers=list(headers))
    connected, _ = await comm.connect()
    await comm.disconnect()
    return connected


async def test_the_servers_own_origin_is_accepted_by_the_host_it_was_reached_at():
    assert await accepted(ORIGIN, HOST)
    assert await accepted((b"origin", b"http://localhost:8000"), (b"host", b"localhost:8000"))
    # Two Origin headers are no origin at all.
    assert not await accepted(ORIGIN, ORIGIN, HOST)
    # A Host outside ALLOWED_HOSTS does not make its own origin good.
    assert not await accepted(
        (b"origin", b"http://evil.example.com"), (b"host", b"evil.example.com")
    )


async def test_csrf_trusted_origins_and_a_tls_proxy_are_honoured(settings):
    trusted = (b"origin", b"https://ticker.example.com")
    assert not await accepted(trusted, HOST)
    settings.CSRF_TRUSTED_ORIGINS = ["https://ticker.example.com", "https://*.example.org"]
    assert await accepted(trusted, HOST)
    assert await accepted((b"origin", b"https://app.example.org"), HOST)
    assert not await accepted((b"origin", b"http://ticker.example.com"), HOST)
    # Behind a proxy that terminates TLS and says so, the page was https://<Host>.
    https_page = (b"origin", b"https://127.0.0.1:8000")
    assert not await accepted(https_page, HOST, (b"x-forwarded-proto", b"https"))
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert await accepted(https_page, HOST, (b"x-forwarded-proto", b"https"))
    assert not await accepted(ORIGIN, HOST, (b"x-forwarded-proto", b"https"))


async def test_snapshot_size_is_chosen_per_subscribe():
    await publish(*(draft("AAPL", 100.0 + i) for i in range(5)))
    async with Client() as c:
        await c.subscribe("AAPL", snapshot=2)
        assert [t["seq"] for t in (await c.recv())["ticks"]] == [4, 5]
        await c.subscribe("BTC-USD", snapshot=0)
        snap = await c.recv()
        assert snap["type"] == "snapshot" and snap["ticks"] == []
        await publish(draft("BTC-USD"))
        assert (await c.recv())["seq"] == 1


# AAPL's conflated tick waits out its 1 s interval; at the default MAX_TICK_AGE_MS (also
# 1 s) it would be a few ms from being dropped as stale, and a late timer dropped it.
@override_settings(MAX_TICK_AGE_MS=5000)
async def test_latest_mode_conflates_and_all_mode_keeps_every_tick_on_one_connection():
    async with Client() as c:
        await c.subscribe("AAPL", mode="latest", max_rate=1)
        await c.recv()
        await c.subscribe("BTC-USD")
        await c.recv()
        await publish(draft("AAPL"), draft("BTC-USD"))
        first = [await c.recv(), await c.recv()]
        assert sorted((m["symbol"], m["seq"]) for m in first) == [("AAPL", 1), ("BTC-USD", 1)]
        # AAPL may go out once a second: four more ticks arrive as one that skipped three.
        for _ in range(4):
            await publish(draft("AAPL"), draft("BTC-USD"))
        got = [await c.recv(timeout=3) for _ in range(5)]
        assert [m["seq"] for m in got if m["symbol"] == "BTC-USD"] == [2, 3, 4, 5]
        assert [(m["seq"], m["skipped"]) for m in got if m["symbol"] == "AAPL"] == [(5, 3)]
        assert await c.nothing()


async def test_a_redis_outage_during_subscribe_answers_unavailable_and_keeps_the_connection():
    async with Client() as c:
        with mock.patch("markets.history.snapshot", side_effect=ConnectionError("Redis is down")):
            await c.send({"action": "subscribe", "symbols": ["AAPL"], "id": 9})
            assert (await c.recv())["type"] == "subscribed"
            err = await c.recv()
        assert (err["code"], err["id"], err["symbols"]) == ("unavailable", 9, ["AAPL"])
        await c.send({"action": "list", "id": 1})
        assert (await c.recv())["symbols"] == []
        await c.subscribe("AAPL")
        assert (await c.recv())["type"] == "snapshot"
