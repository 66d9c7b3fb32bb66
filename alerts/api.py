"""Price alerts on the REST API: /api/alerts/ (a ninja Router mounted by tickerproject.urls).

Always authenticated (a Bearer token, or a session with X-CSRFToken on unsafe methods):
alerts are per user, and a user sees and edits only their own. An alert on a symbol its
owner may no longer see cannot be set or edited (403, as for any read of that symbol);
the server switches it off with ``off_reason: "forbidden"`` (alerts.services), and it
may still be read and deleted.
"""

import json
from decimal import Decimal
from typing import Annotated, Literal

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse
from ninja import Path, Query, Router, Schema, Status
from ninja.errors import HttpError
from pydantic import Field, StringConstraints

from accounts.auth import USER_AUTH
from markets import keys, quotes
from markets.api import ForbiddenSymbols, UnknownSymbol
from markets.entitlements import forbidden_tickers
from markets.redis import redis_for
from markets.schemas import ErrorOut
from markets.symbols import SYMBOL_MAX_LENGTH, SYMBOL_PATTERN
from markets.ticks import Tick

from . import services
from .delivery import event_fields
from .models import AlertEvent, PriceAlert

router = Router(auth=USER_AUTH, tags=["alerts"])

Ticker = Annotated[
    str, StringConstraints(pattern=f"^{SYMBOL_PATTERN.pattern}$", max_length=SYMBOL_MAX_LENGTH)
]
DirectionName = Literal["above", "below"]
# Positive and below 10**15: it fits the column (24 digits, 8 decimals) whatever its scale.
# Strict: a JSON number, never a numeric string (the schema says number, so does the check).
Price = Annotated[float, Field(gt=0, lt=1e15, allow_inf_nan=False, strict=True, examples=[100000])]
Flag = Annotated[bool, Field(strict=True)]
# No NUL: PostgreSQL text cannot hold one.
Note = Annotated[str, Field(max_length=200, pattern=r"^[^\x00]*$")]
AlertId = Annotated[int, Path(ge=1, le=2**53, description="The alert's id.")]


class AlertIn(Schema):
    symbol: Ticker = Field(examples=["BTC-USD"])
    direction: DirectionName = Field(
        description="'above': fires when a tick's price reaches X or more after being below "
        "it; 'below': fires when it drops under X after being at or above it."
    )
    price: Price = Field(description="The level X.")
    repeat: Flag = Field(False, description="Fire at every crossing; else once, then off.")
    note: Note = ""


class AlertPatch(Schema):
    direction: DirectionName | None = None
    price: Price | None = None
    repeat: Flag | None = None
    note: Note | None = None
    active: Flag | None = Field(None, description="Switch it off, or on again (re-armed).")


class AlertOut(Schema):
    id: int
    symbol: str
    direction: DirectionName
    price: float
    repeat: bool
    note: str
    active: bool = Field(description="False once a one-shot alert fired, or switched off.")
    off_reason: Literal["forbidden"] | None = Field(
        description="'forbidden': the server switched it off because you may no longer see "
        "its symbol; it cannot be edited until the right is back. Null otherwise."
    )
    fired_count: int
    last_fired: int | None = Field(description="Epoch ms (UTC); null: never fired.")
    created: int
    updated: int


class AlertEventOut(Schema):
    event_id: int
    alert_id: int | None = Field(description="Null once the alert was deleted.")
    symbol: str
    direction: DirectionName
    threshold: float = Field(description="The alert's price when it fired.")
    price: float = Field(description="Price of the tick that crossed it.")
    seq: int = Field(description="seq of that tick.")
    ts: int = Field(description="ts of that tick, epoch ms (UTC).")
    fired_at: int = Field(description="When the evaluator stored it, epoch ms (UTC).")


ERRORS = {401: ErrorOut, 403: ErrorOut}
NOT_FOUND = {404: ErrorOut}


class AlertNotFound(HttpError):
    code = "not_found"

    def __init__(self, alert_id: int) -> None:
        super().__init__(404, f"no alert {alert_id}")


def _ms(moment) -> int | None:
    return int(moment.timestamp() * 1000) if moment is not None else None


def _out(alert: PriceAlert) -> dict:
    return {
        "id": alert.pk,
        "symbol": alert.symbol,
        "direction": alert.direction,
        "price": float(alert.price),
        "repeat": alert.repeat,
        "note": alert.note,
        "active": alert.active,
        "off_reason": alert.off_reason or None,
        "fired_count": alert.fired_count,
        "last_fired": _ms(alert.last_fired),
        "created": _ms(alert.created),
        "updated": _ms(alert.updated),
    }


def _decimal(price: float) -> Decimal:
    return Decimal(repr(price)).quantize(Decimal("0.00000001"))


