"""The REST API (django-ninja), mounted at /api/; schema at /api/openapi.json, docs at /api/docs.

Views stay thin: reads live in markets.quotes, markets.selectors, markets.candles and
markets.history.
Every limit comes from settings (the "REST API" block), nowhere else.

Every endpoint but /api/health/ takes a Bearer token or a session (accounts.auth), and
anonymous callers too while WS_REQUIRE_AUTH is off. A restricted symbol the caller may
not see (markets.entitlements) answers 403 and is left out of the symbol list.
/api/health/ answers anyone with its verdict alone, and its full report to staff and to
the callers /metrics admits.
"""

import asyncio
import logging
from typing import Annotated, Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest, HttpResponse
from django.views.debug import get_exception_reporter_class
from ninja import NinjaAPI, Path, Query, Status
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.openapi.docs import Swagger

from accounts.auth import API_AUTH, SCHEME_NAMES
from accounts.selectors import bearer_secret, token_for_secret
from telemetry.access import operator_allowed

from . import books, health, history, quotes, selectors
from . import candles as candle_reads
from .book import DEFAULT_DEPTH, MAX_DEPTH, checksum
from .candles import INTERVALS, now_ms
from .entitlements import forbidden_tickers
from .models import Symbol
from .schemas import (
    AssetClassName,
    BookOut,
    CandleOut,
    CandlesOut,
    ErrorOut,
    HealthBriefOut,
    HealthOut,
    IntervalName,
    SymbolOut,
    TickOut,
    TicksOut,
)
from .symbols import SYMBOL_MAX_LENGTH, SYMBOL_PATTERN


class TickerAPI(NinjaAPI):
    def get_openapi_schema(self, **kwargs: Any) -> Any:
        """The schema, saying whether anonymous calls are allowed as the settings are now.

        Operations open to anonymous callers carry the AnonymousAccess scheme (see
        accounts.auth); OpenAPI spells "auth optional" as an empty requirement, so it
        becomes ``{}`` while WS_REQUIRE_AUTH is off and is dropped while it is on.
        """
        schema = super().get_openapi_schema(**kwargs)
        anonymous = SCHEME_NAMES["anonymous"]
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                security = operation.get("security") if isinstance(operation, dict) else None
                if not security or not any(anonymous in req for req in security):
                    continue
                kept = [req for req in security if anonymous not in req]
                if not settings.WS_REQUIRE_AUTH:
                    kept.append({})
                operation["security"] = kept
        schema.get("components", {}).get("securitySchemes", {}).pop(anonymous, None)
        return schema


api = TickerAPI(
    title="ticker API",
    version="1",
    description=(
        "Symbols with live quotes, recent ticks, OHLCV candles and health. "
        "Times are epoch milliseconds (UTC). Send an API token as "
        "`Authorization: Bearer <token>`, or use the dashboard's session; while "
        "WS_REQUIRE_AUTH is off anonymous calls are served too (public symbols only). "
        "/api/health/ and this schema are always open (health's full report: staff, "
        "and the addresses /metrics admits). "
        "The WebSocket price stream (/ws/prices/) is described by its "
        "[AsyncAPI document](/api/asyncapi.json)."
    ),
    # Swagger UI comes from ninja's bundled static files ("ninja" is an installed app);
    # the validator badge would call an outside service, so it is off.
    docs=Swagger(settings={"validatorUrl": None}),
    urls_namespace="api",
    auth=API_AUTH,
)

SymbolPath = Annotated[
    str,
    Path(
        description="Ticker, e.g. BTC-USD.",
        examples=["BTC-USD"],
        pattern=f"^{SYMBOL_PATTERN.pattern}$",
        max_length=SYMBOL_MAX_LENGTH,
    ),
]
# Epoch ms from 1970 up to the end of year 9999, so a datetime can always be built.
MAX_EPOCH_MS = 253_402_300_799_999
AUTH_ERRORS = {401: ErrorOut, 403: ErrorOut}
ERRORS = {**AUTH_ERRORS, 404: ErrorOut, 422: ErrorOut}


class UnknownSymbol(Exception):
    def __init__(self, ticker: str) -> None:
        super().__init__(ticker)
        self.ticker = ticker


