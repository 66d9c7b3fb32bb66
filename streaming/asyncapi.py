"""The AsyncAPI 3.0 document of the WebSocket protocol v1, served at /api/asyncapi.json.

One place for the machine-readable contract of docs/protocol.md: every command the
server takes, every message it sends (with a JSON Schema each), every error code and
close code. The codes, actions, fields and bounds come from streaming.protocol (their
one home) and the settings, so the document cannot drift from the parser; the message
shapes are checked against what the server really sends by tests/asyncapi_contract.py
(every frame the real-stack tests receive) and tests/test_asyncapi*.py.

A new server message type or field must be added here, or those tests fail.
"""

from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse

from markets.book import CHECKSUM_LEVELS, DEFAULT_DEPTH
from markets.book import MAX_DEPTH as MAX_BOOK_DEPTH
from markets.symbols import SYMBOL_MAX_LENGTH

from .protocol import (
    ACTIONS,
    FIELDS,
    MAX_BATCH_MS,
    MAX_EPOCH_LENGTH,
    MAX_ID_LENGTH,
    MAX_INT_ID,
    MAX_RATE,
    MAX_SNAPSHOT,
    MAX_TOKEN_LENGTH,
    PROTOCOL_VERSION,
    CloseCode,
    ErrorCode,
    Stream,
)

PATH = "/ws/prices/"
REF = "#/components/schemas/"

ERROR_CODES: dict[ErrorCode, str] = {
    ErrorCode.BAD_JSON: "The frame is not valid (strict) JSON.",
    ErrorCode.BAD_REQUEST: (
        "Not a JSON object; a missing, ill-typed or out-of-bounds field; a field the action "
        "does not take; nesting deeper than 4; max_rate without mode latest or the book "
        "stream; an unknown stream; depth without the book stream; since without the ticks "
        "stream; a since/epochs key not in symbols; or a binary frame."
    ),
    ErrorCode.UNKNOWN_ACTION: "action is not one of " + ", ".join(ACTIONS) + ".",
    ErrorCode.UNKNOWN_SYMBOL: (
        "Some symbols are not known or not active (listed in symbols); the known ones of "
        "the same command were subscribed."
    ),
    ErrorCode.TOO_MANY_SYMBOLS: (
        "More than MAX_SYMBOLS_PER_CONNECTION symbols in the command (duplicates counted) "
        "or held by the connection, or more than WS_MAX_SUBSCRIPTIONS_PER_USER across the "
        "user's connections. Nothing of that command is subscribed."
    ),
    ErrorCode.MESSAGE_TOO_LARGE: "The frame is over WS_MAX_MESSAGE_BYTES.",
    ErrorCode.UNAVAILABLE: (
        "The server could not reach its market-data store while subscribing; the symbols "
        "listed were not subscribed. Subscribe again shortly."
    ),
    ErrorCode.RATE_LIMITED: (
        "Commands were dropped past the per-connection rate limit: dropped counts them, "
        "retry_after_ms says when a token is back; id is null; at most one a second."
    ),
    ErrorCode.UNAUTHORIZED: (
        "The auth command's token (or the handshake's token or session) is unknown, "
        "revoked or expired. After a handshake token the connection is closed with 4401."
    ),
    ErrorCode.FORBIDDEN: (
        "Some symbols are restricted and the connection's user may not see them (listed "
        "in symbols); the rest of the command was served."
    ),
}

