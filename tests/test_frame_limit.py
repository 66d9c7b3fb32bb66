"""Frames over WS_MAX_MESSAGE_BYTES are refused by the ASGI server itself (close 1009).

Each server ASGI_SERVER names is started as `make run` starts it (python -m
tickerproject.serve) on a free port. A raw socket completes the WebSocket handshake and
then sends frame headers that announce 1 MiB and 15 MiB payloads: the server must answer
1009 from the header alone, before the payload has arrived, and its memory must not grow
with repeated attempts.
"""

import base64
import os
import socket
import struct
import subprocess
import threading
import time

import psutil
import pytest
from django.conf import settings

from streaming.protocol import MAX_MESSAGE_BYTES, CloseCode
from tests.realstack import BASE_DIR, RealStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MiB = 1024 * 1024


class RawWebSocket:
    """A client WebSocket on a plain socket, so a frame can be announced and not sent."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        try:
            self._handshake(port)
        except BaseException:
            self.sock.close()
            raise

    def _handshake(self, port: int) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                "GET /ws/prices/ HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\n"
                f"Origin: http://127.0.0.1:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"closed during the handshake: {self.buffer!r}")
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        assert b" 101 " in status, head

    @staticmethod
    def header(length: int, opcode: int = 0x1) -> bytes:
        """A final, masked frame's header for ``length`` bytes (the shortest encoding)."""
        if length < 126:
            return bytes([0x80 | opcode, 0x80 | length])
        if length < 65536:
            return bytes([0x80 | opcode, 0x80 | 126]) + struct.pack("!H", length)
        return bytes([0x80 | opcode, 0x80 | 127]) + struct.pack("!Q", length)

    def send_header(self, length: int, opcode: int = 0x1) -> None:
        """Announce ``length`` bytes, masked with a zero key (so payload goes as is)."""
        self.sock.sendall(self.header(length, opcode) + bytes(4))

    def send_frame(self, payload: bytes, opcode: int = 0x1) -> None:
        self.sock.sendall(self.header(len(payload), opcode) + bytes(4) + payload)

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before a whole frame arrived")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def read_frame(self) -> tuple[int, bytes]:
        first, second = self._read(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read(8))
        return first & 0x0F, self._read(length)

    def close_code(self) -> int:
        """Skip data frames; the code of the server's close frame."""
        while True:
            opcode, payload = self.read_frame()
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005

    def close(self) -> None:
        self.sock.close()


def refused_before_payload(port: int, length: int) -> int:
    """Announce a ``length``-byte frame, send 64 KiB of it; the close code the server sends.

    The rest of the payload is never sent, so a server that reads a frame whole before
    checking it never answers (socket timeout).
    """
    ws = RawWebSocket(port)
    try:
        ws.send_header(length)
        ws.sock.sendall(b"a" * (64 * 1024))
        return ws.close_code()
    finally:
        ws.close()


def refused_while_sending(port: int, length: int) -> int | None:
    """Send a whole ``length``-byte frame while reading; the close code, if one came."""
    ws = RawWebSocket(port, timeout=30)
    codes: list[int] = []

    def reader() -> None:
        try:
            codes.append(ws.close_code())
        except OSError:
            pass

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    chunk = b"a" * MiB
    try:
        ws.send_header(length)
        for sent in range(0, length, len(chunk)):
            ws.sock.sendall(chunk[: min(len(chunk), length - sent)])
            if codes:
                break
    except OSError:
        pass  # the server closed the connection mid-payload, as it should
    thread.join(timeout=30)
    ws.close()
    return codes[0] if codes else None


def tree_rss(pid: int) -> int:
    """Resident bytes of the server process and its children (uvicorn's --workers forks)."""
    root = psutil.Process(pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    """One migrated, seeded SQLite file for every server in this module."""
    stack = RealStack(tmp_path_factory.mktemp("frame-db"))
    stack.prepare_database()
    return stack.env["DATABASE_URL"]


@pytest.fixture
def server(request, tmp_path, database):
    stack = RealStack(tmp_path, ASGI_SERVER=request.param, DATABASE_URL=database)
    proc = stack.start_web()
    yield stack, proc
    stack.stop_all()


CAPPING_SERVERS = ["uvicorn", "daphne"]


def test_the_consumer_and_the_server_read_one_setting():
    assert MAX_MESSAGE_BYTES == settings.WS_MAX_MESSAGE_BYTES == 64 * 1024


@pytest.mark.parametrize("server", CAPPING_SERVERS, indirect=True)
def test_a_frame_at_the_limit_is_read_and_one_past_it_is_refused_from_its_header(server):
    stack, proc = server
    # At the limit: read, parsed, and answered by the consumer (an error, not a close).
    ws = RawWebSocket(stack.port)
    try:
        padding = MAX_MESSAGE_BYTES - len('{"action":"ping","id":""}')
        ws.send_frame(b'{"action":"ping","id":"' + b"x" * padding + b'"}')
        opcode, payload = ws.read_frame()
        assert opcode == 0x1 and payload.startswith(b"{"), payload[:200]
    finally:
        ws.close()
    # One byte past it, and 1 MiB and 15 MiB: refused from the header with 1009.
    for length in (MAX_MESSAGE_BYTES + 1, MiB, 15 * MiB):
        assert refused_before_payload(stack.port, length) == CloseCode.MESSAGE_TOO_BIG, length
    assert proc.poll() is None


@pytest.mark.parametrize("server", CAPPING_SERVERS, indirect=True)
def test_big_frames_do_not_grow_the_server(server):
    """Ten 1 MiB and ten 15 MiB frames, each sent whole: 1009 each time, flat memory."""
    stack, proc = server
    # Warm up: a first refusal allocates whatever the code path needs once.
    refused_while_sending(stack.port, MiB)
    time.sleep(0.5)
    before = tree_rss(proc.pid)
    codes = [refused_while_sending(stack.port, size) for size in (MiB, 15 * MiB) * 10]
    time.sleep(0.5)
    after = tree_rss(proc.pid)
    print(f"{stack.env['ASGI_SERVER']}: RSS {before / MiB:.1f} -> {after / MiB:.1f} MiB")
    assert codes == [CloseCode.MESSAGE_TOO_BIG] * len(codes)
    assert after - before < 8 * MiB, (before / MiB, after / MiB)
    assert proc.poll() is None


@pytest.mark.parametrize("name", CAPPING_SERVERS)
def test_the_server_limit_follows_the_setting(tmp_path, database, name):
    """WS_MAX_MESSAGE_BYTES=4096: the server refuses 4097 bytes, whichever server it is."""
    stack = RealStack(
        tmp_path, ASGI_SERVER=name, DATABASE_URL=database, WS_MAX_MESSAGE_BYTES="4096"
    )
    proc = stack.start_web()
    try:
        assert refused_before_payload(stack.port, 4097) == CloseCode.MESSAGE_TOO_BIG
        assert proc.poll() is None
    finally:
        stack.stop_all()


def test_a_server_that_cannot_refuse_a_frame_from_its_header_is_not_offered(tmp_path):
    """Granian read frames whole before the app saw them (README, "Frame size"): removed."""
    stack = RealStack(tmp_path, ASGI_SERVER="granian")
    result = subprocess.run(
        stack.procfile_argv("web"), env={**stack.env, "PORT": str(stack.port)},
        cwd=BASE_DIR, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "ASGI_SERVER='granian': use one of uvicorn, daphne" in result.stderr, result.stderr
    assert "granian was removed" in result.stderr
