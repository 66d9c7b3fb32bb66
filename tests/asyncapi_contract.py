"""Keeps the AsyncAPI document (streaming/asyncapi.py, /api/asyncapi.json) true.

A pytest plugin (tests/conftest.py loads it). In every test of this process, every text
frame that a ``websockets`` client connection to ``/ws/prices/`` receives is recorded,
and so is every command sent by the client library (connections whose User-Agent is
``ticker-client/...``), and the close code the server sent. After the test, each is
checked against the document: a server message must match the schema of the message
whose ``type`` it names, a command the schema of its ``action``, a close code must be
one the channel lists. A type, field or code missing from the document fails the test
(as an error in its teardown).

Recording only appends the frame's text (the checks run after the test), so it does not
slow the clients the real-stack tests time. Past ``MAX_FRAMES`` frames in one test only
every ``SAMPLE_EVERY``-th tick frame is kept; every other frame always is.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

PATH = "/ws/prices/"
CLIENT_LIBRARY_AGENT = "ticker-client/"
MAX_FRAMES = 20_000
SAMPLE_EVERY = 50
BASE_URI = "urn:ticker:asyncapi"


class Contract:
    """Validators for every message of the document, found by ``type`` or ``action``."""

    def __init__(self, document: dict[str, Any]) -> None:
        from jsonschema import Draft7Validator
        from referencing import Registry
        from referencing.jsonschema import DRAFT7

        self.document = document
        registry = Registry().with_resource(BASE_URI, DRAFT7.create_resource(document))
        self.server: dict[str, Any] = {}
        self.commands: dict[str, Any] = {}
        for key, message in document["components"]["messages"].items():
            payload = message["payload"]
            if "$ref" in payload:  # a schema of components/schemas
                payload = document["components"]["schemas"][payload["$ref"].rsplit("/", 1)[1]]
            properties = payload.get("properties", {})
            pointer = f"{BASE_URI}#/components/messages/{key}/payload"
            validator = Draft7Validator({"$ref": pointer}, registry=registry)
            if "type" in properties and "const" in properties["type"]:
                self.server[properties["type"]["const"]] = validator
            elif "action" in properties and "const" in properties["action"]:
                self.commands[properties["action"]["const"]] = validator
        self.close_codes = {int(c) for c in document["channels"]["prices"]["x-close-codes"]}
        self.error_codes = set(
            document["components"]["messages"]["server.error"]["payload"]["properties"]["code"][
                "enum"
            ]
        )

    def check_server(self, msg: Any) -> list[str]:
        """What is wrong with server message ``msg`` (nothing: an empty list)."""
        kind = msg.get("type") if isinstance(msg, dict) else None
        validator = self.server.get(kind)  # type: ignore[arg-type]
        if validator is None:
            return [f"server message type {kind!r} is not in the AsyncAPI document: {msg!r:.200}"]
        return [
            f"{kind}: {e.message} at {list(e.absolute_path)}" for e in validator.iter_errors(msg)
        ]

    def check_command(self, msg: Any) -> list[str]:
        action = msg.get("action") if isinstance(msg, dict) else None
        validator = self.commands.get(action)  # type: ignore[arg-type]
        if validator is None:
            return [f"command {action!r} is not in the AsyncAPI document: {msg!r:.200}"]
        return [
            f"{action}: {e.message} at {list(e.absolute_path)}" for e in validator.iter_errors(msg)
        ]

    def check_close(self, code: int) -> list[str]:
        if code in self.close_codes:
            return []
        return [f"close code {code} is not in the AsyncAPI document"]


@cache
def contract() -> Contract:
    from streaming.asyncapi import build_document

    return Contract(build_document())


@dataclass
class Recorder:
    """What the current test's price-stream connections received and sent."""

    frames: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    connections: list[ClientConnection] = field(default_factory=list)
    received = 0
    seen: Counter[str] = field(default_factory=Counter)  # server types, whole session
    seen_commands: Counter[str] = field(default_factory=Counter)
    seen_close: Counter[int] = field(default_factory=Counter)
    checked = 0

    def on_frame(self, conn: ClientConnection, text: str) -> None:
        self.received += 1
        if self.received > MAX_FRAMES and text.startswith(('{"type":"tick', '{"type": "tick')):
            if self.received % SAMPLE_EVERY:
                return
        self.frames.append(text)
        if conn not in self.connections:
            self.connections.append(conn)

    def on_send(self, conn: ClientConnection, text: str) -> None:
        self.commands.append(text)
        if conn not in self.connections:
            self.connections.append(conn)

    def check(self) -> list[str]:
        """Check and forget what this test recorded; the problems found."""
        frames, commands, connections = self.frames, self.commands, self.connections
        self.frames, self.commands, self.connections, self.received = [], [], [], 0
        if not (frames or commands or connections):
            return []
        c = contract()
        problems: list[str] = []
        for text in frames:
            try:
                msg = json.loads(text)
            except ValueError:
                problems.append(f"the server sent a frame that is not JSON: {text[:200]!r}")
                continue
            problems += c.check_server(msg)
            kind = msg.get("type") if isinstance(msg, dict) else None
            self.seen[str(kind)] += 1
            if kind == "error":
                self.seen[f"error:{msg.get('code')}"] += 1
            if kind == "unsubscribed" and "reason" in msg:
                self.seen[f"unsubscribed:{msg['reason']}"] += 1
        for text in commands:
            msg = json.loads(text)
            problems += c.check_command(msg)
            self.seen_commands[str(msg.get("action"))] += 1
        for conn in connections:
            if conn.protocol.close_rcvd is not None:
                problems += c.check_close(conn.protocol.close_rcvd.code)
                self.seen_close[conn.protocol.close_rcvd.code] += 1
        self.checked += len(frames) + len(commands)
        # One line per kind of problem is enough to read.
        return list(dict.fromkeys(problems))[:20]


