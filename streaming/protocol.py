"""Protocol v1: parsing client commands and shaping server messages (docs/protocol.md)."""

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from django.conf import settings

from markets.book import DEFAULT_DEPTH
from markets.book import MAX_DEPTH as MAX_BOOK_DEPTH
from markets.symbols import is_valid_symbol

# The one limit, owned by settings: tickerproject/serve.py gives the ASGI server the same.
MAX_MESSAGE_BYTES = settings.WS_MAX_MESSAGE_BYTES
PROTOCOL_VERSION = 1
MAX_SNAPSHOT = 300
MAX_RATE = 1000.0


class CloseCode:
    """WebSocket close codes the server sends (docs/protocol.md)."""

    # The connection fell behind in "all" mode: its outbox passed OUTBOX_MAX_BYTES, or a
    # live tick waited more than MAX_TICK_AGE_MS. Reconnect and resume with "since".
    SLOW_CONSUMER = 4008
    # WS_REQUIRE_AUTH is on and the connection sent another command than "auth" first,
    # or none within AUTH_TIMEOUT_SECONDS.
    UNAUTHORIZED = 4401
    # The token the connection authenticated with was revoked or expired, or its user
    # was deactivated. (A right to one symbol lost: "unsubscribed" with a reason.)
    FORBIDDEN = 4403
    # Standard codes: a policy violation (kept flooding past the command rate limit),
    # a frame too big (refused by the server itself), and "try again later" (refused
    # by a connection limit).
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    TRY_AGAIN_LATER = 1013


class Mode(StrEnum):
    """How a subscription delivers ticks."""

    ALL = "all"  # every tick, in seq order, gap-free; 4008 when the client falls behind
    LATEST = "latest"  # only the newest tick per symbol; skipped ones are counted


class Stream(StrEnum):
    """What a subscription to a symbol carries (issue 21)."""

    TICKS = "ticks"  # trades/prices: tick, ticks, snapshot (every client before streams)
    BOOK = "book"  # the order book: a book snapshot, then conflated book_update


DEFAULT_STREAMS = (Stream.TICKS,)


class ErrorCode(StrEnum):
    BAD_JSON = "bad_json"
    BAD_REQUEST = "bad_request"
    UNKNOWN_ACTION = "unknown_action"
    UNKNOWN_SYMBOL = "unknown_symbol"
    TOO_MANY_SYMBOLS = "too_many_symbols"
    MESSAGE_TOO_LARGE = "message_too_large"
    UNAVAILABLE = "unavailable"
    UNAUTHORIZED = "unauthorized"  # an "auth" command with a token that is not usable
    FORBIDDEN = "forbidden"  # restricted symbols the connection's user may not see
    RATE_LIMITED = "rate_limited"  # commands past the per-connection rate limit


class ProtocolError(Exception):
    """A command the server answers with an error message; the connection stays open."""

    def __init__(
        self, code: ErrorCode, message: str, *, id: Any = None, symbols: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = id
        self.symbols = symbols

    def as_message(self) -> dict[str, Any]:
        return error_message(self.code, self.message, id=self.id, symbols=self.symbols)


def error_message(
    code: ErrorCode, message: str, *, id: Any = None, symbols: list[str] | None = None
) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "error", "id": id, "code": str(code), "message": message}
    if symbols is not None:
        msg["symbols"] = symbols
    return msg


ACTIONS = ("subscribe", "unsubscribe", "list", "ping", "auth")
# Longer than any token accounts.services issues.
MAX_TOKEN_LENGTH = 200


MAX_BATCH_MS = 1000

