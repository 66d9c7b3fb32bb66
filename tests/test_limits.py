"""streaming.limits: the command bucket, connection caps and subscriptions per user.

The bucket's arithmetic runs on a fake clock; everything else goes through the real ASGI
app (tickerproject.asgi.application) and real Redis, as tests/test_consumer.py does.
The real-socket behaviour (backpressure, the 1008 drop, caps over uvicorn) is in
tests/test_limits_e2e.py.
"""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from streaming.limits import (
    REPORT_SECONDS,
    CommandLimiter,
    SubscriptionQuota,
    UserSubscriptions,
    Verdict,
)
from streaming.protocol import ErrorCode, ProtocolError
from tickerproject.asgi import application

ORIGIN = (b"origin", b"http://127.0.0.1:8000")
HOST = (b"host", b"127.0.0.1:8000")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, reports: list, **kw) -> CommandLimiter:
    args = {"rate": 10.0, "burst": 5, "flood_seconds": 3.0, **kw}
    return CommandLimiter(report=reports.append, clock=clock, **args)


# --- the bucket


async def test_a_burst_runs_then_excess_commands_are_dropped_and_reported_at_once():
    clock, reports = Clock(), []
    lim = limiter(clock, reports)
    assert [lim.admit() for _ in range(5)] == [Verdict.RUN] * 5
    assert lim.admit() is Verdict.DROP
    assert len(reports) == 1
    report = reports[0]
    assert report["type"] == "error" and report["code"] == ErrorCode.RATE_LIMITED
    assert report["id"] is None and report["dropped"] == 1 and report["message"]
    assert report["retry_after_ms"] == 100  # one token at 10/s
    assert lim.pause() == pytest.approx(0.1)
    # Refilled at the rate, never above the burst.
    clock.now += 0.1
    assert lim.admit() is Verdict.RUN
    clock.now += 100
    assert [lim.admit() for _ in range(6)] == [Verdict.RUN] * 5 + [Verdict.DROP]
    lim.cancel()


async def test_at_most_one_report_a_second_carrying_the_count_of_every_drop():
    clock, reports = Clock(), []
    lim = limiter(clock, reports, burst=1, rate=1.0, flood_seconds=100)
    lim.admit()
    for _ in range(40):
        assert lim.admit() is Verdict.DROP
        clock.now += 0.01
    assert [r["dropped"] for r in reports] == [1]
    # The rest are told when the second is over, in one error.
    await asyncio.sleep(REPORT_SECONDS + 0.2)
    assert [r["dropped"] for r in reports] == [1, 39]
    assert sum(r["dropped"] for r in reports) == lim.dropped == 40
    # Nothing pending: no empty report.
    await asyncio.sleep(REPORT_SECONDS + 0.1)
    assert len(reports) == 2
    lim.cancel()


async def test_cancel_stops_a_pending_report():
    clock, reports = Clock(), []
    lim = limiter(clock, reports, burst=1)
    lim.admit(), lim.admit(), lim.admit()
    assert len(reports) == 1
    lim.cancel()
    await asyncio.sleep(REPORT_SECONDS + 0.2)
    assert len(reports) == 1


async def test_flooding_for_flood_seconds_closes_and_a_quiet_second_resets_the_clock():
    clock, reports = Clock(), []
    lim = limiter(clock, reports, burst=1, rate=1.0, flood_seconds=3.0)
    lim.admit()
    verdicts = []
    for _ in range(29):  # 2.9 s of excess
        verdicts.append(lim.admit())
        clock.now += 0.1
    assert Verdict.CLOSE not in verdicts
    # A pause longer than REPORT_SECONDS without excess ends the flood...
    clock.now += REPORT_SECONDS + 0.5
    while lim.admit() is Verdict.RUN:
        pass
    for _ in range(25):
        assert lim.admit() is not Verdict.CLOSE
        clock.now += 0.1
    # ... and one that goes on past flood_seconds is closed.
    clock.now += 0.6
    verdict = lim.admit()
    while verdict is Verdict.RUN:  # a token refilled meanwhile
        verdict = lim.admit()
    assert verdict is Verdict.CLOSE
    assert lim.flooding_for() >= 3.0
    lim.cancel()


# --- subscriptions per user


def test_user_subscriptions_reserve_within_the_limit_and_release():
    reg = UserSubscriptions()
    assert reg.reserve(7, 3, limit=5)
    assert not reg.reserve(7, 3, limit=5)
    assert reg.reserve(7, 2, limit=5)
    reg.release(7, 5)
    assert reg.held == {}


