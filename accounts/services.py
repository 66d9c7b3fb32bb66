"""Writes for API tokens."""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.base_user import AbstractBaseUser
from django.utils import timezone

from .models import ApiToken

TOKEN_PREFIX = "tk_"


def digest_of(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str  # shown once; only its digest is stored


def issue_token(
    *, user: AbstractBaseUser, name: str = "", expires_days: float | None = None
) -> IssuedToken:
    """Create a token for ``user``; the returned secret is never stored."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = timezone.now() + timedelta(days=expires_days) if expires_days else None
    token = ApiToken.objects.create(
        user=user, name=name, prefix=secret[:8], digest=digest_of(secret), expires=expires
    )
    return IssuedToken(token=token, secret=secret)


def revoke_token(*, token: ApiToken) -> None:
    """Revoke ``token``: open connections using it are closed within seconds."""
    if token.revoked is None:
        token.revoked = timezone.now()
        token.save(update_fields=["revoked"])