CLOSE_CODES: dict[int, dict[str, str]] = {
    1000: {"meaning": "Normal closure.", "client": "Nothing to do."},
    CloseCode.POLICY_VIOLATION: {
        "meaning": "Kept exceeding the command rate limit for WS_FLOOD_CLOSE_SECONDS.",
        "client": "Fix the client; reconnect no sooner than after a pause.",
    },
    CloseCode.MESSAGE_TOO_BIG: {
        "meaning": "A frame over WS_MAX_MESSAGE_BYTES, refused by the ASGI server itself.",
        "client": "Send smaller commands.",
    },
    1011: {
        "meaning": "The server failed to deliver to this connection (a bug; logged once).",
        "client": "Reconnect and resume with since/epochs.",
    },
    1012: {
        "meaning": "The server is restarting.",
        "client": "Reconnect with backoff and resume with since/epochs.",
    },
    CloseCode.TRY_AGAIN_LATER: {
        "meaning": "A connection cap was reached (per address or per process); the reason "
        "says which. Sent right after the handshake.",
        "client": "Reconnect with backoff.",
    },
    CloseCode.SLOW_CONSUMER: {
        "meaning": "Slow consumer: an all-mode connection fell behind (outbox over "
        "OUTBOX_MAX_BYTES, or a live tick older than MAX_TICK_AGE_MS), or a connection did "
        "not answer a keepalive ping within WS_PING_TIMEOUT (reason 'keepalive ping "
        "timeout'). Sent at once, behind only what the socket holds; a client that has not "
        "read up to it within WS_CLOSE_TIMEOUT has its connection reset instead.",
        "client": "Reconnect at once and resume with since/epochs: nothing is lost while "
        "history reaches back.",
    },
    CloseCode.UNAUTHORIZED: {
        "meaning": "WS_REQUIRE_AUTH is on and another command than auth came first, or none "
        "within AUTH_TIMEOUT_SECONDS; or the handshake's token or session was not usable.",
        "client": "Authenticate (Bearer header, session, or auth first); do not retry blindly.",
    },
    CloseCode.FORBIDDEN: {
        "meaning": "The token or session was revoked or expired, or the user deactivated.",
        "client": "Get a new token; do not retry with the old one.",
    },
}


def _obj(required: list[str], properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": False,
        **extra,
    }


def _const(value: str) -> dict[str, Any]:
    return {"type": "string", "const": value}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF + name}


def _schemas() -> dict[str, Any]:
    limit = settings.MAX_SYMBOLS_PER_CONNECTION
    tick_fields = {
        "symbol": _ref("Symbol"),
        "seq": {"type": "integer", "minimum": 1, "description": "1, 2, 3, ... per symbol."},
        "ts": {"type": "integer", "minimum": 0, "description": "Creation time, epoch ms UTC."},
        "price": {"type": "number"},
        "bid": {"type": "number"},
        "ask": {"type": "number"},
        "size": {"type": "number", "minimum": 0},
    }
    level = {
        "type": "array",
        # JSON Schema draft 7 (AsyncAPI 3.0's default): a tuple of two decimals.
        "items": [_ref("Decimal"), _ref("Decimal")],
        "additionalItems": False,
        "minItems": 2,
        "maxItems": 2,
        "description": "[price, size]: decimal strings exactly as the source gave them.",
    }
    return {
        "Decimal": {
            "type": "string",
            "pattern": r"^[0-9]+(\.[0-9]+)?$",
            "description": "A non-negative decimal as a string (no exponent, no sign).",
            "examples": ["97000.50", "0"],
        },
        "BookLevel": level,
        "BookSide": {
            "type": "array",
            "maxItems": MAX_BOOK_DEPTH,
            "items": _ref("BookLevel"),
        },
        "BookChanges": {
            "type": "array",
            "maxItems": 2 * MAX_BOOK_DEPTH,
            "items": _ref("BookLevel"),
            "description": "At most depth deletions of levels that left the window and "
            "depth levels that entered or changed.",
        },
        "Checksum": {
            "type": "integer",
            "minimum": 0,
            "maximum": 2**32 - 1,
            "description": "Unsigned CRC32 of the UTF-8 string joining with ':' the first "
            f"{CHECKSUM_LEVELS} levels of the client's book after applying this message, "
            "interleaved b1p:b1s:a1p:a1s:b2p:... (where one side is shorter, only the other "
            "side's pair for that level): OKX's books checksum.",
        },
        "Streams": {
            "type": "array",
            "minItems": 1,
            "items": {"type": "string", "enum": [str(s) for s in Stream]},
        },
        "Symbol": {
            "type": "string",
            "pattern": f"^[A-Z0-9._-]{{1,{SYMBOL_MAX_LENGTH}}}$",
            "examples": ["BTC-USD"],
        },
        "Symbols": {
            "type": "array",
            "minItems": 1,
            "maxItems": limit,
            "items": _ref("Symbol"),
            "description": f"At most MAX_SYMBOLS_PER_CONNECTION ({limit}) entries, "
            "counted before duplicates are removed.",
        },
        "CommandId": {
            "description": "Echoed in the answer and in any error the command causes.",
            "oneOf": [
                {"type": "null"},
                {"type": "integer", "minimum": -MAX_INT_ID + 1, "maximum": MAX_INT_ID - 1},
                {"type": "string", "maxLength": MAX_ID_LENGTH},
            ],
        },
        "Tick": _obj(
            ["type", *tick_fields],
            {
                "type": _const("tick"),
                **tick_fields,
                "skipped": {
                    "type": "integer",
                    "minimum": 1,
                    "description": 'mode "latest" only: this tick replaced k others; '
                    "seq = previous seq + k + 1.",
                },
                "side": {
                    "type": "string",
                    "enum": ["buy", "sell"],
                    "description": "The aggressor of the trade (buy: a buyer took an ask), "
                    "only when the source knows it.",
                },
            },
        ),
    }


