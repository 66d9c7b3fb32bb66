"""Writes for API tokens."""

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.utils import timezone

from markets.symbols import is_valid_symbol

from .models import ApiToken, Watchlist

TOKEN_PREFIX = "tk_"


def digest_of(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str  # shown once; only its digest is stored


def issue_token(
    *,
    user: AbstractBaseUser,
    name: str = "",
    expires_days: float | None = None,
    expires: datetime | None = None,
) -> IssuedToken:
    """Create a token for ``user``; the returned secret is never stored.

    It expires ``expires_days`` from now, or at ``expires`` (the admin's form), or never.
    """
    if expires_days is not None and expires is not None:
        raise ValueError("give expires_days or expires, not both")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    if expires_days:
        expires = timezone.now() + timedelta(days=expires_days)
    token = ApiToken.objects.create(
        user=user, name=name, prefix=secret[:8], digest=digest_of(secret), expires=expires
    )
    return IssuedToken(token=token, secret=secret)


def revoke_token(*, token: ApiToken) -> None:
    """Revoke ``token``: open connections using it are closed within seconds."""
    if token.revoked is None:
        token.revoked = timezone.now()
        token.save(update_fields=["revoked"])


class InvalidWatchlist(ValueError):
    """A watchlist that is not a list of well-formed tickers within the limit."""


def clean_watchlist(symbols: Iterable[object]) -> list[str]:
    """``symbols`` as a watchlist: well-formed tickers, first occurrence kept, in order.

    Raises InvalidWatchlist for a malformed ticker or more than
    MAX_SYMBOLS_PER_CONNECTION distinct ones (the dashboard subscribes to all of them
    on one connection). Whether a ticker names an active symbol is the stream's call.
    """
    limit = settings.MAX_SYMBOLS_PER_CONNECTION
    out: dict[str, None] = {}  # insertion-ordered set
    for symbol in symbols:
        if not is_valid_symbol(symbol):
            raise InvalidWatchlist(f"not a valid symbol: {str(symbol)[:40]!r}")
        out[symbol] = None
        if len(out) > limit:
            raise InvalidWatchlist(f"a watchlist holds at most {limit} symbols")
    return list(out)


def save_watchlist(*, user: AbstractBaseUser, symbols: Iterable[object]) -> Watchlist:
    """Replace ``user``'s watchlist with ``symbols`` (checked by clean_watchlist)."""
    cleaned = clean_watchlist(symbols)
    watchlist, _ = Watchlist.objects.update_or_create(user=user, defaults={"symbols": cleaned})
    return watchlist
