"""Which pages may open the WebSocket: the full Origin, by Django's own CSRF rule.

Channels' AllowedHostsOriginValidator compared the Origin's host alone with ALLOWED_HOSTS,
which has no scheme or port, so ``http://127.0.0.1:18555`` (another service on the same
host), ``ftp://127.0.0.1`` and ``http://localhost:1`` were accepted, and a page served
from another port opened the socket with the user's session cookie (issue 20).

A handshake is now accepted when its Origin (scheme, host and port) is

- the server's own origin, as the handshake reached it: ``http://`` or ``https://`` (from
  ``wss``, or SECURE_PROXY_SSL_HEADER behind a TLS proxy) and the Host header, which must
  be one of ALLOWED_HOSTS; or
- one of CSRF_TRUSTED_ORIGINS (``https://*.example.com`` covers subdomains).

That is the check Django's CsrfViewMiddleware makes of an unsafe request's Origin, and
this module runs that very code on the handshake, so the REST API and the WebSocket admit
the same pages under the same settings. A missing, ``null`` or repeated Origin is refused
(403 during the handshake).
"""

from django.http import HttpRequest
from django.middleware.csrf import CsrfViewMiddleware


class HandshakeRequest(HttpRequest):
    """The parts of a WebSocket handshake Django's host and scheme rules read."""

    def __init__(self, scope) -> None:
        super().__init__()
        for name, value in scope.get("headers", ()):
            key = "HTTP_" + name.decode("latin1").upper().replace("-", "_")
            text = value.decode("latin1")
            # As Django's ASGIRequest joins a repeated header; two Origins match nothing.
            self.META[key] = f"{self.META[key]},{text}" if key in self.META else text
        server = scope.get("server") or (None, None)
        if server[0] is not None:
            self.META["SERVER_NAME"] = str(server[0])
            self.META["SERVER_PORT"] = str(server[1] or "")
        self._ws_scheme = scope.get("scheme", "ws")

    def _get_scheme(self) -> str:
        # The page that opened a wss:// socket was https (the server's proxy headers,
        # or SECURE_PROXY_SSL_HEADER through HttpRequest.scheme, may say so too).
        return "https" if self._ws_scheme in ("wss", "https") else "http"


def origin_allowed(scope) -> bool:
    """Whether the handshake in ``scope`` comes from a page this site trusts."""
    request = HandshakeRequest(scope)
    if "HTTP_ORIGIN" not in request.META:
        return False
    # CsrfViewMiddleware's own comparison (Django >= 4.0): the request's origin, then
    # CSRF_TRUSTED_ORIGINS exactly, then their wildcard subdomains. A new instance each
    # time (cheap): it caches the settings it read.
    return CsrfViewMiddleware(_no_view)._origin_verified(request)


def _no_view(request):
    """Never called: the check needs no view after it."""


class SameOriginValidator:
    """ASGI middleware: refuses a WebSocket handshake whose Origin is not trusted (403)."""

    def __init__(self, application) -> None:
        self.application = application

    async def __call__(self, scope, receive, send):
        """Called for every WebSocket connection, before anything else reads it."""
        if origin_allowed(scope):
            return await self.application(scope, receive, send)
        return await deny(scope, receive, send)


async def deny(scope, receive, send) -> None:
    """Refuses the handshake: a close before the accept, which the server answers with 403.

    Not Channels' WebsocketDenier: a consumer, it joins the default channel layer and waits
    on a channel of its own, and that wait outlived the refused connection. Every refused
    handshake left a task behind (about 7 KB), and the server waited for all of them at
    shutdown, so a page could grow the server by opening sockets from a foreign origin.
    """
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close"})
