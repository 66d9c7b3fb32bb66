"""tickerproject.uvicorn_ws: a client is parsed no faster than the app reads it."""

import asyncio
import logging
import re
import tomllib
from pathlib import Path

import pytest
from uvicorn.config import Config
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.server import ServerState
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from tickerproject import serve, uvicorn_ws
from tickerproject.uvicorn_ws import (
    SLICE_BYTES,
    Flag,
    Inbox,
    PacedWebSocketsProtocol,
    text_frame,
)


class Transport(asyncio.Transport):
    """What the protocol writes, and whether it asked to stop reading."""

    def __init__(self) -> None:
        super().__init__()
        self.paused = False
        self.written = bytearray()
        self.closing = False
        self.aborted = False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def write(self, data) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )


async def open_connection(extensions=None, **config):
    accepted = asyncio.Event()

    async def app(scope, receive, send):
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        accepted.set()
        await asyncio.Event().wait()  # the test reads through the protocol itself

    config = Config(app, ws=PacedWebSocketsProtocol, lifespan="off", log_level="warning", **config)
    config.load()
    proto = PacedWebSocketsProtocol(config, ServerState(), {})
    transport = Transport()
    proto.connection_made(transport)
    client = ClientProtocol(parse_uri("ws://127.0.0.1:8000/ws/prices/"), extensions=extensions)
    client.send_request(client.connect())
    proto.data_received(b"".join(client.data_to_send()))
    await asyncio.wait_for(accepted.wait(), 5)
    client.receive_data(bytes(transport.written))
    return proto, transport, client


async def test_a_flood_in_one_read_is_parsed_a_slice_at_a_time_as_the_app_reads():
    proto, transport, client = await open_connection()
    commands = [f'{{"action":"ping","id":"{i:05d}"}}' for i in range(12_000)]  # one size
    for text in commands:
        client.send_text(text.encode())
    flood = b"".join(client.data_to_send())
    assert len(flood) > 256 * 1024  # more than uvicorn's loop reads at once
    proto.data_received(flood)
    # One slice parsed, the rest kept, and the socket no longer read.
    frame_bytes = len(flood) / len(commands)
    assert 0 < proto.queue.qsize() <= SLICE_BYTES / frame_bytes + 1
    assert transport.paused
    received = []
    while len(received) < len(commands):
        message = await asyncio.wait_for(proto.receive(), 5)
        received.append(message["text"])
        # Never more parsed than one slice ahead of the app.
        assert proto.queue.qsize() <= SLICE_BYTES / frame_bytes + 1
    assert received == commands
    assert not transport.paused  # all read: the socket is read again
    proto.connection_lost(None)


async def test_a_command_from_a_client_that_keeps_up_is_parsed_at_once():
    proto, transport, client = await open_connection()
    client.send_text(b'{"action":"ping"}')
    proto.data_received(b"".join(client.data_to_send()))
    assert (await asyncio.wait_for(proto.receive(), 5))["text"] == '{"action":"ping"}'
    assert not transport.paused
    proto.connection_lost(None)


async def test_once_accepted_the_handshake_is_let_go_and_frames_still_flow():
    proto, transport, client = await open_connection()
    # Nothing reads the handshake's request or response again; the scope keeps its headers.
    assert proto.request is None and proto.response is None
    assert (b"host", b"127.0.0.1:8000") in [(k.lower(), v) for k, v in proto.scope["headers"]]
    client.send_text(b'{"action":"ping"}')
    proto.data_received(b"".join(client.data_to_send()))
    assert (await asyncio.wait_for(proto.receive(), 5))["text"] == '{"action":"ping"}'
    client.events_received()  # the handshake's response
    answered = len(transport.written)
    await proto.send({"type": "websocket.send", "text": "pong"})
    await asyncio.sleep(0)  # the end of the loop turn: written
    client.receive_data(bytes(transport.written[answered:]))
    assert [e.data for e in client.events_received()] == [b"pong"]
    proto.connection_lost(None)