def _commands() -> dict[str, dict[str, Any]]:
    id_field = _ref("CommandId")
    props: dict[str, dict[str, Any]] = {
        "subscribe": {
            "symbols": _ref("Symbols"),
            "since": {
                "type": "object",
                "description": "Resume: replay every tick with seq > since, then go live; "
                "no snapshot for those symbols. Keys must be in symbols.",
                "propertyNames": _ref("Symbol"),
                "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
            },
            "epochs": {
                "type": "object",
                "description": "The epoch (from the last snapshot) the since numbers belong to.",
                "propertyNames": _ref("Symbol"),
                "additionalProperties": {"type": "string", "maxLength": MAX_EPOCH_LENGTH},
            },
            "snapshot": {
                "type": "integer",
                "minimum": 0,
                "maximum": MAX_SNAPSHOT,
                "default": MAX_SNAPSHOT,
                "description": "How many recent ticks the snapshot holds.",
            },
            "mode": {
                "type": "string",
                "enum": ["all", "latest"],
                "default": "all",
                "description": "all: every tick, gap-free (4008 when behind); latest: only "
                "the newest per symbol, skipped counted.",
            },
            "max_rate": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": MAX_RATE,
                "description": 'With mode "latest": at most this many ticks/s per symbol; with '
                "the book stream (any mode): at most this many book_update/s per symbol.",
            },
            "streams": {
                **_ref("Streams"),
                "description": 'What to subscribe to: "ticks" (tick, ticks, snapshot) and/or '
                '"book" (book, then book_update). Default ["ticks"].',
                "default": ["ticks"],
            },
            "depth": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_BOOK_DEPTH,
                "default": DEFAULT_DEPTH,
                "description": "Book stream only: the client's book is exactly the top depth "
                "levels per side.",
            },
            "batch_ms": {
                "type": "integer",
                "minimum": 0,
                "maximum": MAX_BATCH_MS,
                "description": "Accept ticks frames, sent at most every batch_ms ms (0: no "
                "timer). Applies to the whole connection.",
            },
        },
        "unsubscribe": {
            "symbols": _ref("Symbols"),
            "streams": {
                **_ref("Streams"),
                "description": 'Which streams to drop (default ["ticks"]).',
                "default": ["ticks"],
            },
        },
        "list": {},
        "ping": {},
        "auth": {"token": {"type": "string", "minLength": 1, "maxLength": MAX_TOKEN_LENGTH}},
    }
    required = {"subscribe": ["symbols"], "unsubscribe": ["symbols"], "auth": ["token"]}
    summaries = {
        "subscribe": "Subscribe to symbols; answered by subscribed, then a snapshot per newly "
        "subscribed symbol (or the replay after since).",
        "unsubscribe": "Unsubscribe; answered by unsubscribed, after which no tick of those "
        "symbols follows.",
        "list": "Ask for the connection's subscriptions; answered by subscriptions.",
        "ping": "Ask for a pong with the server's time.",
        "auth": "Authenticate with an API token (for clients that cannot set the "
        "Authorization header); answered by authenticated or error unauthorized.",
    }
    examples = {
        "subscribe": {
            "action": "subscribe",
            "symbols": ["BTC-USD"],
            "id": 1,
            "batch_ms": 50,
            "streams": ["ticks", "book"],
            "depth": 10,
        },
        "unsubscribe": {"action": "unsubscribe", "symbols": ["BTC-USD"], "id": 2},
        "list": {"action": "list", "id": 3},
        "ping": {"action": "ping", "id": 4},
        "auth": {"action": "auth", "token": "tk_...", "id": 5},
    }
    commands = {}
    for action in ACTIONS:
        properties = {"action": _const(action), "id": id_field, **props[action]}
        assert set(properties) == set(FIELDS[action]), action  # the parser's fields
        commands[action] = {
            "name": action,
            "title": f"{action} command",
            "summary": summaries[action],
            "payload": _obj(["action", *required.get(action, [])], properties),
            "examples": [{"payload": examples[action]}],
        }
    return commands


