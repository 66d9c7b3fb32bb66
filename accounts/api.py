"""The caller's own account on the REST API: who they are and their dashboard watchlist.

A ninja Router mounted at /api/me/ by tickerproject.urls. Always authenticated (a
Bearer token or a session, accounts.auth.USER_AUTH), whatever WS_REQUIRE_AUTH says:
there is no "me" without a user.
"""

from typing import Annotated

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest
from ninja import Router, Schema
from ninja.errors import HttpError
from pydantic import Field, StringConstraints

from markets.schemas import ErrorOut
from markets.symbols import SYMBOL_MAX_LENGTH, SYMBOL_PATTERN

from . import selectors, services
from .auth import USER_AUTH
from .models import Watchlist

router = Router(auth=USER_AUTH, tags=["me"])

Ticker = Annotated[
    str, StringConstraints(pattern=f"^{SYMBOL_PATTERN.pattern}$", max_length=SYMBOL_MAX_LENGTH)
]


class TokenOut(Schema):
    name: str
    prefix: str = Field(description="The token's first characters, to tell tokens apart.")
    expires: int | None = Field(description="Epoch ms (UTC); null: never.")


class MeOut(Schema):
    username: str
    authenticated_by: str = Field(description="'token' or 'session'.")
    token: TokenOut | None = Field(description="The token this request used, if any.")


class WatchlistIn(Schema):
    symbols: list[Ticker] = Field(
        max_length=settings.MAX_SYMBOLS_PER_CONNECTION,
        description=(
            "Tickers in display order; a repeated one is kept once. At most "
            "MAX_SYMBOLS_PER_CONNECTION (the dashboard subscribes to all of them)."
        ),
    )


class WatchlistOut(Schema):
    symbols: list[str]
    updated: int | None = Field(
        description="Epoch ms (UTC) of the last save; null: never saved (symbols is empty)."
    )


ERRORS = {401: ErrorOut, 403: ErrorOut}


def _ms(moment) -> int | None:
    return int(moment.timestamp() * 1000) if moment is not None else None


def _watchlist_out(watchlist: Watchlist | None) -> dict:
    if watchlist is None:
        return {"symbols": [], "updated": None}
    return {"symbols": list(watchlist.symbols), "updated": _ms(watchlist.updated)}


@router.get("/", response={200: MeOut, **ERRORS})
async def me(request: HttpRequest):
    """Who the request is authenticated as, and with which token."""
    token = getattr(request, "api_token", None)
    return {
        "username": request.auth.get_username(),
        "authenticated_by": "token" if token is not None else "session",
        "token": (
            {"name": token.name, "prefix": token.prefix, "expires": _ms(token.expires)}
            if token is not None
            else None
        ),
    }


@router.get("/watchlist", response={200: WatchlistOut, **ERRORS})
async def get_watchlist(request: HttpRequest):
    """The caller's saved dashboard watchlist."""
    return _watchlist_out(await sync_to_async(selectors.watchlist_of)(user=request.auth))


# 400: a body that is not JSON at all; 422: JSON that is not a valid watchlist.
@router.put("/watchlist", response={200: WatchlistOut, 400: ErrorOut, 422: ErrorOut, **ERRORS})
async def put_watchlist(request: HttpRequest, body: WatchlistIn):
    """Replace the caller's watchlist. With a session, send the X-CSRFToken header."""
    try:
        saved = await sync_to_async(services.save_watchlist)(
            user=request.auth, symbols=body.symbols
        )
    except services.InvalidWatchlist as exc:
        raise HttpError(422, str(exc)) from exc
    return _watchlist_out(saved)