async def _check_symbol(request: HttpRequest, ticker: str) -> None:
    """404 for an unknown or inactive symbol, 403 for one the caller may not see."""
    if await quotes.active_symbol(ticker=ticker) is None:
        raise UnknownSymbol(ticker)
    await _check_entitled(request, ticker)


async def _check_entitled(request: HttpRequest, ticker: str) -> None:
    """403 for a symbol the caller may not see (markets.entitlements)."""
    forbidden = await sync_to_async(forbidden_tickers)(user=request.auth, tickers=[ticker])
    if forbidden:
        raise ForbiddenSymbols(forbidden, signed_in=True)


async def _last_tick(symbol: str) -> services.LastTick:
    """The symbol's newest tick and its epoch, read together."""
    pipe = redis_for(symbol).pipeline(transaction=True)
    pipe.xrevrange(keys.history_key(symbol), count=1)
    pipe.get(keys.epoch_key(symbol))
    entries, epoch = await pipe.execute()
    if not entries:
        return services.LastTick()
    tick = Tick.from_stream_entry(symbol, entries[0][0], entries[0][1])
    epoch = epoch.decode() if isinstance(epoch, bytes) else (epoch or "")
    return services.LastTick(epoch=epoch, seq=tick.seq, price=tick.price)


def _own(request: HttpRequest, alert_id: int) -> PriceAlert:
    alert = PriceAlert.objects.filter(user=request.auth, pk=alert_id).first()
    if alert is None:
        raise AlertNotFound(alert_id)
    return alert


@router.get("/", response={200: list[AlertOut], **ERRORS})
async def list_alerts(request: HttpRequest):
    """The caller's alerts, by symbol and price."""

    def read() -> list[dict]:
        return [_out(a) for a in PriceAlert.objects.filter(user=request.auth)]

    return await sync_to_async(read)()


# 400: a body that is not JSON at all; 422: JSON that is not a valid alert.
@router.post("/", response={201: AlertOut, 400: ErrorOut, 404: ErrorOut, 422: ErrorOut, **ERRORS})
async def create_alert(request: HttpRequest, body: AlertIn):
    """Set an alert on an active symbol the caller may see. It is armed from the symbol's
    last tick: only later ticks can fire it."""
    await _check_symbol(request, body.symbol)
    last = await _last_tick(body.symbol)
    try:
        alert = await sync_to_async(services.create_alert)(
            user=request.auth, symbol=body.symbol, direction=body.direction,
            price=_decimal(body.price), repeat=body.repeat, note=body.note, last=last,
        )  # fmt: skip
    except services.InvalidAlert as exc:
        raise HttpError(422, str(exc)) from exc
    return Status(201, _out(alert))


@router.get("/history", response={200: list[AlertEventOut], 422: ErrorOut, **ERRORS})
async def alert_history(
    request: HttpRequest,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    after_id: Annotated[
        int, Query(ge=0, le=2**62, description="Only events with event_id > this.")
    ] = 0,
):
    """The caller's fired alerts, newest first."""

    def read() -> list[dict]:
        events = AlertEvent.objects.filter(user=request.auth, pk__gt=after_id)
        return [event_fields(e) for e in events.order_by("-pk")[:limit]]

    return await sync_to_async(read)()


@router.get("/{alert_id}", response={200: AlertOut, **NOT_FOUND, 422: ErrorOut, **ERRORS})
async def get_alert(request: HttpRequest, alert_id: AlertId):
    """One of the caller's alerts."""
    return _out(await sync_to_async(_own)(request, alert_id))


@router.patch(
    "/{alert_id}", response={200: AlertOut, 400: ErrorOut, **NOT_FOUND, 422: ErrorOut, **ERRORS}
)
async def update_alert(request: HttpRequest, alert_id: AlertId, body: AlertPatch):
    """Change an alert. A new direction or price, or switching it on, re-arms it from the
    symbol's last tick. 403 while the caller may not see its symbol: a new level would
    tell them where the price is."""
    if not isinstance(json.loads(request.body or b"{}"), dict):
        # All its fields are optional, so ninja would take any JSON value as "no change".
        raise HttpError(422, "the body must be a JSON object")
    alert = await sync_to_async(_own)(request, alert_id)
    await _check_entitled(request, alert.symbol)
    changes = body.dict(exclude_unset=True, exclude_none=True)
    if "price" in changes:
        changes["price"] = _decimal(changes["price"])
    last = await _last_tick(alert.symbol)
    alert = await sync_to_async(services.update_alert)(alert, changes=changes, last=last)
    return _out(alert)


@router.delete("/{alert_id}", response={204: None, **NOT_FOUND, 422: ErrorOut, **ERRORS})
async def delete_alert(request: HttpRequest, alert_id: AlertId):
    """Delete an alert; its events stay in the history."""
    alert = await sync_to_async(_own)(request, alert_id)
    await sync_to_async(alert.delete)()
    return HttpResponse(status=204)
