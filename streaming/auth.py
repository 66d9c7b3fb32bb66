"""Who is on the other end of a WebSocket: a session cookie, a Bearer token, or nobody.

``WebSocketAuthMiddleware`` replaces channels' AuthMiddlewareStack. It reads the same
session (the dashboard's cookie) and also a token from the handshake's
``Authorization: Bearer`` header, and it touches the database only when the handshake
carries one of them: a program that connects with neither costs no thread hop. A
token is never read from the URL, where it would end up in access logs.

The result is an ``Identity`` in ``scope["identity"]`` (and the user in
``scope["user"]``, as with channels). streaming.guard checks it again every few
seconds, so a revoked token, a deactivated user or a logged-out session ends the
connection (4403) within that time.
"""

from collections.abc import Awaitable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from importlib import import_module
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib import auth
from django.contrib.auth.models import AnonymousUser

from accounts.selectors import bearer_secret, token_for_secret


@dataclass(frozen=True, slots=True)
class Identity:
    """A connection's user, and how it proved who it is."""

    user: Any  # a user model instance, or AnonymousUser
    token_id: int | None = None
    session_key: str | None = None
    # Set when the handshake presented a token or session that is not usable.
    failure: str | None = None

    @property
    def authenticated(self) -> bool:
        return bool(self.user.is_authenticated)


ANONYMOUS = Identity(user=AnonymousUser())


def _header(scope: dict, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


def _session_key(cookie_header: bytes | None) -> str | None:
    if not cookie_header:
        return None
    cookies: SimpleCookie = SimpleCookie()
    try:
        cookies.load(cookie_header.decode("latin-1"))
    except Exception:  # a malformed Cookie header is the client's problem, not ours
        return None
    morsel = cookies.get(settings.SESSION_COOKIE_NAME)
    return morsel.value if morsel is not None and morsel.value else None


class _SessionRequest:
    """The one attribute django.contrib.auth.get_user reads from a request."""

    def __init__(self, session: Any) -> None:
        self.session = session


def identify_session(session_key: str) -> Identity:
    """The user of a session (synchronous); anonymous if it is gone or was flushed."""
    engine = import_module(settings.SESSION_ENGINE)
    session = engine.SessionStore(session_key)
    # get_user checks the session's auth hash, as every Django request does.
    user = auth.get_user(_SessionRequest(session))
    if not user.is_authenticated:
        return ANONYMOUS
    return Identity(user=user, session_key=session_key)


def identify_token(secret: str) -> Identity | None:
    """The identity of a usable token's secret (synchronous), else None."""
    token = token_for_secret(secret=secret)
    if token is None:
        return None
    return Identity(user=token.user, token_id=token.pk)


def identify(scope: dict) -> Identity:
    """The identity a handshake claims (synchronous: it may read the database)."""
    auth_header = _header(scope, b"authorization")
    if auth_header is not None:
        secret = bearer_secret(auth_header)
        found = identify_token(secret) if secret is not None else None
        if found is None:
            return Identity(user=AnonymousUser(), failure="the API token is not usable")
        return found
    session_key = _session_key(_header(scope, b"cookie"))
    if session_key is not None:
        return identify_session(session_key)
    return ANONYMOUS


def needs_lookup(scope: dict) -> bool:
    """Whether identifying this handshake needs the database at all."""
    return _header(scope, b"authorization") is not None or (
        _session_key(_header(scope, b"cookie")) is not None
    )


class WebSocketAuthMiddleware:
    """Sets ``scope["identity"]`` and ``scope["user"]`` for the consumer."""

    # A plain callable returning the inner application's awaitable (asgiref reads this
    # flag): a connection with nothing to look up holds no frame of this middleware
    # for its whole life (benchmarks/RESULTS.md, round 11).
    _asgi_single_callable = True

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, scope: dict, receive: Any, send: Any) -> Awaitable[Any]:
        """Called once per connection, before the consumer."""
        if needs_lookup(scope):
            return self._identified(scope, receive, send)
        return self.inner(dict(scope, identity=ANONYMOUS, user=ANONYMOUS.user), receive, send)

    async def _identified(self, scope: dict, receive: Any, send: Any) -> Any:
        identity = await database_sync_to_async(identify)(scope)
        return await self.inner(dict(scope, identity=identity, user=identity.user), receive, send)