class ForbiddenSymbols(Exception):
    """The caller may not see these restricted symbols (markets.entitlements)."""

    def __init__(self, tickers: list[str], *, signed_in: bool) -> None:
        super().__init__(", ".join(tickers))
        self.tickers = tickers
        self.signed_in = signed_in


def _error(request: HttpRequest, status: int, code: str, message: str, **extra) -> HttpResponse:
    return api.create_response(request, {"code": code, "message": message, **extra}, status=status)


@api.exception_handler(UnknownSymbol)
def unknown_symbol(request: HttpRequest, exc: UnknownSymbol) -> HttpResponse:
    """Called when a view names a symbol that is not an active one."""
    return _error(request, 404, "unknown_symbol", f"unknown symbol: {exc.ticker}")


@api.exception_handler(ValidationError)
def bad_parameters(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    """Called when ninja rejects a request's parameters; one readable message for them all."""
    parts = []
    for err in exc.errors:
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    detail = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
        for e in exc.errors
    ]
    return _error(request, 422, "bad_request", "; ".join(parts) or "invalid", detail=detail)


@api.exception_handler(ForbiddenSymbols)
def forbidden_symbols(request: HttpRequest, exc: ForbiddenSymbols) -> HttpResponse:
    """Called when a view names a restricted symbol the caller may not see."""
    how = (
        "your account is not entitled to it"
        if exc.signed_in
        else "sign in, or send an API token whose user is entitled to it"
    )
    message = f"restricted symbol: {', '.join(exc.tickers)}; {how}"
    return _error(request, 403, "forbidden", message, symbols=exc.tickers)