# --- Bounds of hostile input (docs/protocol.md, "Bounds").
# An integer id stays exactly representable in a JavaScript number: |id| < 2**53.
MAX_INT_ID = 2**53
MAX_ID_LENGTH = 64
MAX_EPOCH_LENGTH = 64
# JSON containers nested deeper than this are refused: a command is an object holding
# lists and objects of scalars (depth 2).
MAX_DEPTH = 4
# The fields each action may carry; any other key is refused (a typo such as
# "snapshots" must not be silently ignored).
COMMON_FIELDS = frozenset({"action", "id"})
FIELDS = {
    "subscribe": COMMON_FIELDS
    | {
        "symbols",
        "since",
        "epochs",
        "batch_ms",
        "mode",
        "max_rate",
        "snapshot",
        "streams",
        "depth",
    },
    "unsubscribe": COMMON_FIELDS | {"symbols", "streams"},
    "list": COMMON_FIELDS,
    "ping": COMMON_FIELDS,
    "auth": COMMON_FIELDS | {"token"},
}


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_frame(text: str | None) -> Any:
    """The JSON value of one client frame, checked for size and depth; raises ProtocolError.

    Binary frames, frames over MAX_MESSAGE_BYTES, text that is not strict JSON (NaN and
    Infinity included), numbers past Python's digit limit and nesting past MAX_DEPTH
    all end here, before parse_command looks at a field.
    """
    if text is None:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "binary frames are not accepted")
    # Lone surrogates cannot come off the wire (servers decode strict UTF-8), but must
    # not raise here either.
    if len(text) > MAX_MESSAGE_BYTES or (
        len(text.encode("utf-8", "surrogatepass")) > MAX_MESSAGE_BYTES
    ):
        raise ProtocolError(
            ErrorCode.MESSAGE_TOO_LARGE, f"a command may be at most {MAX_MESSAGE_BYTES} bytes"
        )
    try:
        raw = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise ProtocolError(ErrorCode.BAD_JSON, "the frame is not valid JSON") from None
    if _deeper_than(raw, MAX_DEPTH):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"JSON nested deeper than {MAX_DEPTH} levels is refused"
        )
    return raw


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether containers nest more than ``limit`` deep (iterative: no recursion)."""
    if not isinstance(value, dict | list):
        return False
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


@dataclass(frozen=True)
class Command:
    action: str
    id: Any = None
    symbols: list[str] = field(default_factory=list)
    # subscribe only: resume points and their epochs, and the batching window.
    since: dict[str, int] = field(default_factory=dict)
    epochs: dict[str, str] = field(default_factory=dict)
    batch_ms: int | None = None
    mode: Mode = Mode.ALL
    max_rate: float | None = None
    snapshot: int = MAX_SNAPSHOT
    # subscribe and unsubscribe: which streams of the symbols; subscribe: the book's depth.
    streams: tuple[Stream, ...] = DEFAULT_STREAMS
    depth: int = DEFAULT_DEPTH
    # auth only: the API token's secret.
    token: str = ""


def _parse_id(raw: dict) -> Any:
    value = raw.get("id")
    if value is None:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and -MAX_INT_ID < value < MAX_INT_ID:
        return value
    if isinstance(value, str) and len(value) <= MAX_ID_LENGTH:
        return value
    raise ProtocolError(
        ErrorCode.BAD_REQUEST,
        f"'id' must be an integer below 2**53 in size or a string of at most "
        f"{MAX_ID_LENGTH} characters",
    )


def _parse_symbols(raw: dict, *, id: Any, limit: int) -> list[str]:
    symbols = raw.get("symbols")
    if not isinstance(symbols, list) or not symbols:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, "'symbols' must be a non-empty list of strings", id=id
        )
    if len(symbols) > limit:
        # Counted before dedupe: a long list costs the same to check however it repeats.
        raise ProtocolError(
            ErrorCode.TOO_MANY_SYMBOLS,
            f"{len(symbols)} symbols named; a command may name at most {limit}",
            id=id,
        )
    bad = [s for s in symbols if not is_valid_symbol(s)]
    if bad:
        # Echo only a type name for non-strings: the payload is untrusted.
        shown = [s if isinstance(s, str) else type(s).__name__ for s in bad[:5]]
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"symbols must be 1-20 characters of A-Z 0-9 . - _; got {shown!r}"[:300],
            id=id,
        )
    unique = list(dict.fromkeys(symbols))
    if len(unique) > limit:
        raise ProtocolError(
            ErrorCode.TOO_MANY_SYMBOLS,
            f"{len(unique)} symbols requested; the limit per connection is {limit}",
            id=id,
        )
    return unique


def parse_command(raw: Any, *, symbol_limit: int) -> Command:
    """Validate one decoded client message; raises ProtocolError."""
    if not isinstance(raw, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a command must be a JSON object")
    id = _parse_id(raw)
    action = raw.get("action")
    if not isinstance(action, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "'action' must be a string", id=id)
    if action not in ACTIONS:
        raise ProtocolError(
            ErrorCode.UNKNOWN_ACTION,
            f"unknown action {action[:40]!r}; expected one of {', '.join(ACTIONS)}",
            id=id,
        )
    extra = raw.keys() - FIELDS[action]
    if extra:
        shown = sorted(k[:20] for k in extra)[:5]
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"unknown field(s) for {action!r}: {shown!r}"[:300],
            id=id,
        )
    if action == "unsubscribe":
        symbols = _parse_symbols(raw, id=id, limit=symbol_limit)
        return Command(action, id, symbols, streams=_parse_streams(raw, id=id))
    if action == "subscribe":
        symbols = _parse_symbols(raw, id=id, limit=symbol_limit)
        streams = _parse_streams(raw, id=id)
        since = _parse_symbol_map(raw, "since", symbols, id=id, kind=int)
        if since and Stream.TICKS not in streams:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, "'since' needs \"ticks\" in 'streams'", id=id
            )
        return Command(
            action,
            id,
            symbols,
            since=since,
            epochs=_parse_symbol_map(raw, "epochs", symbols, id=id, kind=str),
            batch_ms=_parse_batch_ms(raw, id=id),
            streams=streams,
            depth=_parse_depth(raw, streams, id=id),
            **_parse_delivery(raw, streams, id=id),
        )
    if action == "auth":
        token = raw.get("token")
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_LENGTH:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"'token' must be a string of 1 to {MAX_TOKEN_LENGTH} characters",
                id=id,
            )
        return Command(action, id, token=token)
    return Command(action, id)


def _parse_symbol_map(raw: dict, name: str, symbols: list[str], *, id: Any, kind: type) -> dict:
    value = raw.get(name)
    if value is None:
        return {}
    what = (
        "integers from 0 to 2**63 - 1"
        if kind is int
        else f"strings of at most {MAX_EPOCH_LENGTH} characters"
    )
    if not isinstance(value, dict):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"'{name}' must map subscribed symbols to {what}", id=id
        )
    for key, item in value.items():
        if key not in symbols:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"'{name}' names {key[:20]!r}, which is not in 'symbols'",
                id=id,
            )
        ok = (
            # Redis stream ids are 64-bit: a larger since must not reach it.
            isinstance(item, int) and not isinstance(item, bool) and 0 <= item < 2**63
            if kind is int
            else isinstance(item, str) and len(item) <= MAX_EPOCH_LENGTH
        )
        if not ok:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"'{name}' values must be {what}", id=id)
    return dict(value)


def _parse_batch_ms(raw: dict, *, id: Any) -> int | None:
    value = raw.get("batch_ms")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_BATCH_MS:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"'batch_ms' must be an integer from 0 to {MAX_BATCH_MS}",
            id=id,
        )
    return value


def _parse_streams(raw: dict, *, id: Any) -> tuple[Stream, ...]:
    """``streams``: a non-empty list of known stream names, in the order given, once each."""
    value = raw.get("streams")
    if value is None:
        return DEFAULT_STREAMS
    known = [s.value for s in Stream]
    if not isinstance(value, list) or not value or len(value) > len(known) * 2:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"'streams' must be a non-empty list of {' and '.join(map(repr, known))}",
            id=id,
        )
    unknown = [s for s in value if s not in known]
    if unknown:
        shown = [s[:20] if isinstance(s, str) else type(s).__name__ for s in unknown[:3]]
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"unknown stream(s) {shown!r}; streams are {', '.join(known)}",
            id=id,
        )
    return tuple(Stream(s) for s in dict.fromkeys(value))


def _parse_depth(raw: dict, streams: tuple[Stream, ...], *, id: Any) -> int:
    value = raw.get("depth")
    if value is None:
        return DEFAULT_DEPTH
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BOOK_DEPTH:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"'depth' must be an integer from 1 to {MAX_BOOK_DEPTH}",
            id=id,
        )
    if Stream.BOOK not in streams:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "'depth' needs \"book\" in 'streams'", id=id)
    return value


def _parse_delivery(raw: dict, streams: tuple[Stream, ...], *, id: Any) -> dict[str, Any]:
    """``mode``, ``max_rate`` and ``snapshot`` of a subscribe command."""
    mode = raw.get("mode", Mode.ALL.value)
    if mode not in (Mode.ALL.value, Mode.LATEST.value):
        raise ProtocolError(ErrorCode.BAD_REQUEST, '\'mode\' must be "all" or "latest"', id=id)
    max_rate = raw.get("max_rate")
    if max_rate is not None:
        if (
            isinstance(max_rate, bool)
            or not isinstance(max_rate, int | float)
            or not 0 < max_rate <= MAX_RATE
        ):
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"'max_rate' must be a number above 0 and at most {MAX_RATE:g}",
                id=id,
            )
        if mode != Mode.LATEST and Stream.BOOK not in streams:
            # Books conflate whatever the mode: max_rate spaces their updates.
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                '\'max_rate\' needs "mode": "latest" or "book" in \'streams\'',
                id=id,
            )
    snapshot = raw.get("snapshot", MAX_SNAPSHOT)
    if (
        isinstance(snapshot, bool)
        or not isinstance(snapshot, int)
        or not 0 <= snapshot <= MAX_SNAPSHOT
    ):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"'snapshot' must be an integer from 0 to {MAX_SNAPSHOT}",
            id=id,
        )
    return {
        "mode": Mode(mode),
        "max_rate": float(max_rate) if max_rate else None,
        "snapshot": snapshot,
    }
