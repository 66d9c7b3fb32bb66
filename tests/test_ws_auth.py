"""WebSocket access over a real stack: tokens, sessions, WS_REQUIRE_AUTH, entitlements, revocation.

Users, tokens, groups and sessions are made in the stack's own database by code
snippets (RealStack.shell, as `manage.py shell -c` would); the clients are real sockets
to a real uvicorn.
"""

import asyncio
import json
import signal
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.clienthelpers import USER, make_token, shell
from tests.realstack import real_stack
from tickerproject.stack import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RECHECK = 0.5
HISTORY_MAX = 20


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with real_stack(
        tmp_path_factory.mktemp("authstack"),
        TICK_RATE="20",
        WS_REQUIRE_AUTH="1",
        AUTH_TIMEOUT_SECONDS="1",
        ENTITLEMENT_RECHECK_SECONDS=str(RECHECK),
        SYMBOLS_CACHE_SECONDS=str(RECHECK),
        # The alert history's retention, enforced by beat every second here.
        ALERT_HISTORY_DAYS="1",
        ALERT_HISTORY_MAX_PER_USER=str(HISTORY_MAX),
        ALERT_HISTORY_PRUNE_SECONDS="1",
    ) as s:
        yield s


def bearer(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


async def recv(ws, timeout: float = 10.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws, kind: str, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        msg = await recv(ws, max(0.1, deadline - time.monotonic()))
        if msg["type"] == kind:
            return msg


async def closed_with(ws, timeout: float = 15.0) -> int:
    """Read until the server closes; its close code."""
    try:
        async with asyncio.timeout(timeout):
            async for _ in ws:
                pass
    except ConnectionClosed:
        pass
    return ws.close_code


async def send(ws, **command) -> None:
    await ws.send(json.dumps(command))


async def test_only_the_sites_own_origin_may_open_the_socket(stack):
    """Scheme, host and port all count (streaming/origin.py): a page on another port of
    the same host, another scheme, or another name of it is refused at the handshake,
    even with a valid token."""
    secret, _ = make_token(stack, "origins")
    port = stack.http_url.rsplit(":", 1)[1]
    other = "18555" if port != "18555" else "18556"
    foreign = [
        f"http://127.0.0.1:{other}",
        "ftp://127.0.0.1",
        f"ftp://127.0.0.1:{port}",
        f"https://127.0.0.1:{port}",
        "http://localhost:1",
        f"http://localhost:{port}",
        "null",
    ]
    for origin in foreign:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(stack.ws_url, origin=origin, additional_headers=bearer(secret)):
                pass
        assert refused.value.response.status_code == 403, origin
    async with connect(stack.ws_url, origin=stack.origin, additional_headers=bearer(secret)) as ws:
        await send(ws, action="ping", id=1)
        assert (await recv(ws))["type"] == "pong"


async def test_refused_handshakes_leave_nothing_running_in_the_server(stack):
    """A refused handshake's app call ends with it: a web server that refused 50 stops at
    once on SIGTERM. Channels' WebsocketDenier left a task waiting on the channel layer
    per refusal, which the server waited for at shutdown without end (and held ~7 KB)."""
    port = free_port()
    web = stack.start_web(name="web-refusing", port=port)
    url = f"ws://127.0.0.1:{port}/ws/prices/"
    for _ in range(50):
        with pytest.raises(InvalidStatus):
            async with connect(url, origin="http://127.0.0.1:1"):
                pass
    web.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.to_thread(web.wait), 10)
    finally:
        stack.stop("web-refusing", timeout=0.0)


async def test_an_anonymous_client_is_closed_4401_on_any_other_command_than_auth(stack):
    async with connect(stack.ws_url, origin=stack.origin) as ws:
        await send(ws, action="subscribe", symbols=["BTC-USD"])
        assert await closed_with(ws) == 4401


async def test_an_anonymous_client_that_sends_nothing_is_closed_4401(stack):
    # Timed from before the handshake: the server's clock starts at its accept, which a
    # loaded client may see returned well after it (0.7 s once in the parallel part).
    started = time.monotonic()
    async with connect(stack.ws_url, origin=stack.origin) as ws:
        assert await closed_with(ws) == 4401
        assert time.monotonic() - started >= 0.9  # not before AUTH_TIMEOUT_SECONDS


async def test_a_bearer_token_on_the_handshake_authenticates(stack):
    secret, _ = make_token(stack, "handshake")
    async with connect(stack.ws_url, origin=stack.origin, additional_headers=bearer(secret)) as ws:
        await send(ws, action="subscribe", symbols=["BTC-USD"], id=1)
        assert (await recv(ws))["type"] == "subscribed"
        assert (await recv(ws))["type"] == "snapshot"
        assert (await recv_until(ws, "tick"))["symbol"] == "BTC-USD"


async def test_an_unusable_token_on_the_handshake_is_refused_with_4401(stack):
    async with connect(
        stack.ws_url, origin=stack.origin, additional_headers=bearer("tk_not-a-real-token")
    ) as ws:
        msg = await recv(ws)
        assert msg["type"] == "error" and msg["code"] == "unauthorized"
        assert await closed_with(ws) == 4401


async def test_the_auth_command_authenticates_and_a_bad_token_gets_an_error(stack):
    secret, _ = make_token(stack, "command")
    async with connect(stack.ws_url, origin=stack.origin) as ws:
        await send(ws, action="auth", token="tk_wrong", id="a")
        bad = await recv(ws)
        assert (bad["type"], bad["code"], bad["id"]) == ("error", "unauthorized", "a")
        await send(ws, action="auth", token=secret, id="b")
        assert await recv(ws) == {"type": "authenticated", "id": "b", "user": "command"}
        # Past AUTH_TIMEOUT_SECONDS the authenticated connection is still served.
        await asyncio.sleep(1.5)
        await send(ws, action="subscribe", symbols=["ETH-USD"], id=2)
        assert (await recv(ws))["type"] == "subscribed"
        assert (await recv_until(ws, "tick"))["symbol"] == "ETH-USD"


async def test_a_revoked_token_closes_its_open_connections_with_4403(stack):
    secret, pk = make_token(stack, "revoked")
    async with connect(stack.ws_url, origin=stack.origin, additional_headers=bearer(secret)) as ws:
        # "latest": while this test waits on the shell it reads nothing, and on a busy
        # machine an "all" subscription could be closed as a slow consumer (4008) first.
        await send(ws, action="subscribe", symbols=["BTC-USD"], mode="latest")
        await recv_until(ws, "tick")
        revoking_at = time.monotonic()
        shell(
            stack,
            "from accounts.models import ApiToken\n"
            "from accounts.services import revoke_token\n"
            f"revoke_token(token=ApiToken.objects.get(pk={pk}))",
        )
        assert await closed_with(ws) == 4403
        # An upper bound: it includes the snippet's run in the stack's shell process.
        print(f"revoked and closed within {time.monotonic() - revoking_at:.2f} s")
    # And the token no longer opens a connection.
    async with connect(stack.ws_url, origin=stack.origin, additional_headers=bearer(secret)) as ws:
        assert await closed_with(ws) == 4401


async def test_restricted_symbols_are_forbidden_and_a_lost_right_drops_the_subscription(stack):
    secret, _ = make_token(stack, "trader")
    shell(
        stack,
        "from django.contrib.auth.models import Group\n"
        "from markets.models import Symbol\n"
        "g, _ = Group.objects.get_or_create(name='nasdaq')\n"
        "Symbol.objects.filter(ticker='AAPL').update(required_group=g)",
    )
    await asyncio.sleep(2 * RECHECK)  # the symbol cache sees the restriction
    async with connect(stack.ws_url, origin=stack.origin, additional_headers=bearer(secret)) as ws:
        await send(ws, action="subscribe", symbols=["AAPL", "BTC-USD"], id=7, mode="latest")
        assert await recv(ws) == {"type": "subscribed", "id": 7, "symbols": ["BTC-USD"]}
        assert (await recv(ws))["type"] == "snapshot"
        refused = await recv_until(ws, "error")
        assert (refused["code"], refused["symbols"], refused["id"]) == ("forbidden", ["AAPL"], 7)
        await send(ws, action="list", id=8)
        assert (await recv_until(ws, "subscriptions"))["symbols"] == ["BTC-USD"]

        shell(
            stack, USER.format(name="trader") + "user.groups.add(Group.objects.get(name='nasdaq'))"
        )
        await asyncio.sleep(2 * RECHECK)  # the cached rights expire
        await send(ws, action="subscribe", symbols=["AAPL"], id=9, mode="latest")
        assert await recv_until(ws, "subscribed") == {
            "type": "subscribed",
            "id": 9,
            "symbols": ["AAPL"],
        }
        await recv_until(ws, "tick")

        shell(
            stack,
            USER.format(name="trader") + "user.groups.remove(Group.objects.get(name='nasdaq'))",
        )
        dropped = await recv_until(ws, "unsubscribed")
        assert dropped == {
            "type": "unsubscribed",
            "id": None,
            "symbols": ["AAPL"],
            "reason": "forbidden",
        }
        # The rest of the connection carries on: BTC-USD still ticks, AAPL no longer.
        seen = set()
        for _ in range(20):
            msg = await recv_until(ws, "tick")
            seen.add(msg["symbol"])
        assert seen == {"BTC-USD"}
        await send(ws, action="list", id=10)
        assert (await recv_until(ws, "subscriptions"))["symbols"] == ["BTC-USD"]


async def test_a_session_cookie_authenticates_and_logging_out_closes_with_4403(stack):
    key = shell(
        stack,
        USER.format(name="browser")
        + "from django.test import Client\n"
        + "c = Client()\n"
        + "c.force_login(user)\n"
        + "print(c.cookies['sessionid'].value)",
    ).split()[-1]
    headers = {"Cookie": f"sessionid={key}"}
    async with connect(stack.ws_url, origin=stack.origin, additional_headers=headers) as ws:
        await send(ws, action="subscribe", symbols=["BTC-USD"], mode="latest")
        assert (await recv(ws))["type"] == "subscribed"
        await recv_until(ws, "tick")
        shell(
            stack,
            "from django.contrib.sessions.backends.db import SessionStore\n"
            f"SessionStore({key!r}).delete()",
        )
        assert await closed_with(ws) == 4403


def rest(stack, method: str, path: str, secret: str, body=None) -> tuple[int, object]:
    """Status and JSON body of one REST call with a Bearer token."""
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"Bearer {secret}", "Accept": "application/json"}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    req = urllib.request.Request(stack.http_url + path, data, headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


async def alerts_until(ws, done, timeout: float = 30.0) -> list[dict]:
    """The alert messages ``ws`` receives until ``done(those so far)`` holds."""
    got: list[dict] = []
    deadline = time.monotonic() + timeout
    while not done(got):
        msg = await recv(ws, max(0.1, deadline - time.monotonic()))
        if msg["type"] == "alert":
            got.append(msg)
    return got


async def test_alerts_on_a_symbol_whose_right_was_taken_neither_fire_nor_reach_a_socket(
    stack, tmp_path
):
    """issue 20, finding 1: after losing the right to a symbol, a user's open socket still
    got its alerts (with the price), the history grew, and PATCH could move the level."""
    # SOL-USD, restricted to "metals", plays 100 and 102 in turn (a replay looped): an
    # alert above 101 that repeats fires at every other tick, for every owner alike.
    played = tmp_path / "sol.csv"
    rows = [f"{1_700_000_000_000 + 100 * i},SOL-USD,{100 + 2 * (i % 2)},1" for i in range(40)]
    played.write_text("ts,symbol,price,size\n" + "\n".join(rows) + "\n")
    shell(
        stack,
        "from django.contrib.auth.models import Group, User\n"
        "from markets.models import Symbol\n"
        "g, _ = Group.objects.get_or_create(name='metals')\n"
        "Symbol.objects.filter(ticker='SOL-USD').update(required_group=g,"
        f" source='replay', source_options={{'file': {str(played)!r}, 'loop': True}})\n"
        "for name in ('goldbug', 'carol'):\n"
        "    User.objects.get_or_create(username=name)[0].groups.add(g)\n",
    )
    (goldbug, _), (carol, _) = make_token(stack, "goldbug"), make_token(stack, "carol")
    rule = {"symbol": "SOL-USD", "direction": "above", "price": 101, "repeat": True}
    ids = {}
    for name, secret in (("goldbug", goldbug), ("carol", carol)):
        status, made = await asyncio.to_thread(rest, stack, "POST", "/api/alerts/", secret, rule)
        assert status == 201, made
        ids[name] = made["id"]
    mine = {"additional_headers": bearer(goldbug)}
    theirs = {"additional_headers": bearer(carol)}
    async with (
        connect(stack.ws_url, origin=stack.origin, **mine) as ws,
        connect(stack.ws_url, origin=stack.origin, **theirs) as other,
    ):
        # While entitled, goldbug's alert reaches the open socket.
        (first,) = await alerts_until(ws, lambda got: got, timeout=40)
        assert first["symbol"] == "SOL-USD" and first["price"] == 102
        boundary = int(
            shell(
                stack,
                "from django.contrib.auth.models import Group, User\n"
                "from alerts.models import AlertEvent\n"
                "User.objects.get(username='goldbug').groups.remove("
                "Group.objects.get(name='metals'))\n"
                "print(AlertEvent.objects.order_by('-pk').values_list('pk', flat=True)[0])",
            ).split()[-1]
        )
        # carol's identical alert goes on firing: the level was crossed after the revocation.
        await alerts_until(
            other, lambda got: sum(a["event_id"] > boundary for a in got) >= 2, timeout=30
        )
        # Editing it would tell goldbug where the price is: 403, as a new alert is.
        path = f"/api/alerts/{ids['goldbug']}"
        status, body = await asyncio.to_thread(rest, stack, "PATCH", path, goldbug, {"price": 99})
        assert status == 403 and body["code"] == "forbidden", body
        status, _ = await asyncio.to_thread(rest, stack, "POST", "/api/alerts/", goldbug, rule)
        assert status == 403
        # Switched off, and the reason shown (the evaluator's sweep).
        deadline = time.monotonic() + 15
        while True:
            _, alert = await asyncio.to_thread(rest, stack, "GET", path, goldbug)
            if alert["off_reason"] == "forbidden" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert (alert["active"], alert["off_reason"], alert["price"]) == (False, "forbidden", 101)
        # Nothing fired for goldbug after the revocation reached this socket, nor is in
        # the history; what was fired before stays (the price was theirs to see then).
        late = []
        try:
            while True:
                msg = await recv(ws, 1.0)
                late += [msg] if msg["type"] == "alert" and msg["event_id"] > boundary else []
        except TimeoutError:
            pass
        assert late == []
        _, history = await asyncio.to_thread(
            rest, stack, "GET", "/api/alerts/history?limit=500", goldbug
        )
        assert history and all(e["event_id"] <= boundary for e in history)
        # Deleting it is still theirs to do.
        assert (await asyncio.to_thread(rest, stack, "DELETE", path, goldbug))[0] == 204


async def test_the_alert_history_is_pruned_by_age_and_per_user_count(stack):
    """issue 20, finding 7: fired alerts were never deleted. Beat's task keeps each user's
    newest ALERT_HISTORY_MAX_PER_USER younger than ALERT_HISTORY_DAYS."""
    secret, _ = make_token(stack, "keeper")
    made = shell(
        stack,
        USER.format(name="keeper") + "from datetime import timedelta\n"
        "from django.utils import timezone\n"
        "from alerts.models import AlertEvent\n"
        "made = AlertEvent.objects.bulk_create(AlertEvent(user=user, symbol='BTC-USD',"
        " direction='above', threshold=1, price=2, seq=i, tick_ts=0) for i in range(30))\n"
        "old = [e.pk for e in made[-3:]]\n"  # the newest ids, fired two days ago
        "AlertEvent.objects.filter(pk__in=old).update("
        "fired_at=timezone.now() - timedelta(days=2))\n"
        "print(*[e.pk for e in made])",
    ).split()
    made = [int(pk) for pk in made[-30:]]
    expected = sorted(made[27 - HISTORY_MAX : 27], reverse=True)
    deadline = time.monotonic() + 20
    while True:
        _, history = await asyncio.to_thread(
            rest, stack, "GET", "/api/alerts/history?limit=500", secret
        )
        kept = [e["event_id"] for e in history]
        if kept == expected or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert kept == expected, (len(kept), kept[:5])