def _server_messages() -> dict[str, dict[str, Any]]:
    id_field = _ref("CommandId")
    codes = [str(code) for code in ErrorCode]
    messages: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
        "tick": (
            "One price update of a subscribed symbol, in seq order per symbol, without "
            "gaps or duplicates.",
            _ref("Tick"),
            {
                "type": "tick",
                "symbol": "BTC-USD",
                "seq": 1042,
                "ts": 1764072000123,
                "price": 97000.5,
                "bid": 96999.5,
                "ask": 97001.0,
                "size": 0.25,
            },
        ),
        "ticks": (
            "Ticks in one frame, in order; only for a connection that set batch_ms.",
            _obj(
                ["type", "ticks"],
                {"type": _const("ticks"), "ticks": {"type": "array", "items": _ref("Tick")}},
            ),
            {"type": "ticks", "ticks": []},
        ),
        "snapshot": (
            "Recent history of a newly subscribed symbol (ascending seq); the first live "
            "tick after it has seq = the last one here + 1.",
            _obj(
                ["type", "symbol", "epoch", "ticks"],
                {
                    "type": _const("snapshot"),
                    "symbol": _ref("Symbol"),
                    "epoch": {
                        "type": "string",
                        "maxLength": MAX_EPOCH_LENGTH,
                        "description": "Send it back in epochs with since when resuming.",
                    },
                    "ticks": {"type": "array", "maxItems": MAX_SNAPSHOT, "items": _ref("Tick")},
                },
            ),
            {"type": "snapshot", "symbol": "BTC-USD", "epoch": "1764072000000", "ticks": []},
        ),
        "reset": (
            "The symbol's series cannot be continued; drop what you hold for it: a "
            "snapshot follows at once.",
            _obj(
                ["type", "symbol", "reason"],
                {
                    "type": _const("reset"),
                    "symbol": _ref("Symbol"),
                    "reason": {"type": "string", "enum": ["history_truncated", "epoch_changed"]},
                },
            ),
            {"type": "reset", "symbol": "BTC-USD", "reason": "history_truncated"},
        ),
        "subscribed": (
            "The answer to subscribe: the symbols now held (unknown and forbidden ones "
            "follow in errors with the same id).",
            _obj(
                ["type", "id", "symbols"],
                {
                    "type": _const("subscribed"),
                    "id": id_field,
                    "symbols": {"type": "array", "items": _ref("Symbol")},
                    "streams": {
                        **_ref("Streams"),
                        "description": "Echoed when the command named streams other than "
                        '["ticks"].',
                    },
                },
            ),
            {"type": "subscribed", "id": 1, "symbols": ["BTC-USD"]},
        ),
        "unsubscribed": (
            "The answer to unsubscribe; or, with a reason and id null, subscriptions the "
            "server dropped on its own (forbidden: the user lost the right).",
            _obj(
                ["type", "id", "symbols"],
                {
                    "type": _const("unsubscribed"),
                    "id": id_field,
                    "symbols": {"type": "array", "items": _ref("Symbol")},
                    "reason": {"type": "string", "enum": ["forbidden"]},
                    "streams": {
                        **_ref("Streams"),
                        "description": "Echoed when the command named streams other than "
                        '["ticks"]. A forbidden drop removes every stream.',
                    },
                },
            ),
            {"type": "unsubscribed", "id": None, "symbols": ["AAPL"], "reason": "forbidden"},
        ),
        "subscriptions": (
            "The answer to list: the connection's symbols (any stream), sorted; the streams "
            "held per symbol, and the depth of each book held.",
            _obj(
                ["type", "id", "symbols"],
                {
                    "type": _const("subscriptions"),
                    "id": id_field,
                    "symbols": {"type": "array", "items": _ref("Symbol")},
                    "streams": {
                        "type": "object",
                        "propertyNames": _ref("Symbol"),
                        "additionalProperties": _ref("Streams"),
                    },
                    "depth": {
                        "type": "object",
                        "propertyNames": _ref("Symbol"),
                        "additionalProperties": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_BOOK_DEPTH,
                        },
                    },
                },
            ),
            {
                "type": "subscriptions",
                "id": 3,
                "symbols": ["BTC-USD"],
                "streams": {"BTC-USD": ["ticks", "book"]},
                "depth": {"BTC-USD": 10},
            },
        ),
        "book": (
            "A book snapshot: sent after subscribed for a newly subscribed book stream, and "
            "again whenever the book cannot be continued (a new epoch) or an update waited "
            "longer than MAX_TICK_AGE_MS for a full socket. Replace what you hold for the "
            "symbol.",
            _obj(
                ["type", "symbol", "seq", "epoch", "ts", "depth", "bids", "asks", "checksum"],
                {
                    "type": _const("book"),
                    "symbol": _ref("Symbol"),
                    "seq": {
                        "type": "integer",
                        "minimum": 0,
                        "description": "The book's own counter (not the tick seq): the next "
                        "book_update's prev_seq.",
                    },
                    "epoch": {"type": "string", "maxLength": MAX_EPOCH_LENGTH},
                    "ts": {"type": "integer", "minimum": 0},
                    "depth": {"type": "integer", "minimum": 1, "maximum": MAX_BOOK_DEPTH},
                    "bids": {**_ref("BookSide"), "description": "Best (highest) first."},
                    "asks": {**_ref("BookSide"), "description": "Best (lowest) first."},
                    "checksum": _ref("Checksum"),
                    "available": {
                        "type": "boolean",
                        "description": "false: the symbol's source has no book (no levels; "
                        "see reason). A book that appears later comes as a new snapshot.",
                    },
                    "reason": {"type": "string"},
                },
            ),
            {
                "type": "book",
                "symbol": "BTC-USD",
                "seq": 5120,
                "epoch": "1764072000000-1",
                "ts": 1764072000123,
                "depth": 10,
                "bids": [["97000.50", "1.25"]],
                "asks": [["97001.00", "0.40"]],
                "checksum": 3316470081,
                "available": True,
            },
        ),
        "book_update": (
            "Changes that take the client's book from prev_seq (the seq of the last book "
            'message it received for the symbol) to seq: absolute sizes, "0" deletes; '
            "levels entering or leaving the top depth included. Check prev_seq and the "
            "checksum; on a mismatch, subscribe again.",
            _obj(
                ["type", "symbol", "seq", "prev_seq", "ts", "bids", "asks", "checksum"],
                {
                    "type": _const("book_update"),
                    "symbol": _ref("Symbol"),
                    "seq": {"type": "integer", "minimum": 1},
                    "prev_seq": {"type": "integer", "minimum": 0},
                    "ts": {"type": "integer", "minimum": 0},
                    "bids": {**_ref("BookChanges"), "description": "Highest first."},
                    "asks": {**_ref("BookChanges"), "description": "Lowest first."},
                    "checksum": _ref("Checksum"),
                },
            ),
            {
                "type": "book_update",
                "symbol": "BTC-USD",
                "seq": 5123,
                "prev_seq": 5120,
                "ts": 1764072000456,
                "bids": [["97000.50", "0"]],
                "asks": [["97001.50", "2.00"]],
                "checksum": 1834420012,
            },
        ),
        "pong": (
            "The answer to ping, with the server's time (epoch ms).",
            _obj(
                ["type", "id", "ts"],
                {"type": _const("pong"), "id": id_field, "ts": {"type": "integer"}},
            ),
            {"type": "pong", "id": 4, "ts": 1764072000456},
        ),
        "authenticated": (
            "The answer to auth: the connection now acts for this user.",
            _obj(
                ["type", "id", "user"],
                {"type": _const("authenticated"), "id": id_field, "user": {"type": "string"}},
            ),
            {"type": "authenticated", "id": 5, "user": "alice"},
        ),
        "alert": (
            "A price alert of the connection's user fired (alerts/; docs/dashboard.md): sent "
            "to each of the user's open connections, whatever they subscribed to.",
            _obj(
                "type event_id alert_id symbol direction threshold price seq ts fired_at".split(),
                {
                    "type": _const("alert"),
                    "event_id": {"type": "integer", "description": "Id in the alert history."},
                    "alert_id": {
                        "type": ["integer", "null"],
                        "description": "The alert rule (null once the rule was deleted).",
                    },
                    "symbol": _ref("Symbol"),
                    "direction": {"type": "string", "enum": ["above", "below"]},
                    "threshold": {"type": "number"},
                    "price": {"type": "number", "description": "The crossing tick's price."},
                    "seq": {"type": "integer", "minimum": 1},
                    "ts": {"type": "integer", "description": "The crossing tick's ts (ms)."},
                    "fired_at": {"type": "integer", "description": "Epoch ms."},
                },
            ),
            {
                "type": "alert",
                "event_id": 12,
                "alert_id": 3,
                "symbol": "BTC-USD",
                "direction": "above",
                "threshold": 100000.0,
                "price": 100000.5,
                "seq": 1043,
                "ts": 1764072000223,
                "fired_at": 1764072000251,
            },
        ),
        "error": (
            "A command could not be served (the connection stays open). x-error-codes "
            "describes each code.",
            _obj(
                ["type", "id", "code", "message"],
                {
                    "type": _const("error"),
                    "id": id_field,
                    "code": {"type": "string", "enum": codes},
                    "message": {"type": "string"},
                    "symbols": {"type": "array", "items": {"type": "string"}},
                    "dropped": {"type": "integer", "minimum": 1},
                    "retry_after_ms": {"type": "integer", "minimum": 0},
                },
                allOf=[
                    {
                        "if": {"properties": {"code": {"const": "rate_limited"}}},
                        "then": {"required": ["dropped", "retry_after_ms"]},
                        "else": {
                            "not": {
                                "anyOf": [
                                    {"required": ["dropped"]},
                                    {"required": ["retry_after_ms"]},
                                ]
                            }
                        },
                    },
                    {
                        "if": {"properties": {"code": {"enum": ["unknown_symbol", "forbidden"]}}},
                        "then": {"required": ["symbols"]},
                    },
                ],
            ),
            {
                "type": "error",
                "id": 7,
                "code": "unknown_symbol",
                "message": "unknown symbol(s): NOPE",
                "symbols": ["NOPE"],
            },
        ),
    }
    built = {
        name: {
            "name": name,
            "title": f"{name} message",
            "summary": summary,
            "payload": payload,
            "examples": [{"payload": example}],
        }
        for name, (summary, payload, example) in messages.items()
    }
    built["error"]["x-error-codes"] = {str(code): text for code, text in ERROR_CODES.items()}
    return built


