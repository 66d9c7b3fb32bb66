"""Fuzzing with hypothesis: the protocol parser, and the consumer through the real ASGI app.

Properties:
- the parser (streaming.protocol.decode_frame + parse_command) either returns a command
  whose every field is within its documented bound, or raises ProtocolError with a
  documented code; nothing else ever escapes;
- the consumer (tickerproject.asgi.application, real Redis) answers every frame with
  documented message types and error codes only, never raises, never closes with an
  undocumented code, and ``list`` always matches what the client was told it holds
  (subscribed, minus unsubscribed and anything an ``unavailable`` error took back).

Deterministic (derandomize, no example database) and counted: test_fuzz_case_count,
last in this file, prints how many cases ran and needs at least 5,000.
"""

import json
from collections import Counter

import pytest
from channels.testing import WebsocketCommunicator
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from markets.symbols import is_valid_symbol
from markets.universe import DEFAULT_UNIVERSE
from streaming.protocol import (
    FIELDS,
    MAX_BATCH_MS,
    MAX_EPOCH_LENGTH,
    MAX_ID_LENGTH,
    MAX_INT_ID,
    MAX_RATE,
    MAX_SNAPSHOT,
    Command,
    ErrorCode,
    ProtocolError,
    decode_frame,
    parse_command,
)

LIMIT = 50
CASES: Counter[str] = Counter()
FUZZ_TESTS = 5  # the @given tests below; the count test checks they all ran

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- what a client may send

REAL = [i.ticker for i in DEFAULT_UNIVERSE]
symbol = st.one_of(
    st.sampled_from(REAL),
    st.sampled_from(["NOPE", "ZZZ-USD", "btc-usd", "", "A" * 21, "BTC USD", "☃"]),
    st.text(max_size=25),
)
huge_int = st.one_of(
    st.integers(),
    st.integers(min_value=2**52, max_value=2**70),
    st.integers(min_value=-(2**70), max_value=-(2**52)),
    st.sampled_from([2**53, 2**53 - 1, -(2**53), 2**63, 2**63 - 1, 2**64, 10**300]),
)
scalar = st.one_of(
    st.none(),
    st.booleans(),
    huge_int,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=80),
)
json_value = st.recursive(
    scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=12,
)


@st.composite
def command_dict(draw) -> dict:
    """Mostly well-formed commands, each field sometimes replaced by anything."""
    action = draw(st.one_of(st.sampled_from(list(FIELDS)), st.text(max_size=12), json_value))
    raw: dict = {"action": action}
    symbols = draw(st.lists(symbol, min_size=0, max_size=8))
    some = [s for s in symbols if isinstance(s, str)]
    good = {
        "id": lambda: draw(st.one_of(huge_int, st.text(max_size=70), st.none())),
        "symbols": lambda: symbols,
        "since": lambda: {s: draw(huge_int) for s in some[:3]},
        "epochs": lambda: {s: draw(st.text(max_size=70)) for s in some[:2]},
        "batch_ms": lambda: draw(st.integers(-5, MAX_BATCH_MS + 5)),
        "mode": lambda: draw(st.sampled_from(["all", "latest", "ALL", ""])),
        "max_rate": lambda: draw(st.one_of(st.floats(-1, MAX_RATE + 1), st.integers(-1, 2000))),
        "snapshot": lambda: draw(st.integers(-2, MAX_SNAPSHOT + 2)),
        "token": lambda: draw(st.text(max_size=210)),
    }
    fields = draw(st.sets(st.sampled_from(sorted(good)), max_size=5))
    for name in sorted(fields):
        raw[name] = draw(json_value) if draw(st.integers(0, 5)) == 0 else good[name]()
    if draw(st.integers(0, 8)) == 0:
        raw[draw(st.text(max_size=10))] = draw(json_value)  # an unknown field
    return raw