async def test_the_inbox_hands_each_event_to_one_getter_in_order():
    inbox = Inbox()
    first = asyncio.ensure_future(inbox.get())
    second = asyncio.ensure_future(inbox.get())
    gone = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    gone.cancel()  # a getter cancelled while waiting strands no one
    inbox.put_nowait("a")
    inbox.put_nowait("b")
    assert sorted(await asyncio.wait_for(asyncio.gather(first, second), 5)) == ["a", "b"]
    assert gone.cancelled() and inbox.empty() and inbox.qsize() == 0
    inbox.put_nowait("c")
    assert inbox.qsize() == 1 and await inbox.get() == "c"


async def test_the_flag_is_an_event_whose_waiters_all_wake():
    flag = Flag()
    assert isinstance(flag, asyncio.Event) and not flag.is_set()
    waiters = [asyncio.ensure_future(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    flag.set()
    assert await asyncio.wait_for(asyncio.gather(*waiters), 5) == [True, True, True]
    assert await flag.wait()  # set: at once
    flag.clear()
    late = asyncio.ensure_future(flag.wait())
    await asyncio.sleep(0)
    assert not late.done()
    flag.set()
    assert await asyncio.wait_for(late, 5)


async def test_after_the_servers_close_the_backlog_is_parsed_a_slice_per_turn_until_the_close():
    proto, transport, client = await open_connection()
    for i in range(12_000):
        client.send_text(f'{{"action":"ping","id":"{i:05d}"}}'.encode())
    proto.data_received(b"".join(client.data_to_send()))
    # The app closes the flooder (as the limiter does with 1008) and reads no more.
    await proto.send({"type": "websocket.close", "code": 1008, "reason": "flooding"})
    client.receive_data(bytes(transport.written))  # the client answers with its close
    chunks = []
    feed = proto.conn.receive_data
    proto.conn.receive_data = lambda data: (chunks.append(len(data)), feed(data))[1]
    proto.data_received(b"".join(client.data_to_send()))
    for _ in range(1000):
        if transport.closing:
            break
        await asyncio.sleep(0)
    assert transport.closing  # the client's close was found behind ~400 KiB of pings
    assert len(chunks) > 50 and max(chunks) <= SLICE_BYTES


async def test_the_frames_of_one_loop_turn_go_out_in_one_write_in_order():
    proto, transport, client = await open_connection()
    client.events_received()  # the handshake's response
    writes = []
    real_write = transport.write
    transport.write = lambda data: (writes.append(bytes(data)), real_write(data))[1]
    texts = [f'{{"type":"tick","seq":{i}}}' for i in range(5)]
    for text in texts:
        await proto.send({"type": "websocket.send", "text": text})
    assert writes == []  # framed, not yet written
    await asyncio.sleep(0)
    assert len(writes) == 1  # one system call for the five frames
    client.receive_data(writes[0])
    assert [e.data.decode() for e in client.events_received()] == texts  # five frames

    # Ending the write side or closing the transport flushes first: the FIN and the
    # close follow the frames written before them.
    eof = []
    transport.write_eof = lambda: eof.append(len(writes))
    await proto.send({"type": "websocket.send", "text": "before the FIN"})
    proto.transport.write_eof()
    assert eof == [2]
    await proto.send({"type": "websocket.send", "text": "last"})
    proto.transport.close()
    assert len(writes) == 3 and transport.closing
    client.receive_data(writes[1] + writes[2])
    assert [e.data.decode() for e in client.events_received()] == ["before the FIN", "last"]
    proto.connection_lost(None)


async def test_text_frames_of_every_length_class_are_framed_as_websockets_would():
    texts = ["", "é" * 10, "x" * 125, "x" * 126, "y" * 65535, "z" * 65536, "w" * 200_000]
    for text in texts:
        frame = Frame(Opcode.TEXT, text.encode())
        assert text_frame(text.encode()) == frame.serialize(mask=False)
    proto, transport, client = await open_connection()
    client.events_received()
    start = len(transport.written)
    for text in texts:
        await proto.send({"type": "websocket.send", "text": text})
    await asyncio.sleep(0)
    client.receive_data(bytes(transport.written[start:]))
    assert [e.data.decode() for e in client.events_received()] == texts
    proto.connection_lost(None)


async def test_a_compressed_connection_still_gets_compressed_frames():
    proto, transport, client = await open_connection([ClientPerMessageDeflateFactory()])
    assert proto.conn.extensions  # negotiated: frames go through websockets
    client.events_received()
    start = len(transport.written)
    text = '{"type":"tick","symbol":"BTC-USD"}' * 50
    await proto.send({"type": "websocket.send", "text": text})
    await asyncio.sleep(0)
    sent = bytes(transport.written[start:])
    assert len(sent) < len(text) // 4 and sent[0] & 0x40  # RSV1: compressed
    client.receive_data(sent)
    [frame] = client.events_received()
    assert frame.data.decode() == text
    proto.connection_lost(None)


async def test_a_connection_is_flushed_as_soon_as_another_one_writes():
    one, t1, _ = await open_connection()
    two, t2, _ = await open_connection()
    await asyncio.sleep(0)
    start1, start2 = len(t1.written), len(t2.written)
    await one.send({"type": "websocket.send", "text": "a1"})
    await one.send({"type": "websocket.send", "text": "a2"})
    assert len(t1.written) == start1  # still gathering
    await two.send({"type": "websocket.send", "text": "b1"})
    assert len(t1.written) > start1  # the first connection's frames left, together
    assert len(t2.written) == start2
    await asyncio.sleep(0)
    assert len(t2.written) > start2  # the last one at the end of the turn
    one.connection_lost(None)
    two.connection_lost(None)


async def test_the_scope_offers_a_write_that_frames_at_once_or_says_it_cannot():
    from streaming.extensions import write_extension

    proto, transport, client = await open_connection()
    client.events_received()
    write = write_extension(proto.scope)
    assert write is not None
    start = len(transport.written)
    assert write(b'{"type":"ticks"}') is True
    await asyncio.sleep(0)  # coalesced with the turn's other writes, like send
    client.receive_data(bytes(transport.written[start:]))
    assert [e.data.decode() for e in client.events_received()] == ['{"type":"ticks"}']
    proto.writable.clear()  # the transport asked us to stop writing (a full socket)
    assert write(b"{}") is False  # the caller falls back to send, which waits
    proto.writable.set()
    proto.connection_lost(None)


async def test_a_compressed_connection_gets_no_write_at_once():
    from streaming.extensions import write_extension

    proto, _, _ = await open_connection([ClientPerMessageDeflateFactory()])
    assert write_extension(proto.scope)(b"{}") is False  # frames go through websockets
    proto.connection_lost(None)


def close_received(client: ClientProtocol, transport: Transport, start: int):
    """The close frame the client finds in what was written from ``start`` on, if any."""
    client.receive_data(bytes(transport.written[start:]))
    client.events_received()
    return client.close_rcvd


async def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_close_is_written_at_once_though_the_socket_is_full():
    proto, transport, client = await open_connection()
    client.events_received()
    start = len(transport.written)
    proto.pause_writing()  # the transport's buffer is over its high-water mark
    # uvicorn's send waits for the socket to drain first, which a client that stopped
    # reading never lets happen: the 4008 then never left.
    await asyncio.wait_for(proto.send({"type": "websocket.close", "code": 4008}), 1)
    await asyncio.sleep(0)  # the turn's writes go out
    assert close_received(client, transport, start).code == 4008
    assert (await asyncio.wait_for(proto.receive(), 1))["type"] == "websocket.disconnect"
    with pytest.raises(ClientDisconnected):  # the writer's next frame: the client is gone
        await asyncio.wait_for(proto.send({"type": "websocket.send", "text": "{}"}), 1)
    proto.connection_lost(None)


async def test_a_client_that_does_not_answer_the_close_in_time_is_reset():
    proto, transport, _ = await open_connection()
    proto.close_timeout = 0.05  # settings.WS_CLOSE_TIMEOUT, 10 s unless set
    proto.pause_writing()
    await proto.send({"type": "websocket.close", "code": 4008})
    await wait_for(lambda: transport.aborted)  # reset, not closed after a drain
    proto.connection_lost(None)


async def test_a_client_that_answers_the_close_is_closed_cleanly():
    proto, transport, client = await open_connection()
    client.events_received()
    start = len(transport.written)
    proto.close_timeout = 0.05
    await proto.send({"type": "websocket.close", "code": 4008})
    await asyncio.sleep(0)
    close_received(client, transport, start)
    proto.data_received(b"".join(client.data_to_send()))  # its answer
    await wait_for(lambda: transport.closing)
    await asyncio.sleep(0.1)  # past close_timeout: the timer was cancelled
    assert not transport.aborted
    proto.connection_lost(None)


async def test_a_client_that_does_not_answer_a_ping_is_closed_with_4008_not_1011():
    proto, transport, client = await open_connection(ws_ping_interval=0.02, ws_ping_timeout=0.05)
    client.events_received()
    start = len(transport.written)
    proto.pause_writing()  # it stopped reading: the ping and its backlog stay unread
    await wait_for(lambda: proto.close_sent)
    await asyncio.sleep(0)  # the turn's writes go out
    close = close_received(client, transport, start)  # behind the unanswered ping
    assert (close.code, close.reason) == (4008, "keepalive ping timeout")
    # The app hears the client went silent, and stops writing to it.
    assert (await asyncio.wait_for(proto.receive(), 1)) == {
        "type": "websocket.disconnect",
        "code": 1006,
        "reason": "keepalive ping timeout",
    }
    proto.connection_lost(None)


def test_unknown_releases_are_named_and_known_ones_are_not(monkeypatch):
    monkeypatch.setattr(
        uvicorn_ws, "installed_versions", lambda: {"uvicorn": "0.55.3", "websockets": "17.4"}
    )
    assert uvicorn_ws.unknown_versions() == []
    monkeypatch.setattr(
        uvicorn_ws, "installed_versions", lambda: {"uvicorn": "0.56.0", "websockets": "17.40"}
    )
    assert uvicorn_ws.unknown_versions() == ["uvicorn 0.56.0", "websockets 17.40"]
    # What is installed now is what the tests run on: it must be known.
    monkeypatch.undo()
    assert uvicorn_ws.unknown_versions() == []


def test_the_server_falls_back_to_uvicorns_protocol_with_one_warning(monkeypatch, caplog):
    monkeypatch.setenv("ASGI_SERVER", "uvicorn")
    argv = serve.role_argv("web")
    assert argv[argv.index("--ws") + 1] == serve.WS_PROTOCOL
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    monkeypatch.setattr(
        uvicorn_ws, "installed_versions", lambda: {"uvicorn": "0.56.0", "websockets": "17.4"}
    )
    argv = serve.role_argv("web")
    assert argv[argv.index("--ws") + 1] == "websockets-sansio"
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "uvicorn 0.56.0" in warnings[0].getMessage()


def test_pyproject_pins_the_releases_the_protocol_knows():
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text())["project"]
    pins = project["dependencies"] + project["optional-dependencies"]["dev"]
    for name, prefix in uvicorn_ws.KNOWN_VERSIONS.items():
        major, minor = prefix.split(".")
        wanted = f">={prefix},<{major}.{int(minor) + 1}"
        found = [p for p in pins if re.match(rf"{name}(\[\w+\])?[<>=]", p)]
        assert found and all(p.endswith(wanted) for p in found), (name, found)