@api.exception_handler(AuthenticationError)
def unauthorized(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    """Called when no auth callable accepted the request, or a token was not usable."""
    message = str(exc)
    if message == "Unauthorized":  # ninja's own: no credentials at all
        message = "authentication required: send 'Authorization: Bearer <token>' or sign in"
    response = _error(request, 401, "unauthorized", message)
    response["WWW-Authenticate"] = 'Bearer realm="ticker"'
    return response


@api.exception_handler(HttpError)
def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    """Called when a view raises HttpError (a parameter check beyond the schema's)."""
    code = getattr(exc, "code", None) or ("forbidden" if exc.status_code == 403 else "bad_request")
    return _error(request, exc.status_code, code, str(exc))


@api.exception_handler(Exception)
def server_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    """Called when a view raises what no handler above takes: a JSON answer, never a traceback.

    ninja's own answer, with DEBUG on, was the bare traceback as text/plain, past the
    project's redaction. Django's refusals keep their statuses; anything else is a 500,
    logged like Django's own (logger django.request) with the report of the configured
    reporter (DEFAULT_EXCEPTION_REPORTER, which redacts secrets), and with DEBUG on the
    same report is in the answer.
    """
    if isinstance(exc, RequestDataTooBig):
        return _error(request, 413, "body_too_large", str(exc))
    if isinstance(exc, SuspiciousOperation):
        return _error(request, 400, "bad_request", "the request was refused")
    if isinstance(exc, PermissionDenied):
        return _error(request, 403, "forbidden", str(exc) or "permission denied")
    reporter = get_exception_reporter_class(request)(request, type(exc), exc, exc.__traceback__)
    report = reporter.get_traceback_text()
    logging.getLogger("django.request").error(
        "Internal Server Error: %s\n%s",
        request.path,
        report,
        extra={"status_code": 500, "request": request},
    )
    extra = {"report": report} if settings.DEBUG else {}
    return _error(request, 500, "server_error", "internal server error", **extra)


def _caller(request: HttpRequest) -> Any:
    """The user the request authenticated as (an AnonymousUser when anonymous)."""
    return getattr(request, "auth", None)


async def _forbidden(request: HttpRequest, tickers: list[str]) -> list[str]:
    return await sync_to_async(forbidden_tickers)(user=_caller(request), tickers=tickers)


async def _check_entitled(request: HttpRequest, ticker: str) -> None:
    forbidden = await _forbidden(request, [ticker])
    if forbidden:
        user = _caller(request)
        raise ForbiddenSymbols(forbidden, signed_in=bool(user and user.is_authenticated))


async def _symbol_or_404(request: HttpRequest, ticker: str) -> Symbol:
    """The active symbol ``ticker``: 404 when there is none, 403 when the caller may not see it."""
    symbol = await quotes.active_symbol(ticker=ticker)
    if symbol is None:
        raise UnknownSymbol(ticker)
    await _check_entitled(request, ticker)
    return symbol


def _symbol_out(q: quotes.Quote, source: selectors.SourceState) -> dict:
    s, t = q.symbol, q.last
    return {
        "ticker": s.ticker,
        "name": s.name,
        "asset_class": s.asset_class,
        "quote_currency": s.quote_currency,
        "tick_size": float(s.tick_size),
        "last_price": t.price if t else None,
        "bid": t.bid if t else None,
        "ask": t.ask if t else None,
        "last_seq": t.seq if t else None,
        "last_ts": t.ts if t else None,
        "session_open": q.session_open,
        "change_pct": q.change_pct,
        "live": q.live,
        "source": source.source,
        "source_state": source.state,
        "source_error": source.error,
    }


async def _symbols_out(symbols: list[Symbol]) -> list[dict]:
    """Quotes and source states of ``symbols``, read at once (each a few Redis round trips)."""
    found, sources = await asyncio.gather(
        quotes.quotes(symbols=symbols), selectors.source_states(symbols=symbols)
    )
    return [_symbol_out(q, sources[q.symbol.ticker]) for q in found]


@api.get(
    "/symbols/", response={200: list[SymbolOut], 401: ErrorOut, 422: ErrorOut}, tags=["symbols"]
)
async def list_symbols(request: HttpRequest, asset_class: AssetClassName | None = None):
    """Active symbols the caller may see, optionally of one asset class, with last price,
    change %, liveness, and their feed source and its state. Restricted symbols the caller
    is not entitled to are left out."""
    symbols = await quotes.active_symbols(asset_class=asset_class)
    forbidden = set(await _forbidden(request, [s.ticker for s in symbols]))
    return await _symbols_out([s for s in symbols if s.ticker not in forbidden])


@api.get("/symbols/{symbol}/", response={200: SymbolOut, **ERRORS}, tags=["symbols"])
async def get_symbol(request: HttpRequest, symbol: SymbolPath):
    """One active symbol with its last price, change %, liveness, feed source and state."""
    (out,) = await _symbols_out([await _symbol_or_404(request, symbol)])
    return out


# exclude_none: a tick's side is left out when unknown, as in the WebSocket's tick message.
@api.get(
    "/symbols/{symbol}/ticks",
    response={200: TicksOut, **ERRORS},
    tags=["ticks"],
    exclude_none=True,
)
async def get_ticks(
    request: HttpRequest,
    symbol: SymbolPath,
    after_seq: Annotated[int, Query(ge=0, le=2**62, description="Ticks with seq > this.")] = 0,
    limit: Annotated[int, Query(ge=1, le=settings.API_TICKS_MAX_LIMIT)] = (
        settings.API_TICKS_DEFAULT_LIMIT
    ),
):
    """Recent ticks from history (the last HISTORY_DEPTH per symbol), ascending by seq."""
    await _symbol_or_404(request, symbol)
    found = await history.ticks_after(symbol=symbol, after_seq=after_seq, limit=limit + 1)
    return {
        "symbol": symbol,
        "ticks": [TickOut(**t.as_message()) for t in found[:limit]],
        "has_more": len(found) > limit,
    }


@api.get(
    "/symbols/{symbol}/book",
    response={200: BookOut, **ERRORS},
    tags=["books"],
    exclude_none=True,
)
async def get_book(
    request: HttpRequest,
    symbol: SymbolPath,
    depth: Annotated[
        int, Query(ge=1, le=MAX_DEPTH, description="Levels per side, 1 to 50.")
    ] = DEFAULT_DEPTH,
):
    """The symbol's order book now: its best ``depth`` levels per side, as the WebSocket
    ``book`` snapshot gives them (with its ``seq``, ``epoch`` and ``checksum``).

    A symbol without a book answers 200 with ``available: false``, no levels and a
    ``reason``: ``no_book`` when none was ever published (no producer runs it yet), else
    why its source keeps none (a replay of trades, say).
    """
    await _symbol_or_404(request, symbol)
    state = await books.read_book(symbol=symbol)
    if state is None:
        body = {"symbol": symbol, "seq": 0, "epoch": "", "ts": 0, "bids": [], "asks": []}
        return {**body, "depth": depth, "checksum": 0, "available": False, "reason": "no_book"}
    bids, asks = state.top(depth)
    return {
        "symbol": symbol,
        "seq": state.seq,
        "epoch": state.epoch,
        "ts": state.ts,
        "depth": depth,
        "bids": bids,
        "asks": asks,
        "checksum": checksum(bids, asks),
        "available": state.has_book,
        "reason": None if state.has_book else state.reason,
    }


@api.get("/symbols/{symbol}/candles", response={200: CandlesOut, **ERRORS}, tags=["candles"])
async def get_candles(
    request: HttpRequest,
    symbol: SymbolPath,
    interval: IntervalName = "1m",
    start: Annotated[
        int | None, Query(ge=0, le=MAX_EPOCH_MS, description="Epoch ms, inclusive.")
    ] = None,
    end: Annotated[
        int | None, Query(ge=0, le=MAX_EPOCH_MS, description="Epoch ms, exclusive.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=settings.API_CANDLES_MAX_LIMIT)] = (
        settings.API_CANDLES_DEFAULT_LIMIT
    ),
):
    """OHLCV candles starting in [start, end), ascending; the current one has closed=false.

    With ``start``: the first ``limit`` candles from it. Without: the last ``limit``
    before ``end`` (or now). 1s candles cover only the recent CANDLE_REDIS_BUCKETS seconds.
    """
    if start is not None and end is not None and start >= end:
        raise HttpError(422, "start must be before end")
    await _symbol_or_404(request, symbol)
    found = await candle_reads.candles(
        symbol=symbol, interval=interval, start=start, end=end, limit=limit
    )
    at, clock = now_ms(), await candle_reads.candle_clock(symbol=symbol)
    length = INTERVALS[interval]
    return {
        "symbol": symbol,
        "interval": interval,
        "candles": [
            CandleOut(
                start=c.start,
                end=c.start + length,
                open=c.open,
                high=c.high,
                low=c.low,
                close=c.close,
                volume=c.volume,
                ticks=c.ticks,
                first_seq=c.first_seq,
                last_seq=c.last_seq,
                closed=c.is_closed(at_ms=at, clock_ms=clock),
            )
            for c in found
        ],
    }


# Open to everyone, always: load balancers probe it without credentials. The full report
# names symbols (restricted ones too), hosts, pids, lease owners and error texts, so it
# goes only to staff and to what /metrics admits (loopback, METRICS_ALLOWED_IPS, the
# metrics token); anyone else hears the verdict and its status code.
HEALTH_RESPONSES = {200: HealthOut | HealthBriefOut, 503: HealthOut | HealthBriefOut}


@api.get("/health/", response=HEALTH_RESPONSES, tags=["health"], auth=None)
async def get_health(request: HttpRequest):
    """Whether live delivery works: 503 ("degraded") with the reasons in ``problems``.

    Degraded when Redis or the database is down, an active symbol is stale or its feed
    source is not up, this process's receive loop is down, a symbol with subscribers
    here gets no tick while its producer publishes, or this process's entitlement guard
    is dead or late while connections are open (markets.health). Anyone gets
    ``{"status": ...}``; staff (a session or token) and the addresses /metrics admits
    (METRICS_ALLOWED_IPS, loopback by default, or METRICS_TOKEN) get the full report.
    """
    report = await health.report()
    status = 200 if report.ok else 503
    verdict = "ok" if report.ok else "degraded"
    if not await sees_health_details(request):
        return Status(status, {"status": verdict})
    base = report.base
    body = {
        "status": verdict,
        "problems": report.problems,
        "redis": vars_of(base.redis),
        "database": vars_of(base.database),
        "receive_loop": report.receive_loop,
        "loops": report.loops,
        "feed": base.feed,
        "stale": base.stale,
        "symbols": report.symbols,
    }
    return Status(status, body)


async def sees_health_details(request: HttpRequest) -> bool:
    """Staff, signed in or with a token, or a caller /metrics admits (telemetry.access)."""
    if operator_allowed(request):
        return True
    user = await request.auser()
    if not user.is_authenticated:
        secret = bearer_secret(request.headers.get("Authorization"))
        token = await sync_to_async(token_for_secret)(secret=secret) if secret else None
        user = token.user if token is not None else user
    return user.is_active and user.is_staff


def vars_of(check: quotes.Check) -> dict:
    return {"ok": check.ok, "latency_ms": check.latency_ms, "error": check.error}
