"""Writes for API tokens."""

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import QuerySet
from django.utils import timezone

from markets.symbols import is_valid_symbol

from .models import ApiToken, Watchlist

TOKEN_PREFIX = "tk_"


def digest_of(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# The permission that lets a user who is not a superuser issue tokens for other users
# (never for a superuser): a token carries its user's rights.
ISSUE_FOR_OTHERS = "accounts.issue_token_for_others"


class Operator:
    """Who runs ``manage.py issue_token``: whoever has a shell with the deployment's
    settings, and so its database and SECRET_KEY. They could run ``createsuperuser``
    or ``manage.py shell`` as well, so a check on them would be one they can skip."""

    def __repr__(self) -> str:
        return "OPERATOR"


OPERATOR = Operator()


class NotPermitted(PermissionError):
    """The acting user may not issue a token for that user."""


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str  # shown once; only its digest is stored


def token_owners_for(by: AbstractBaseUser | Operator) -> QuerySet:
    """The users ``by`` may issue tokens for: the one rule, for the admin's form and
    issue_token alike. A user: themselves; a superuser: anyone; a holder of
    ISSUE_FOR_OTHERS: anyone but a superuser (a token would carry a superuser's rights);
    the operator at the shell: anyone."""
    users = get_user_model()._default_manager.all()
    if isinstance(by, Operator):
        return users
    if not (by.is_authenticated and by.is_active):
        return users.none()
    if by.is_superuser:
        return users
    if by.has_perm(ISSUE_FOR_OTHERS):
        return users.exclude(is_superuser=True)
    return users.filter(pk=by.pk)


def may_issue_token(*, by: AbstractBaseUser | Operator, user: AbstractBaseUser) -> bool:
    return token_owners_for(by).filter(pk=user.pk).exists()


def issue_token(
    *,
    user: AbstractBaseUser,
    by: AbstractBaseUser | Operator,
    name: str = "",
    expires_days: float | None = None,
    expires: datetime | None = None,
) -> IssuedToken:
    """Create a token for ``user``, asked by ``by``; the returned secret is never stored.

    Raises NotPermitted unless ``by`` may issue tokens for ``user`` (token_owners_for).
    It expires ``expires_days`` from now, or at ``expires`` (the admin's form), or never.
    """
    if expires_days is not None and expires is not None:
        raise ValueError("give expires_days or expires, not both")
    if not may_issue_token(by=by, user=user):
        raise NotPermitted(f"{by} may not issue a token for {user}")
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