def test_a_quota_follows_what_its_connection_holds_and_its_user(settings):
    settings.WS_MAX_SUBSCRIPTIONS_PER_USER = 5
    reg = UserSubscriptions()

    class User:
        is_authenticated = True

        def __init__(self, pk):
            self.pk = pk

    alice, bob = User(1), User(2)
    a, b = SubscriptionQuota(reg), SubscriptionQuota(reg)
    a.check(alice, held=0, adding=3)
    a.sync(alice, 3)
    b.check(alice, held=0, adding=2)
    b.sync(alice, 2)
    with pytest.raises(ProtocolError) as info:
        b.check(alice, held=2, adding=1, id=4)
    assert info.value.code == ErrorCode.TOO_MANY_SYMBOLS and info.value.id == 4
    # Something dropped a's subscriptions behind its back: counted again at the next call.
    b.check(alice, held=2, adding=0)
    a.sync(alice, 1)
    b.check(alice, held=2, adding=2)
    b.sync(alice, 4)
    assert reg.held == {1: 5}
    # An "auth" that changed the user moves the count.
    a.sync(bob, 1)
    assert reg.held == {1: 4, 2: 1}
    # Anonymous: per connection only.
    anon = SubscriptionQuota(reg)
    anon.check(None, held=0, adding=500)
    anon.sync(None, 500)
    a.release(), b.release(), anon.release()
    assert reg.held == {}


# --- through the ASGI app


def communicator(client=("10.1.2.3", 5555), headers=(ORIGIN, HOST)) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(application, "/ws/prices/", headers=list(headers))
    # The app task has not run yet: it sees the address.
    comm.scope["client"] = client
    return comm


async def recv(comm, timeout=3) -> dict:
    return json.loads(await comm.receive_from(timeout))


async def assert_refused(comm, reason_part: str) -> None:
    connected, _ = await comm.connect()
    assert connected  # accepted, then closed at once with a reason
    msg = await comm.receive_output(2)
    assert msg["type"] == "websocket.close"
    assert msg["code"] == 1013 and reason_part in msg["reason"]
    await comm.wait(2)


@pytest.mark.usefixtures("async_symbols", "clean_redis", "close_hub")
async def test_connections_past_the_per_address_cap_are_closed_with_1013():
    with override_settings(WS_MAX_CONNECTIONS_PER_IP=3, WS_MAX_CONNECTIONS=100):
        held = [communicator() for _ in range(3)]
        for c in held:
            assert (await c.connect())[0]
        await assert_refused(communicator(), "from this address")
        # Another address still gets in.
        other = communicator(client=("10.9.9.9", 1))
        assert (await other.connect())[0]
        await other.send_to(text_data='{"action": "ping", "id": 1}')
        assert (await recv(other))["type"] == "pong"
        # A slot comes back when a connection ends.
        await held[0].disconnect()
        again = communicator()
        assert (await again.connect())[0]
        for c in [*held[1:], other, again]:
            await c.disconnect()


@pytest.mark.usefixtures("async_symbols", "clean_redis", "close_hub")
async def test_connections_past_the_process_cap_are_closed_with_1013():
    with override_settings(WS_MAX_CONNECTIONS_PER_IP=100, WS_MAX_CONNECTIONS=2):
        held = [communicator(client=(f"10.0.0.{i}", 1)) for i in range(2)]
        for c in held:
            assert (await c.connect())[0]
        await assert_refused(communicator(client=("10.0.0.9", 1)), "connection limit")
        for c in held:
            await c.disconnect()
        ok = communicator(client=("10.0.0.9", 1))
        assert (await ok.connect())[0]
        await ok.disconnect()


