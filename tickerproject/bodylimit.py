"""HTTP request bodies above DATA_UPLOAD_MAX_MEMORY_SIZE are refused with 413, unread.

Django's ASGI handler reads a request's whole body (into a temporary file past
FILE_UPLOAD_MAX_MEMORY_SIZE) before it routes the request, and checks its own limit only
when a view reads ``request.body``: a 300 MiB POST to any URL, even one answering 405,
was spooled whole first (issue 20). This middleware wraps the HTTP application, so it
runs before Django on every route, under uvicorn and daphne alike:

- a ``Content-Length`` above the limit is answered at once, before a byte is read;
- a body without one (``Transfer-Encoding: chunked``) is counted as the application
  reads it, and answered the moment it passes the limit; the application then reads an
  ``http.disconnect``, so Django drops what it had (at most the limit).

The answer is ``413`` with a JSON body in the API's error shape, and ``Connection:
close``, so the server stops reading the rest. uvicorn reads a body only as fast as the
application asks for it (64 KiB ahead). daphne reads a whole request before it calls
the application, so under daphne the same answer comes earlier, from Twisted's request
as the body arrives (tickerproject/daphne_body.py); this middleware is then a second
check. deploy/nginx.conf's ``client_max_body_size`` is the same 1 MiB.
"""

import json

from django.conf import settings


def body_limit() -> int | None:
    """The largest request body accepted, in bytes; None when Django's limit is off."""
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def declared_length(scope) -> int | None:
    """The request's Content-Length, or None when it has none (or one the server let by)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def refusal(limit: int) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The 413's headers and JSON body, here and from daphne (tickerproject/daphne_body.py)."""
    encoded = json.dumps(
        {
            "code": "body_too_large",
            "message": f"the request body is larger than the server accepts ({limit} bytes)",
            "limit": limit,
        }
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(encoded)).encode()),
        # The rest of the body is not wanted: the server closes instead of reading it.
        (b"connection", b"close"),
    ]
    return headers, encoded


async def refuse(send, limit: int) -> None:
    headers, encoded = refusal(limit)
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": encoded})


class BodyLimit:
    """ASGI middleware for the HTTP application: see the module's docstring."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        """Called for every ASGI connection; only HTTP requests are looked at."""
        limit = body_limit() if scope["type"] == "http" else None
        if limit is None:
            return await self.app(scope, receive, send)
        declared = declared_length(scope)
        if declared is not None and declared > limit:
            return await refuse(send, limit)

        received = 0
        started = False
        refused = False

        async def counted_receive():
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    # An application that already began its answer cannot get a 413
                    # in the middle of it; it is cut off all the same.
                    if not started:
                        await refuse(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal started
            if refused:
                return  # the 413 went out instead
            started = True
            await send(message)

        return await self.app(scope, counted_receive, guarded_send)
