"""A WebSocket client that subscribes and then stops reading: its socket fills and stays full.

A tiny receive buffer makes the stall reach the server quickly, as a phone on a bad
link or a hung program would. read_to_close() later reads whatever the server left
and returns the close code it sent, if any; ``ended`` says how the connection ended.

``mss`` announces that TCP segment size, as a client across a network does (Ethernet:
1460). Left unset, loopback's 64 KiB segments let Linux autotune the server's send buffer
to ~2.6 MB for this one connection (its size follows segments x congestion window), about
30 s of 22 symbols at 50 ticks/s before the server can see the stall; at 1460, ~75 kB.
"""

import asyncio
import json
import socket
import time

from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.typing import Origin
from websockets.uri import parse_uri


class StalledClient:
    def __init__(self, url: str, origin: str, *, mss: int | None = None) -> None:
        self.protocol = ClientProtocol(parse_uri(url), origin=Origin(origin), max_size=None)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        if mss is not None:  # set before connecting: the SYN announces it
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
        self.sock.setblocking(False)
        self.port = parse_uri(url).port
        self.frames: list[str] = []
        # How reading ended: "close" (a close frame came), "eof", "reset" or "timeout";
        # and when (time.monotonic()).
        self.ended: str | None = None
        self.ended_at: float | None = None
        self.opened_at: float | None = None  # when the handshake ended (time.monotonic())
        self.local_port = 0

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        for chunk in self.protocol.data_to_send():
            if chunk:
                await loop.sock_sendall(self.sock, chunk)

    async def open_and_subscribe(self, symbols: list[str], **options) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_connect(self.sock, ("127.0.0.1", self.port))
        self.local_port = self.sock.getsockname()[1]  # the server sees it as the peer's port
        self.protocol.send_request(self.protocol.connect())
        await self._flush()
        while self.protocol.handshake_exc is None and not _open(self.protocol):
            self.protocol.receive_data(await loop.sock_recv(self.sock, 4096))
        assert self.protocol.handshake_exc is None, self.protocol.handshake_exc
        self.opened_at = time.monotonic()
        command = {"action": "subscribe", "symbols": symbols, **options}
        self.protocol.send_text(json.dumps(command).encode())
        await self._flush()

    async def read_to_close(self, timeout: float = 30.0) -> int | None:
        """Read everything the server sent; the close code it sent, None if none came."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self.ended = "timeout"
        while self.protocol.close_rcvd is None and loop.time() < deadline:
            try:
                data = await asyncio.wait_for(loop.sock_recv(self.sock, 1 << 20), 5)
            except TimeoutError:
                break
            except ConnectionResetError:  # the server dropped the connection
                self.ended = "reset"
                break
            if not data:
                self.protocol.receive_eof()
                self.ended = "eof"
                break
            self.protocol.receive_data(data)
            for event in self.protocol.events_received():
                if getattr(event, "opcode", None) is Opcode.TEXT:
                    self.frames.append(event.data.decode())
        self.ended_at = time.monotonic()
        self.sock.close()
        close = self.protocol.close_rcvd
        if close is not None:
            self.ended = "close"
        return None if close is None else close.code


def _open(protocol: ClientProtocol) -> bool:
    from websockets.protocol import State

    return protocol.state is State.OPEN