@pytest.mark.usefixtures("async_symbols", "clean_redis", "close_hub")
async def test_excess_commands_get_bounded_rate_limited_errors_then_a_1008_close():
    with override_settings(WS_COMMAND_RATE=10.0, WS_COMMAND_BURST=5, WS_FLOOD_CLOSE_SECONDS=2.0):
        comm = communicator()
        assert (await comm.connect())[0]
        sent = 0
        replies: list[dict] = []
        close = None
        loop = asyncio.get_running_loop()
        started = loop.time()
        while loop.time() - started < 6:
            await comm.send_to(text_data=json.dumps({"action": "ping", "id": sent}))
            sent += 1
            # Drain what came back so far.
            while not await comm.receive_nothing(0.001):
                msg = await comm.receive_output(1)
                if msg["type"] == "websocket.close":
                    close = msg
                    break
                replies.append(json.loads(msg["text"]))
            if close:
                break
        elapsed = loop.time() - started
        assert close is not None and close["code"] == 1008, replies[-3:]
        assert 2.0 <= elapsed < 5
        pongs = [r for r in replies if r["type"] == "pong"]
        limited = [r for r in replies if r["type"] == "error"]
        assert {r["code"] for r in limited} == {"rate_limited"}
        assert all(r["type"] in ("pong", "error") for r in replies)
        # Bounded: at most one error a second, however many frames were sent.
        assert 1 <= len(limited) <= elapsed / 1.0 + 1
        assert sent > 2 * len(limited)
        # The burst ran; later ones at about the rate; the answered ones in order.
        assert [p["id"] for p in pongs[:5]] == [0, 1, 2, 3, 4]
        assert [p["id"] for p in pongs] == sorted(p["id"] for p in pongs)
        assert len(pongs) <= 5 + 10 * elapsed + 1
        # Every frame read is a pong, a drop told in a report, the one that closed, or a
        # drop of the last second not told yet. Past the burst, each token lets one frame
        # run and one be dropped before the consumer waits for the next: it reads no
        # faster than that, and the rest of what was sent is never read.
        told = sum(r["dropped"] for r in limited)
        read = len(pongs) + told
        assert read <= 5 + 2 * 10 * elapsed + 2
        assert sent > read + 20
        await comm.wait(2)


@pytest.mark.usefixtures("async_symbols", "clean_redis", "close_hub")
async def test_commands_at_the_rate_are_never_limited():
    with override_settings(WS_COMMAND_RATE=20.0, WS_COMMAND_BURST=5):
        comm = communicator()
        assert (await comm.connect())[0]
        for i in range(30):
            await comm.send_to(text_data=json.dumps({"action": "ping", "id": i}))
            assert (await recv(comm))["id"] == i
            await asyncio.sleep(0.06)
        await comm.disconnect()


async def _user_with_token(username: str) -> str:
    from django.contrib.auth import get_user_model

    from accounts.services import issue_token

    def make() -> str:
        user = get_user_model().objects.create_user(username, password="x-unused-x")
        return issue_token(user=user, by=user).secret

    return await sync_to_async(make)()


@pytest.mark.usefixtures("async_symbols", "clean_redis", "close_hub")
async def test_a_user_holds_at_most_its_limit_across_its_connections():
    secret = await _user_with_token("quota")
    bearer = (b"authorization", f"Bearer {secret}".encode())

    async def subscribe(comm, *symbols, id=None, new=True) -> dict:
        await comm.send_json_to({"action": "subscribe", "symbols": list(symbols), "id": id})
        first = await recv(comm)
        if first["type"] == "subscribed" and new:
            for _ in first["symbols"]:
                assert (await recv(comm))["type"] == "snapshot"
        return first

    with override_settings(WS_MAX_SUBSCRIPTIONS_PER_USER=3):
        a, b = (
            communicator(headers=(ORIGIN, HOST, bearer)),
            communicator(headers=(ORIGIN, HOST, bearer)),
        )
        anon = communicator()
        for c in (a, b, anon):
            assert (await c.connect())[0]
        assert (await subscribe(a, "BTC-USD", "ETH-USD"))["type"] == "subscribed"
        err = await subscribe(b, "AAPL", "MSFT", id=5)
        assert err["type"] == "error" and err["code"] == "too_many_symbols" and err["id"] == 5
        assert "per user" in err["message"] or "user" in err["message"]
        await b.send_json_to({"action": "list"})
        assert (await recv(b))["symbols"] == []
        assert (await subscribe(b, "AAPL"))["type"] == "subscribed"
        # Re-subscribing a held symbol costs nothing.
        assert (await subscribe(a, "BTC-USD", new=False))["type"] == "subscribed"
        assert (await subscribe(a, "MSFT"))["code"] == "too_many_symbols"
        await a.send_json_to({"action": "unsubscribe", "symbols": ["ETH-USD"]})
        assert (await recv(a))["type"] == "unsubscribed"
        assert (await subscribe(b, "MSFT"))["type"] == "subscribed"
        # A connection that ends gives its share back.
        await a.disconnect()
        assert (await subscribe(b, "ETH-USD"))["type"] == "subscribed"
        # Anonymous clients: the per-connection limit only.
        assert (await subscribe(anon, "BTC-USD", "ETH-USD", "AAPL", "MSFT"))["type"] == (
            "subscribed"
        )
        for c in (b, anon):
            await c.disconnect()
    from streaming.limits import user_subscriptions

    assert user_subscriptions.held == {}
