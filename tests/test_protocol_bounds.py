"""Every field of every command is bounded (streaming.protocol; docs/protocol.md, "Bounds")."""

import json

import pytest

from streaming.protocol import (
    MAX_DEPTH,
    MAX_MESSAGE_BYTES,
    ErrorCode,
    ProtocolError,
    decode_frame,
    parse_command,
)

LIMIT = 50


def refused(raw, code: ErrorCode = ErrorCode.BAD_REQUEST) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_command(raw, symbol_limit=LIMIT)
    assert info.value.code == code, info.value.message
    return info.value


def frame_refused(text, code: ErrorCode) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_frame(text)
    assert info.value.code == code, info.value.message
    return info.value


def test_integer_ids_are_bounded_to_what_a_javascript_number_holds():
    for ok in (0, 1, -1, 2**53 - 1, -(2**53) + 1):
        assert parse_command({"action": "ping", "id": ok}, symbol_limit=LIMIT).id == ok
    for bad in (2**53, -(2**53), 2**64, 10**4000, 1.5, True, [], {}):
        refused({"action": "ping", "id": bad})


def test_string_ids_are_at_most_64_characters():
    assert parse_command({"action": "list", "id": "x" * 64}, symbol_limit=LIMIT).id == "x" * 64
    err = refused({"action": "list", "id": "x" * 65})
    assert err.id is None  # an unreadable id is not echoed


def test_since_is_from_0_to_2_pow_63_minus_1():
    base = {"action": "subscribe", "symbols": ["BTC-USD"]}
    ok = parse_command({**base, "since": {"BTC-USD": 2**63 - 1}}, symbol_limit=LIMIT)
    assert ok.since == {"BTC-USD": 2**63 - 1}
    for bad in (2**63, 2**64, -1, 1.0, "5", None, True):
        refused({**base, "since": {"BTC-USD": bad}, "id": 3})


def test_epochs_batch_ms_snapshot_max_rate_are_bounded():
    base = {"action": "subscribe", "symbols": ["BTC-USD"]}
    refused({**base, "epochs": {"BTC-USD": "9" * 65}})
    refused({**base, "epochs": {"BTC-USD": 5}})
    refused({**base, "epochs": ["BTC-USD"]})
    for bad in (-1, 1001, 1.5, "50", True, 2**70):
        refused({**base, "batch_ms": bad})
    for bad in (-1, 301, 2.0, "3", False, 2**70):
        refused({**base, "snapshot": bad})
    for bad in (0, -1, 1000.5, float("inf"), float("nan"), "2", True):
        refused({**base, "mode": "latest", "max_rate": bad})
    refused({**base, "mode": ["latest"]})
    refused({**base, "mode": {"a": 1}})


def test_symbol_lists_are_bounded_before_dedupe():
    same = ["BTC-USD"] * (LIMIT + 1)
    err = refused({"action": "subscribe", "symbols": same, "id": 1}, ErrorCode.TOO_MANY_SYMBOLS)
    assert err.id == 1
    refused({"action": "unsubscribe", "symbols": same}, ErrorCode.TOO_MANY_SYMBOLS)
    ok = parse_command(
        {"action": "unsubscribe", "symbols": ["BTC-USD"] * LIMIT}, symbol_limit=LIMIT
    )
    assert ok.symbols == ["BTC-USD"]
    refused({"action": "subscribe", "symbols": []})
    refused({"action": "subscribe", "symbols": "BTC-USD"})
    refused({"action": "subscribe", "symbols": [["BTC-USD"]]})
    refused({"action": "subscribe", "symbols": ["btc-usd"]})
    refused({"action": "subscribe", "symbols": ["A" * 21]})


def test_unknown_fields_are_refused_and_named():
    err = refused({"action": "subscribe", "symbols": ["BTC-USD"], "snapshots": 0, "id": 2})
    assert "snapshots" in err.message and err.id == 2
    refused({"action": "ping", "symbols": ["BTC-USD"]})
    refused({"action": "list", "token": "x"})
    refused({"action": "unsubscribe", "symbols": ["BTC-USD"], "since": {}})
    # A hostile key is shown cut short.
    err = refused({"action": "ping", "k" * 10_000: 1})
    assert len(err.message) <= 300


def test_every_action_accepts_exactly_its_documented_fields():
    full = {
        "subscribe": {
            "symbols": ["BTC-USD"], "since": {"BTC-USD": 1}, "epochs": {"BTC-USD": "1"},
            "batch_ms": 0, "mode": "latest", "max_rate": 2, "snapshot": 0,
        },
        "unsubscribe": {"symbols": ["BTC-USD"]},
        "list": {},
        "ping": {},
        "auth": {"token": "t"},
    }  # fmt: skip
    for action, fields in full.items():
        command = parse_command({"action": action, "id": 9, **fields}, symbol_limit=LIMIT)
        assert command.action == action and command.id == 9


def test_nesting_deeper_than_the_bound_is_a_bad_request_however_deep():
    ok = {"action": "subscribe", "symbols": ["BTC-USD"], "since": {"BTC-USD": 1}}
    assert decode_frame(json.dumps(ok)) == ok
    assert decode_frame("[" * MAX_DEPTH + "]" * MAX_DEPTH) == eval(
        "[" * MAX_DEPTH + "]" * MAX_DEPTH
    )
    for depth in (MAX_DEPTH + 1, 50, 500, 900):
        frame_refused("[" * depth + "]" * depth, ErrorCode.BAD_REQUEST)
        frame_refused('{"a":' * depth + "1" + "}" * depth, ErrorCode.BAD_REQUEST)
    # Deeper than the JSON decoder recurses, or unbalanced: not valid JSON.
    for text in ("[" * 1000, "[" * 100_000 + "]" * 100_000, "{" * 20_000):
        if len(text) <= MAX_MESSAGE_BYTES:
            frame_refused(text, ErrorCode.BAD_JSON)


def test_frames_that_are_not_strict_json_are_bad_json():
    for text in ("", "nope", "{", '{"action": "ping",}', "NaN", '{"id": Infinity}', "-Infinity",
                 "1" * 5000, "'ping'", "\x00", '{"action": "ping"} x'):  # fmt: skip
        frame_refused(text, ErrorCode.BAD_JSON)


def test_binary_and_oversized_frames_are_refused_before_decoding():
    frame_refused(None, ErrorCode.BAD_REQUEST)
    frame_refused(" " * (MAX_MESSAGE_BYTES + 1), ErrorCode.MESSAGE_TOO_LARGE)
    # Counted in UTF-8 bytes: 3 bytes each.
    frame_refused("€" * (MAX_MESSAGE_BYTES // 3 + 1), ErrorCode.MESSAGE_TOO_LARGE)
    # A lone surrogate (never off the wire, but possible in a test client) does not raise.
    frame_refused("\ud800" * (MAX_MESSAGE_BYTES // 3 + 1), ErrorCode.MESSAGE_TOO_LARGE)
    frame_refused('"\ud800', ErrorCode.BAD_JSON)


def test_huge_numbers_anywhere_are_refused_without_raising_anything_else():
    for value in (10**300, -(10**300), 1e308, 2**1000):
        for field in ("id", "batch_ms", "snapshot", "max_rate"):
            raw = {"action": "subscribe", "symbols": ["BTC-USD"], field: value}
            if field == "max_rate":
                raw["mode"] = "latest"
            refused(raw)
    assert decode_frame("1e999") == float("inf")  # a float overflow is a number, refused later
    refused({"action": "subscribe", "symbols": ["BTC-USD"], "snapshot": float("inf")})
