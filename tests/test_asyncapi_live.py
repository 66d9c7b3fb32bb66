"""Every server message type, error code and close code, provoked over a real stack and
checked against the AsyncAPI document (streaming/asyncapi.py).

The frames are checked twice: here, explicitly, and by tests/asyncapi_contract.py, which
checks every price-stream frame of every test. Two error codes cannot be provoked from
outside a healthy server (``message_too_large``: the ASGI server refuses such a frame with
1009 first; ``unavailable``: Redis must fail mid-subscribe), so the server's own code
builds them here; the same for ``alert`` (a fired price alert of the alerts app). Close
1012 is seen by tests/test_client_live.py (an ASGI server restart), 4008 only when a
client really falls behind (the socket buffers of a healthy machine hold megabytes, so it
is not forced here), 1011 only on a bug; each is checked by the contract plugin when seen.
"""

import asyncio
import json
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from streaming.asyncapi import build_document
from tests.asyncapi_contract import Contract
from tests.clienthelpers import USER, make_token, revoke_token, shell
from tests.realstack import real_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RECHECK = 0.5
SEEN: set[str] = set()  # message types, "error:<code>", "close:<code>", "reset:<reason>"


@pytest.fixture(scope="module")
def contract():
    return Contract(build_document())


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with real_stack(
        tmp_path_factory.mktemp("asyncapistack"),
        TICK_RATE="20",
        WS_REQUIRE_AUTH="1",
        AUTH_TIMEOUT_SECONDS="1",
        ENTITLEMENT_RECHECK_SECONDS=str(RECHECK),
        SYMBOLS_CACHE_SECONDS=str(RECHECK),
        HISTORY_DEPTH="100",
        WS_COMMAND_RATE="5",
        WS_COMMAND_BURST="8",
        WS_FLOOD_CLOSE_SECONDS="1",
        WS_MAX_CONNECTIONS_PER_IP="6",
    ) as s:
        yield s


@pytest.fixture(scope="module")
def token(stack):
    return make_token(stack, "contract")


class Conn:
    """A raw websockets connection whose every received message is checked and noted."""

    def __init__(self, ws, contract: Contract) -> None:
        self.ws = ws
        self.contract = contract

    async def send(self, **command) -> None:
        await self.ws.send(json.dumps(command))

    async def recv(self, timeout: float = 15.0) -> dict:
        msg = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        assert self.contract.check_server(msg) == [], msg
        SEEN.add(msg["type"])
        if msg["type"] == "error":
            SEEN.add(f"error:{msg['code']}")
        if msg["type"] == "reset":
            SEEN.add(f"reset:{msg['reason']}")
        return msg

    async def until(self, kind: str, timeout: float = 15.0, **match) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            msg = await self.recv(max(0.1, deadline - time.monotonic()))
            if msg["type"] == kind and all(msg.get(k) == v for k, v in match.items()):
                return msg

    async def closed(self, timeout: float = 20.0) -> int:
        """Read until the server closes; its close code (checked and noted)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await self.recv(timeout)
        except ConnectionClosed:
            pass
        code = self.ws.protocol.close_rcvd.code
        assert self.contract.check_close(code) == []
        SEEN.add(f"close:{code}")
        return code


def opened(stack, contract, secret: str | None = None, **kwargs):
    headers = {"Authorization": f"Bearer {secret}"} if secret else None
    return _Opened(
        connect(stack.ws_url, origin=stack.origin, additional_headers=headers, **kwargs), contract
    )


class _Opened:
    def __init__(self, cm, contract) -> None:
        self.cm = cm
        self.contract = contract

    async def __aenter__(self) -> Conn:
        return Conn(await self.cm.__aenter__(), self.contract)

    async def __aexit__(self, *exc) -> None:
        await self.cm.__aexit__(*exc)


async def current(c: Conn, symbol: str) -> tuple[int, str]:
    """The symbol's newest seq and its epoch."""
    await c.send(action="subscribe", symbols=[symbol], id="seq", snapshot=1, mode="latest")
    snap = await c.until("snapshot", symbol=symbol)
    await c.send(action="unsubscribe", symbols=[symbol], id="unseq")
    await c.until("unsubscribed", id="unseq")
    return (snap["ticks"][-1]["seq"] if snap["ticks"] else 0), snap["epoch"]


