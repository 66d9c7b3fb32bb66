"""Reads for API tokens (synchronous: call them from a thread in async code)."""

from django.contrib.auth.base_user import AbstractBaseUser

from .models import ApiToken, Watchlist
from .services import digest_of

# Longer than any secret issue_token makes; a longer "token" is refused unread.
MAX_TOKEN_LENGTH = 200


def bearer_secret(header: str | bytes | None) -> str | None:
    """The secret of an ``Authorization: Bearer <secret>`` header value, if it is one."""
    if header is None:
        return None
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    scheme, _, secret = header.strip().partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret or len(secret) > MAX_TOKEN_LENGTH:
        return None
    return secret


def token_for_secret(*, secret: str) -> ApiToken | None:
    """The usable token (not revoked, not expired, its user active) with this secret."""
    if not secret or len(secret) > MAX_TOKEN_LENGTH:
        return None
    token = ApiToken.objects.select_related("user").filter(digest=digest_of(secret)).first()
    if token is None or not token.is_usable():
        return None
    return token


def user_for_secret(*, secret: str) -> AbstractBaseUser | None:
    token = token_for_secret(secret=secret)
    return token.user if token is not None else None


def token_is_usable(*, token_id: int) -> bool:
    """Whether the token is still usable now (checked again on open connections)."""
    token = ApiToken.objects.select_related("user").filter(pk=token_id).first()
    return token is not None and token.is_usable()


def usable_token_ids(*, token_ids: set[int]) -> set[int]:
    """Those of ``token_ids`` that are still usable now (one query for all of them)."""
    if not token_ids:
        return set()
    tokens = ApiToken.objects.select_related("user").filter(pk__in=token_ids)
    return {t.pk for t in tokens if t.is_usable()}


def watchlist_of(*, user: AbstractBaseUser) -> Watchlist | None:
    """``user``'s saved watchlist, or None if they never saved one."""
    return Watchlist.objects.filter(user=user).first()
