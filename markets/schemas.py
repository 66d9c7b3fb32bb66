"""Pydantic schemas of the REST API (markets.api); they define its OpenAPI schema."""

from typing import Annotated, Any, Literal

from ninja import Schema
from pydantic import Field

from .candles import INTERVALS
from .models import FeedSource
from .selectors import SOURCE_STATES

IntervalName = Literal["1s", "1m", "5m", "1h"]
if set(IntervalName.__args__) != set(INTERVALS):  # the schema must name every interval
    raise ImportError("IntervalName is out of step with markets.candles.INTERVALS")

AssetClassName = Literal["crypto", "equity", "fx"]

FeedSourceName = Literal["simulated", "replay", "coinbase", "binance"]
if set(FeedSourceName.__args__) != set(FeedSource.values):
    raise ImportError("FeedSourceName is out of step with markets.models.FeedSource")

SourceStateName = Literal["up", "starting", "down", "ended", "unknown"]
if set(SourceStateName.__args__) != set(SOURCE_STATES):
    raise ImportError("SourceStateName is out of step with markets.selectors.SOURCE_STATES")


class ErrorOut(Schema):
    code: str = Field(
        description=(
            "Machine-readable: unknown_symbol, bad_request, unauthorized, forbidden, csrf_failed."
        )
    )
    message: str = Field(description="Human-readable explanation.")
    detail: list[dict] | None = Field(
        None, description="Per-parameter validation errors, when there are any."
    )
    symbols: list[str] | None = Field(
        None, description="With forbidden: the restricted symbols the caller may not see."
    )


class SymbolOut(Schema):
    ticker: str
    name: str
    asset_class: AssetClassName
    quote_currency: str
    tick_size: float
    last_price: float | None = Field(description="Price of the last tick; null before any.")
    bid: float | None
    ask: float | None
    last_seq: int | None
    last_ts: int | None = Field(description="Epoch ms (UTC) of the last tick.")
    session_open: float | None = Field(
        description="First price of the current UTC day (the day's first 1h candle's open)."
    )
    change_pct: float | None = Field(
        description="(last_price - session_open) / session_open * 100; null when unknown."
    )
    live: bool = Field(description="Whether the last tick is at most FEED_LIVE_SECONDS old.")
    source: FeedSourceName = Field(
        description="Where its ticks come from: the feed source configured for it (docs/feeds.md)."
    )
    source_state: SourceStateName = Field(
        description="That source's state, as its producer reported it within the last "
        "5 s: up; starting (not connected yet); down (disconnected, reconnecting, failed, "
        "a missing file); ended (a replay that reached the end of its file); unknown (no "
        "fresh report of this source: no worker runs it, or a change of source is not "
        "applied yet). The price is live only when this is up and live is true."
    )
    source_error: str | None = Field(
        description="The latest problem the source reported, while it is starting, down or "
        "ended; null otherwise."
    )


class TickOut(Schema):
    symbol: str
    seq: int
    ts: int = Field(description="Creation time, epoch ms (UTC).")
    price: float
    bid: float
    ask: float
    size: float
    side: Literal["buy", "sell"] | None = Field(
        None, description="The aggressor of the trade, when the source knows it."
    )


class TicksOut(Schema):
    symbol: str
    ticks: list[TickOut] = Field(description="Ascending by seq, all with seq > after_seq.")
    has_more: bool = Field(description="More ticks follow; ask again with the last seq.")


# [price, size]: a list, not a tuple (ninja's schema of a tuple is not valid OpenAPI 3.1).
BookLevel = Annotated[list[str], Field(min_length=2, max_length=2)]