def nested(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    if kind == "dict":
        return '{"a":' * depth + "1" + "}" * depth
    return "[" * depth  # unbalanced


def json_text(value) -> str:
    return json.dumps(value, allow_nan=True)


frame_text = st.one_of(
    command_dict().map(json_text),
    json_value.map(json_text),
    st.text(max_size=200),
    st.builds(nested, st.integers(1, 3000), st.sampled_from(["list", "dict", "open"])),
    st.builds(lambda n: '{"action": "ping", "id": ' + "9" * n + "}", st.integers(1, 6000)),
    st.builds(lambda n: "1" * n, st.integers(4000, 5000)),
    st.sampled_from(["NaN", "Infinity", '{"id": -Infinity}', "", " ", "null", "{}", "[]"]),
)

# --- the parser

CODES = {c.value for c in ErrorCode}


def check_parsed(text) -> None:
    try:
        command = parse_command(decode_frame(text), symbol_limit=LIMIT)
    except ProtocolError as exc:
        assert exc.code in CODES
        msg = exc.as_message()
        json.dumps(msg)  # always serializable
        assert msg["type"] == "error" and isinstance(msg["message"], str)
        assert len(msg["message"]) <= 400
        return
    check_command(command)


def check_command(c: Command) -> None:
    assert c.action in FIELDS
    assert (
        c.id is None
        or (isinstance(c.id, int) and not isinstance(c.id, bool) and abs(c.id) < MAX_INT_ID)
        or (isinstance(c.id, str) and len(c.id) <= MAX_ID_LENGTH)
    )
    if c.action in ("subscribe", "unsubscribe"):
        assert 0 < len(c.symbols) <= LIMIT and len(set(c.symbols)) == len(c.symbols)
        assert all(is_valid_symbol(s) for s in c.symbols)
    else:
        assert c.symbols == []
    assert set(c.since) <= set(c.symbols) and set(c.epochs) <= set(c.symbols)
    assert all(type(v) is int and 0 <= v < 2**63 for v in c.since.values())
    assert all(isinstance(v, str) and len(v) <= MAX_EPOCH_LENGTH for v in c.epochs.values())
    assert c.batch_ms is None or 0 <= c.batch_ms <= MAX_BATCH_MS
    assert 0 <= c.snapshot <= MAX_SNAPSHOT
    assert c.max_rate is None or 0 < c.max_rate <= MAX_RATE
    if c.action == "auth":
        assert 0 < len(c.token) <= 200


@settings(FUZZ, max_examples=2500)
@given(command_dict())
def test_fuzz_parser_commands(raw):
    CASES["parser"] += 1
    check_parsed(json_text(raw))
    # The decoded value, without the JSON round trip, too.
    try:
        check_command(parse_command(raw, symbol_limit=LIMIT))
    except ProtocolError as exc:
        assert exc.code in CODES


@settings(FUZZ, max_examples=2500)
@given(st.one_of(frame_text, st.text(), st.none()))
def test_fuzz_parser_frames(text):
    CASES["parser"] += 1
    check_parsed(text)


# --- the consumer, through the real ASGI app

ORIGIN = (b"origin", b"http://127.0.0.1:8000")
HOST = (b"host", b"127.0.0.1:8000")
REPLY_TYPES = {"subscribed", "unsubscribed", "subscriptions", "pong", "snapshot", "error",
               "tick", "ticks", "reset", "authenticated"}  # fmt: skip
CONSUMER_CODES = CODES

frame = st.one_of(
    frame_text,
    frame_text,
    st.binary(max_size=64).map(lambda b: ("bytes", b)),
    st.sampled_from(REAL).map(
        lambda s: json.dumps({"action": "subscribe", "symbols": [s], "snapshot": 0})
    ),
    st.lists(st.sampled_from(REAL), min_size=1, max_size=4, unique=True).map(
        lambda ss: json.dumps({"action": "unsubscribe", "symbols": ss})
    ),
    st.just('{"action": "list", "id": "L"}'),
    st.text(max_size=40).map(lambda t: json.dumps({"action": "auth", "token": t or "x"})),
)


class Session:
    """One fuzzed connection: what it was told it holds, checked at every ``list``."""

    def __init__(self, comm: WebsocketCommunicator) -> None:
        self.comm = comm
        self.held: set[str] = set()
        self.replies = 0
        self.ends = 0

    def check(self, msg: dict) -> None:
        self.replies += 1
        kind = msg.get("type")
        assert kind in REPLY_TYPES, msg
        if kind == "subscribed":
            self.held |= set(msg["symbols"])
        elif kind == "unsubscribed":
            self.held -= set(msg["symbols"])
        elif kind == "subscriptions":
            assert msg["symbols"] == sorted(self.held), (msg, self.held)
        elif kind == "error":
            assert msg["code"] in CONSUMER_CODES, msg
            assert isinstance(msg["message"], str) and msg["message"]
            if msg["code"] == "unavailable":
                self.held -= set(msg.get("symbols") or [])
            if msg["code"] == "rate_limited":
                assert msg["dropped"] >= 1

    async def read(self, timeout: float) -> dict | None:
        out = await self.comm.receive_output(timeout)
        if out["type"] == "websocket.close":
            raise AssertionError(f"closed: {out}")
        assert out["type"] == "websocket.send" and out.get("text") is not None, out
        msg = json.loads(out["text"])
        self.check(msg)
        return msg

    async def drain(self) -> None:
        """Read until the answer to a final ping (resent if the bucket dropped it)."""
        for attempt in range(20):
            self.ends += 1
            end_id = f"end-{self.ends}"
            await self.comm.send_to(text_data=json.dumps({"action": "ping", "id": end_id}))
            while True:
                # receive_nothing, not a timeout on receive_output: that would cancel the app.
                if await self.comm.receive_nothing(0.3 if attempt < 19 else 5.0):
                    break  # dropped by the rate limit: ping again
                msg = await self.read(1.0)
                if msg.get("type") == "pong" and msg.get("id") == end_id:
                    return
        raise AssertionError("the consumer stopped answering")

    async def send(self, item) -> None:
        # Straight to the app: send_to() refuses empty frames, which a client may send.
        if isinstance(item, tuple):
            await self.comm.send_input({"type": "websocket.receive", "bytes": item[1]})
        else:
            await self.comm.send_input({"type": "websocket.receive", "text": item})


async def run_session(frames: list, *, list_every: int = 4) -> None:
    comm = WebsocketCommunicator(application(), "/ws/prices/", headers=[ORIGIN, HOST])
    comm.scope["client"] = ("10.200.0.1", 4000)
    connected, _ = await comm.connect(timeout=5)
    assert connected
    session = Session(comm)
    try:
        for i, item in enumerate(frames):
            CASES["frames"] += 1
            await session.send(item)
            if i % list_every == list_every - 1:
                await comm.send_to(text_data='{"action": "list", "id": "check"}')
        await comm.send_to(text_data='{"action": "list", "id": "final"}')
        await session.drain()
        assert await comm.receive_nothing(0.01)
    finally:
        await comm.disconnect(timeout=5)
    # Nothing was raised inside the app.
    assert comm.future.done() and comm.future.exception() is None


def application():
    from tickerproject.asgi import application

    return application


pytestmark_consumer = pytest.mark.usefixtures("async_symbols", "clean_redis", "close_hub")


@pytestmark_consumer
@settings(FUZZ, max_examples=300)
@given(st.lists(frame, min_size=1, max_size=10))
async def test_fuzz_consumer_frames(frames):
    CASES["consumer"] += 1
    await run_session(frames)


@pytestmark_consumer
@settings(FUZZ, max_examples=60)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(REAL).map(
                lambda s: json.dumps({"action": "subscribe", "symbols": [s], "snapshot": 0})
            ),
            st.sampled_from(REAL).map(
                lambda s: json.dumps({"action": "unsubscribe", "symbols": [s]})
            ),
            st.just('{"action": "list"}'),
            st.just('{"action": "auth", "token": "tk_not-a-token"}'),
            st.just('{"action": "ping"}'),
        ),
        min_size=20,
        max_size=80,
    )
)
async def test_fuzz_consumer_storms_past_the_rate_limit(frames):
    """Interleaved subscribe/unsubscribe/list/auth storms, many past a small bucket."""
    CASES["consumer"] += 1
    with override_settings(WS_COMMAND_RATE=500.0, WS_COMMAND_BURST=8):
        await run_session(frames, list_every=5)


@pytestmark_consumer
@settings(FUZZ, max_examples=120)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["subscribe", "unsubscribe"]),
            st.lists(st.sampled_from([*REAL, "NOPE"]), min_size=1, max_size=6),
        ),
        min_size=1,
        max_size=15,
    )
)
async def test_fuzz_consumer_list_tells_the_truth(steps):
    CASES["consumer"] += 1
    frames = [json.dumps({"action": a, "symbols": ss, "snapshot": 0}) for a, ss in steps]
    await run_session(frames, list_every=1)


def test_fuzz_case_count(request, capsys):
    ran = [
        item
        for item in request.session.items
        if item.module is request.module and item.name.startswith("test_fuzz_")
        and item.name != "test_fuzz_case_count"
    ]  # fmt: skip
    if len(ran) < FUZZ_TESTS:
        pytest.skip("counts only when every fuzz test of this file runs")
    total = CASES["parser"] + CASES["consumer"]
    with capsys.disabled():
        print(
            f"\nfuzz: {total} generated cases ({CASES['parser']} parser, "
            f"{CASES['consumer']} consumer sessions with {CASES['frames']} frames)"
        )
    assert total >= 5000, CASES