async def test_answers_ticks_batches_and_resets(stack, contract, token):
    secret, _ = token
    async with opened(stack, contract) as c:
        await c.send(action="auth", token=secret, id="a")
        assert (await c.recv())["type"] == "authenticated"
        # "latest" throughout: a busy machine cannot close this reader as a slow consumer.
        await c.send(action="subscribe", symbols=["BTC-USD"], id=1, snapshot=5, mode="latest")
        await c.until("subscribed", id=1)
        await c.until("snapshot", symbol="BTC-USD")
        await c.until("tick")
        await c.send(action="list", id=2)
        await c.until("subscriptions", id=2)
        await c.send(action="ping", id=3)
        await c.until("pong", id=3)
        await c.send(action="unsubscribe", symbols=["BTC-USD"], id=4)
        await c.until("unsubscribed", id=4)
        # A changed numbering: reset, then a fresh snapshot. Two symbols, so that every
        # 50 ms batch holds two ticks and goes out as one "ticks" frame (one symbol at
        # TICK_RATE=20 has one tick per batch, sent as a plain "tick").
        await c.send(
            action="subscribe", symbols=["BTC-USD", "ETH-USD"], id=5, since={"BTC-USD": 1},
            epochs={"BTC-USD": "not-the-epoch"}, batch_ms=50,
        )  # fmt: skip
        assert (await c.until("reset", symbol="BTC-USD"))["reason"] == "epoch_changed"
        await c.until("snapshot", symbol="BTC-USD")
        await c.until("ticks")
        await c.send(action="unsubscribe", symbols=["BTC-USD", "ETH-USD"], id=6)
        await c.until("unsubscribed", id=6)
        # History keeps about HISTORY_DEPTH=100 ticks (trimmed approximately): once the
        # symbol is far past that, it no longer reaches back to seq 2.
        for _ in range(90):
            seq, epoch = await current(c, "BTC-USD")
            if seq >= 600:
                break
            await asyncio.sleep(1)
        await c.send(
            action="subscribe", symbols=["BTC-USD"], id=7, since={"BTC-USD": 1},
            epochs={"BTC-USD": epoch}, mode="latest",
        )  # fmt: skip
        reset = await c.until("reset", symbol="BTC-USD", timeout=20)
        assert reset["reason"] == "history_truncated"


async def test_error_codes(stack, contract, token):
    secret, _ = token
    async with opened(stack, contract, secret) as c:
        await c.ws.send("{not json")
        await c.until("error", code="bad_json")
        await c.ws.send("[]")
        await c.until("error", code="bad_request")
        await c.send(action="fly", id=1)
        await c.until("error", code="unknown_action", id=1)
        await c.send(
            action="subscribe", symbols=["BTC-USD", "NOPE"], id=2, snapshot=0, mode="latest"
        )
        await c.until("error", code="unknown_symbol", id=2)
        await c.send(action="subscribe", symbols=[f"S{i}" for i in range(51)], id=3)
        await c.until("error", code="too_many_symbols", id=3)
        await c.send(action="auth", token="tk_wrong", id=4)
        await c.until("error", code="unauthorized", id=4)
        await asyncio.sleep(2)  # the bucket refills
        for i in range(12):  # past the burst of 8
            await c.send(action="ping", id=100 + i)
        limited = await c.until("error", code="rate_limited")
        assert limited["dropped"] >= 1 and limited["id"] is None


async def test_forbidden_symbols_and_a_lost_right(stack, contract):
    secret, _ = make_token(stack, "restricted")
    shell(
        stack,
        "from django.contrib.auth.models import Group\n"
        "from markets.models import Symbol\n"
        "g, _ = Group.objects.get_or_create(name='vip')\n"
        "Symbol.objects.filter(ticker='MSFT').update(required_group=g)",
    )
    await asyncio.sleep(3 * RECHECK)
    async with opened(stack, contract, secret) as c:
        await c.send(action="subscribe", symbols=["MSFT"], id=1, mode="latest", snapshot=0)
        await c.until("error", code="forbidden", id=1)
        shell(
            stack, USER.format(name="restricted") + "user.groups.add(Group.objects.get(name='vip'))"
        )
        await asyncio.sleep(3 * RECHECK)
        await c.send(action="subscribe", symbols=["MSFT"], id=2, mode="latest", snapshot=0)
        await c.until("subscribed", id=2)
        shell(
            stack,
            USER.format(name="restricted") + "user.groups.remove(Group.objects.get(name='vip'))",
        )
        dropped = await c.until("unsubscribed", timeout=20)
        assert dropped["reason"] == "forbidden" and dropped["id"] is None