RECORDER = Recorder()


def _is_price_stream(conn: ClientConnection) -> bool:
    request = getattr(conn, "request", None)
    return request is not None and request.path.split("?")[0] == PATH


def _from_client_library(conn: ClientConnection) -> bool:
    request = getattr(conn, "request", None)
    agent = request.headers.get("User-Agent", "") if request is not None else ""
    return agent.startswith(CLIENT_LIBRARY_AGENT)


_recv = ClientConnection.recv
_send = ClientConnection.send


async def _recording_recv(self: ClientConnection, *args: Any, **kwargs: Any) -> Any:
    data = await _recv(self, *args, **kwargs)
    if isinstance(data, str) and _is_price_stream(self):
        RECORDER.on_frame(self, data)
    return data


async def _recording_send(self: ClientConnection, message: Any, *args: Any, **kwargs: Any) -> Any:
    if isinstance(message, str) and _is_price_stream(self) and _from_client_library(self):
        RECORDER.on_send(self, message)
    return await _send(self, message, *args, **kwargs)


def install() -> None:
    """Wrap the client connection's recv and send (idempotent)."""
    ClientConnection.recv = _recording_recv  # type: ignore[method-assign]
    ClientConnection.send = _recording_send  # type: ignore[method-assign]


install()


@pytest.fixture(autouse=True)
def _asyncapi_contract():
    """Check what the test's price-stream connections saw against the AsyncAPI document."""
    RECORDER.frames.clear()
    RECORDER.commands.clear()
    RECORDER.connections.clear()
    RECORDER.received = 0
    yield RECORDER
    problems = RECORDER.check()
    if problems:
        pytest.fail(
            "frames that the AsyncAPI document (streaming/asyncapi.py) does not describe:\n  "
            + "\n  ".join(problems),
            pytrace=False,
        )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if RECORDER.checked:
        seen = ", ".join(f"{k} {v}" for k, v in sorted(RECORDER.seen.items()))
        terminalreporter.write_line(
            f"AsyncAPI contract: {RECORDER.checked} frames and commands checked; server "
            f"messages: {seen}; commands: {dict(RECORDER.seen_commands)}; "
            f"close codes: {dict(RECORDER.seen_close)}"
        )