class BookOut(Schema):
    """The same shape as the WebSocket ``book`` message (docs/protocol.md)."""

    type: Literal["book"] = "book"
    symbol: str
    seq: int = Field(
        description="The book's own counter per symbol (not the tick seq); 0 before any."
    )
    epoch: str = Field(description="Changes whenever the book's continuity broke.")
    ts: int = Field(description="When the producer published the book's newest change (ms).")
    depth: int = Field(description="The depth asked for: at most this many levels per side.")
    bids: list[BookLevel] = Field(
        description="[price, size] decimal strings as the source gave them; highest first."
    )
    asks: list[BookLevel] = Field(description="[price, size]; lowest first.")
    checksum: int = Field(
        description="CRC32 (unsigned) of b1p:b1s:a1p:a1s:... over the first 10 levels "
        "of these bids and asks (OKX's books checksum)."
    )
    available: bool = Field(description="false: the symbol has no book (no levels; see reason).")
    reason: str | None = Field(
        None,
        description='Only when available is false: "no_book" when no book was ever '
        "published for the symbol (no producer runs it yet), else why its source keeps "
        'none, e.g. "the replay source has no order book".',
    )


class CandleOut(Schema):
    start: int = Field(description="Bucket start, epoch ms (UTC), inclusive.")
    end: int = Field(description="Bucket end, epoch ms (UTC), exclusive.")
    open: float
    high: float
    low: float
    close: float
    volume: float = Field(description="Sum of the ticks' sizes.")
    ticks: int = Field(description="Number of ticks in the candle.")
    first_seq: int
    last_seq: int
    closed: bool = Field(description="False for the current candle, which still changes.")


class CandlesOut(Schema):
    symbol: str
    interval: IntervalName
    candles: list[CandleOut] = Field(description="Ascending by start, at most one per start.")


class CheckOut(Schema):
    ok: bool
    latency_ms: float | None
    error: str | None


class ReceiveLoopOut(Schema):
    state: Literal["running", "recovering", "stopped", "idle"] = Field(
        description="idle: no subscriber has started it yet in this process."
    )
    since_ms: int | None


class LoopOut(Schema):
    state: Literal["running", "failing", "restarting", "stopped", "idle"] = Field(
        description="failing: its last round raised; stopped: its task ended while it has "
        "work; idle: no work (no connection to check)."
    )
    period_s: float = Field(description="How often it runs a round.")
    last_round_age_s: float | None = Field(
        description="Seconds since its last successful round; null before the first."
    )
    failures: int = Field(description="Rounds failed in a row.")
    restarts: int = Field(description="Times its supervisor restarted it.")
    error: str | None = Field(description="Its last failure, while failing or stopped.")


class SymbolHealthOut(Schema):
    last_tick_age_s: float | None = Field(description="Seconds since its last published tick.")
    source: dict[str, Any] | None = Field(
        description="Its feed source: name, state (up, starting, down, ended, unknown), producer, "
        "counters (see docs/operations.md)."
    )
    subscribers: int = Field(description="Subscriptions to it in this web process.")
    received_age_s: float | None = Field(
        description="Seconds since this process last received a live tick of it."
    )
    delivery: Literal["ok", "lagging", "idle"] = Field(
        description="lagging: published but not arriving here; idle: no subscriber here."
    )


class HealthBriefOut(Schema):
    """What /api/health/ tells anyone: the verdict alone (markets.api.get_health)."""

    status: Literal["ok", "degraded"]


class HealthOut(Schema):
    """The full report, for staff and for the callers /metrics admits."""

    status: Literal["ok", "degraded"]
    redis: CheckOut
    database: CheckOut
    feed: dict[str, float | None] = Field(
        description="Seconds since each active symbol's last tick; null if it never ticked."
    )
    stale: list[str] = Field(
        description="Active symbols with no tick in the last FEED_STALE_SECONDS."
    )
    problems: list[str] = Field(
        default_factory=list, description="Why the status is degraded; empty when ok."
    )
    receive_loop: ReceiveLoopOut | None = Field(
        default=None, description="This web process's fan-out receive loop."
    )
    loops: dict[str, LoopOut] = Field(
        default_factory=dict,
        description="This web process's supervised background loops by name: the "
        "entitlement guard (guard) once a connection has started it.",
    )
    symbols: dict[str, SymbolHealthOut] = Field(
        default_factory=dict, description="Per active symbol: its feed and its delivery here."
    )