async def test_close_4401_4403_1009_1008_1013(stack, contract):
    async with opened(stack, contract) as c:  # nothing sent within AUTH_TIMEOUT_SECONDS
        assert await c.closed() == 4401
    secret, pk = make_token(stack, "closer")
    async with opened(stack, contract, secret) as c:
        await c.send(action="subscribe", symbols=["ETH-USD"], mode="latest", snapshot=0)
        await c.until("tick")
        await asyncio.to_thread(revoke_token, stack, pk)
        assert await c.closed() == 4403
    secret, _ = make_token(stack, "closer2")
    async with opened(stack, contract, secret, max_size=None) as c:
        await c.ws.send("x" * (70 * 1024))
        assert await c.closed() == 1009
    async with opened(stack, contract, secret) as c:

        async def flood():
            with pytest.raises(ConnectionClosed):
                while True:
                    await c.ws.send('{"action":"ping"}')
                    await asyncio.sleep(0.005)

        flooding = asyncio.create_task(flood())
        assert await c.closed() == 1008
        await flooding
    held = []
    try:
        for _ in range(6):
            held.append(await opened(stack, contract, secret).__aenter__())
        async with opened(stack, contract, secret) as c:
            assert await c.closed() == 1013
    finally:
        for c in held:
            await c.ws.close()
    # The server counts a connection until its consumer has wound down, a moment after
    # the close on a busy machine: the next test's connection must not find the six.
    deadline = time.monotonic() + 15
    while True:
        async with opened(stack, contract, secret) as c:
            try:
                await c.send(action="ping", id="free")
                await c.until("pong", id="free")
                break
            except ConnectionClosed:
                assert c.ws.close_code == 1013 and time.monotonic() < deadline
        await asyncio.sleep(0.1)


def test_what_cannot_be_provoked_from_outside_is_built_by_the_server_code(contract):
    from streaming.connection import _unavailable
    from streaming.protocol import Command, ProtocolError, decode_frame

    with pytest.raises(ProtocolError) as too_large:
        decode_frame("x" * (70 * 1024))
    unavailable = _unavailable(RuntimeError("redis down"), Command("subscribe", 9), ["BTC-USD"])
    for msg in (too_large.value.as_message(), unavailable.as_message()):
        assert contract.check_server(msg) == [], msg
        SEEN.add(f"error:{msg['code']}")

    from alerts.delivery import alert_message
    from alerts.models import AlertEvent

    event = AlertEvent(
        pk=12, alert_id=3, symbol="BTC-USD", direction="above", threshold="100000",
        price=100000.5, seq=1043, tick_ts=1764072000223,
    )  # fmt: skip
    from django.utils import timezone

    event.fired_at = timezone.now()
    msg = alert_message(event)
    assert contract.check_server(msg) == [], msg
    SEEN.add("alert")


async def test_books_their_streams_and_list(stack, contract, token):
    secret, _ = token
    async with opened(stack, contract, secret) as c:
        await c.send(
            action="subscribe", symbols=["ETH-USD"], id="b", streams=["ticks", "book"], depth=5,
            mode="latest", max_rate=5,
        )  # fmt: skip
        await c.until("subscribed", id="b")
        await c.until("book", symbol="ETH-USD")
        await c.until("book_update", symbol="ETH-USD")
        await c.send(action="list", id="bl")
        listed = await c.until("subscriptions", id="bl")
        assert listed["streams"] == {"ETH-USD": ["ticks", "book"]}
        await c.send(action="unsubscribe", symbols=["ETH-USD"], streams=["book"], id="bu")
        await c.until("unsubscribed", id="bu")


def test_every_message_type_error_code_and_close_code_was_seen(contract):
    wanted = set(contract.server) | {f"error:{c}" for c in contract.error_codes}
    wanted |= {"reset:epoch_changed", "reset:history_truncated"}
    # 1000 is the client's own; 1011 only on a server bug; 1012 and 4008 are checked when
    # they happen (the contract plugin): a server restart in tests/test_client_live.py,
    # and a slow consumer, which a healthy machine's socket buffers make slow to provoke.
    wanted |= {f"close:{c}" for c in contract.close_codes - {1000, 1011, 1012, 4008}}
    assert wanted - SEEN == set()
