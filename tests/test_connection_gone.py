"""streaming.connection: a client that left mid-write is counted, not logged as an error."""

import asyncio
import logging

from uvicorn.protocols.utils import ClientDisconnected

from streaming import connection as connection_module
from streaming.connection import Connection
from streaming.faults import FaultLog
from telemetry import metrics


class NoGuard:
    def watch(self, conn) -> None:
        pass

    def forget(self, conn) -> None:
        pass


def connection(exc: BaseException) -> Connection:
    """A Connection whose every write raises ``exc``."""

    def write(payload: bytes) -> bool:
        raise exc

    async def send_text(text: str) -> None:
        raise exc

    async def close(code: int) -> None:
        pass

    return Connection(send_text=send_text, write=write, close=close, guard=NoGuard())


def gone_writes() -> float:
    return metrics.CLIENT_GONE_WRITES._value.get()


async def test_a_client_that_disconnected_mid_write_is_counted_and_logged_at_debug(caplog):
    caplog.set_level(logging.DEBUG, logger="streaming.connection")
    before = gone_writes()
    conn = connection(ClientDisconnected())
    conn.send({"type": "pong"})
    await asyncio.sleep(0)  # the outbox reports it soon, not during the write
    assert gone_writes() == before + 1
    records = [r for r in caplog.records if r.name == "streaming.connection"]
    assert [r.levelno for r in records] == [logging.DEBUG]
    conn.detach()


async def test_any_other_failure_to_write_is_still_an_error(caplog, monkeypatch):
    # A fresh fault log: it logs the first fault of a kind per process.
    monkeypatch.setattr(connection_module, "faults", FaultLog(connection_module.logger))
    before = gone_writes()
    conn = connection(RuntimeError("a bug"))
    conn.send({"type": "pong"})
    await asyncio.sleep(0)
    assert gone_writes() == before
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "writing to a client failed" in errors[0].getMessage()
    conn.detach()
