"""ASGI scope extensions the streaming app uses when the server offers them.

``WRITE_EXTENSION``: ``scope["extensions"][WRITE_EXTENSION]["write"]`` is a plain
function ``write(payload: bytes) -> bool`` that writes one text frame of UTF-8
``payload`` at once and returns True, or returns False when the frame cannot go without
waiting (a full socket, a closing connection, compression); it raises as the ASGI
``send`` would for a client that is gone. The fan-out writes thousands of frames a loop
turn, and an ASGI ``send`` is a coroutine to create and drive per frame. Our uvicorn
protocol offers it (tickerproject.uvicorn_ws); with any other server the outbox sends
through ``send`` alone.
"""

from collections.abc import Callable

WRITE_EXTENSION = "ticker.websocket.write"

Write = Callable[[bytes], bool]


def write_extension(scope: dict) -> Write | None:
    """The server's sync text-frame write for this connection, if it offers one."""
    ext = (scope.get("extensions") or {}).get(WRITE_EXTENSION)
    return ext.get("write") if isinstance(ext, dict) else None