REPLIES = {
    "subscribe": [
        "subscribed",
        "snapshot",
        "reset",
        "tick",
        "ticks",
        "book",
        "book_update",
        "error",
    ],
    "unsubscribe": ["unsubscribed", "error"],
    "list": ["subscriptions", "error"],
    "ping": ["pong", "error"],
    "auth": ["authenticated", "error"],
}


def build_document(server_url: str | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document; ``server_url`` (``host:port``) names the server."""
    channel = "#/channels/prices"

    def msg(name: str, prefix: str) -> dict[str, str]:
        return {"$ref": f"{channel}/messages/{prefix}{name}"}

    commands = _commands()
    server_messages = _server_messages()
    channel_messages = {f"command.{n}": {"$ref": f"#/components/messages/command.{n}"}
                        for n in commands} | {
        f"server.{n}": {"$ref": f"#/components/messages/server.{n}"} for n in server_messages
    }  # fmt: skip
    operations: dict[str, Any] = {}
    for action in commands:
        operations[action] = {
            "action": "receive",
            "channel": {"$ref": channel},
            "title": f"{action}",
            "summary": commands[action]["summary"],
            "messages": [msg(action, "command.")],
            "reply": {
                "channel": {"$ref": channel},
                "messages": [msg(n, "server.") for n in REPLIES[action]],
            },
        }
    operations["deliverTicks"] = {
        "action": "send",
        "channel": {"$ref": channel},
        "title": "Deliver ticks",
        "summary": "Ticks of the subscribed symbols as they are published, per the mode of "
        "each subscription; a reset and a fresh snapshot when a series cannot be continued.",
        "messages": [msg(n, "server.") for n in ("tick", "ticks", "snapshot", "reset")],
    }
    operations["deliverBooks"] = {
        "action": "send",
        "channel": {"$ref": channel},
        "title": "Deliver books",
        "summary": "Order books of the symbols subscribed with the book stream: a book "
        "snapshot, then conflated book_update messages (at most max_rate a second, never "
        "older than MAX_TICK_AGE_MS); a new book snapshot when continuity breaks.",
        "messages": [msg(n, "server.") for n in ("book", "book_update")],
    }
    operations["dropSubscriptions"] = {
        "action": "send",
        "channel": {"$ref": channel},
        "title": "Drop subscriptions",
        "summary": "unsubscribed with a reason when the user loses the right to symbols "
        "(within ENTITLEMENT_RECHECK_SECONDS); rate_limited errors, at most one a second.",
        "messages": [msg("unsubscribed", "server."), msg("error", "server.")],
    }
    operations["deliverAlerts"] = {
        "action": "send",
        "channel": {"$ref": channel},
        "title": "Deliver alerts",
        "summary": "A signed-in user's fired price alerts, to each of their open connections.",
        "messages": [msg("alert", "server.")],
    }
    host = server_url or "127.0.0.1:8000"
    return {
        "asyncapi": "3.0.0",
        "id": "urn:ticker:ws:prices",
        "info": {
            "title": "ticker price stream",
            "version": str(PROTOCOL_VERSION),
            "description": (
                "The WebSocket protocol v1 of ticker (docs/protocol.md). Every frame is one "
                "JSON object in a text frame. The server receives commands (action) and "
                "sends messages (type). Programs must send an Origin header naming an "
                "allowed host, and may authenticate with Authorization: Bearer <token> on "
                "the handshake, a session cookie, or the auth command. Resume after a drop "
                "with since/epochs in subscribe. Error codes: x-error-codes of the error "
                "message; close codes: x-close-codes of the channel. A Python client: "
                "client/ (ticker_client)."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "ticker": {
                "host": host,
                "protocol": "ws",
                "description": "The web process (uvicorn by default); wss behind TLS.",
                "security": [{"$ref": "#/components/securitySchemes/bearer"}],
            }
        },
        "channels": {
            "prices": {
                "address": PATH,
                "title": "Price stream",
                "description": "One connection per client; subscriptions, modes and resume "
                "state are per connection.",
                "messages": channel_messages,
                "bindings": {
                    "ws": {
                        "method": "GET",
                        "headers": {
                            "type": "object",
                            "required": ["Origin"],
                            "properties": {
                                "Origin": {
                                    "type": "string",
                                    "description": "The page's origin, scheme, host and "
                                    "port: the server's own (http(s)://<Host>) or one of "
                                    "CSRF_TRUSTED_ORIGINS; otherwise the handshake is "
                                    "refused with 403.",
                                },
                                "Authorization": {
                                    "type": "string",
                                    "pattern": "^Bearer .+$",
                                    "description": "An API token; a token is never read "
                                    "from the URL.",
                                },
                            },
                        },
                        "bindingVersion": "0.1.0",
                    }
                },
                "x-close-codes": {str(code): info for code, info in CLOSE_CODES.items()},
            }
        },
        "operations": operations,
        "components": {
            "schemas": _schemas(),
            "messages": {f"command.{n}": m for n, m in commands.items()}
            | {f"server.{n}": m for n, m in server_messages.items()},
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token (manage.py issue_token USERNAME), on the "
                    "handshake; or send it in the auth command.",
                }
            },
        },
    }


def asyncapi_json(request: HttpRequest) -> JsonResponse:
    """GET /api/asyncapi.json: the document, naming the host it was asked from."""
    return JsonResponse(build_document(request.get_host()), json_dumps_params={"indent": 2})
