"""Who is calling the REST API: a Bearer token, a Django session, or (when allowed) nobody.

django-ninja tries an operation's auth callables in order and keeps the first truthy
result in ``request.auth``; when none gives one it answers 401 (markets.api shapes the
body). The order is:

1. ``TokenAuth``: an ``Authorization: Bearer <token>`` header. A header that is there
   but names no usable token (unknown, revoked, expired, its user inactive) is a 401
   at once, whatever WS_REQUIRE_AUTH says: a program that sends a bad token should
   hear so rather than be served as anonymous. A token is never read from the URL.
2. ``SessionAuth``: the Django session cookie of a signed-in user. Unsafe methods
   (PUT, POST, ...) need the CSRF token too, as every Django form does.
3. ``AnonymousAccess``: nobody, only while WS_REQUIRE_AUTH is off (read per request).
   ``request.auth`` is then an AnonymousUser, who sees public symbols only.

``API_AUTH`` (all three) guards the market data endpoints, ``USER_AUTH`` (the first
two) the per-user ones. All are async, so an anonymous request costs no thread hop.
"""

from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest
from ninja.errors import AuthenticationError, HttpError
from ninja.security import APIKeyCookie, HttpBearer
from ninja.utils import check_csrf

from .selectors import bearer_secret, token_for_secret


class InvalidToken(AuthenticationError):
    """An Authorization header that names no usable token."""

    def __init__(self, message: str = "the API token is not valid (unknown, revoked or expired)"):
        super().__init__(401, message)


class CsrfFailed(HttpError):
    """A session-authenticated unsafe request without a valid CSRF token."""

    code = "csrf_failed"

    def __init__(self) -> None:
        super().__init__(403, "CSRF check failed: send the X-CSRFToken header")


class TokenAuth(HttpBearer):
    """``Authorization: Bearer <token>`` (accounts.selectors reads the token)."""

    openapi_description = (
        "An API token (manage.py issue_token, or the admin): `Authorization: Bearer <token>`."
    )

    def __call__(self, request: HttpRequest) -> Any:
        header = request.headers.get(self.header)
        if header is None:
            return None
        secret = bearer_secret(header)
        if secret is None:
            raise InvalidToken("the Authorization header must be 'Bearer <token>'")
        return self.authenticate(request, secret)

    async def authenticate(self, request: HttpRequest, token: str) -> Any:
        found = await sync_to_async(token_for_secret)(secret=token)
        if found is None:
            raise InvalidToken()
        request.api_token = found  # type: ignore[attr-defined]
        return found.user


class SessionAuth(APIKeyCookie):
    """The session cookie of a signed-in user; CSRF-checked on unsafe methods."""

    param_name = settings.SESSION_COOKIE_NAME
    openapi_description = (
        "The dashboard's Django session (sign in at /accounts/login/); "
        "unsafe methods also need the X-CSRFToken header."
    )

    def __init__(self) -> None:
        # The CSRF check runs below, only once a session has proved to be a user's: an
        # anonymous PUT should hear 401, not a CSRF complaint.
        super().__init__(csrf=False)

    async def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        if not key:
            return None
        user = await request.auser()
        if not user.is_authenticated:
            return None
        if check_csrf(request) is not None:
            raise CsrfFailed()
        return user


class AnonymousAccess:
    """Lets anonymous callers through while WS_REQUIRE_AUTH is off.

    It declares a security scheme only so markets.api can find the operations it
    guards and write them into the OpenAPI schema as "auth optional" (an empty
    requirement), or leave them out when auth is required.
    """

    openapi_security_schema = {"type": "http", "scheme": "anonymous"}
    is_async = True

    async def __call__(self, request: HttpRequest) -> Any:
        if settings.WS_REQUIRE_AUTH:
            return None
        return AnonymousUser()


SCHEME_NAMES = {"token": "TokenAuth", "session": "SessionAuth", "anonymous": "AnonymousAccess"}
USER_AUTH = [TokenAuth(), SessionAuth()]
API_AUTH = [*USER_AUTH, AnonymousAccess()]
