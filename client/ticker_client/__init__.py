"""ticker_client: an asyncio client of the ticker price stream (WebSocket protocol v1).

It talks to the server over WebSocket only (its one dependency is ``websockets``)::

    from ticker_client import TickerClient

    async with TickerClient("ws://127.0.0.1:8000/ws/prices/", token="tk_...") as client:
        await client.subscribe(["BTC-USD"])
        async for tick in client:
            print(tick.symbol, tick.seq, tick.price)

See client/README.md, docs/protocol.md and the AsyncAPI document at /api/asyncapi.json.
"""

from .book import LocalBook, checksum
from .client import CloseCode, TickerClient, backoff_delay
from .errors import AuthError, ClientClosed, ConnectFailed, TickerClientError
from .events import (
    BookChanged,
    BookResync,
    ClientStats,
    Connected,
    Disconnected,
    Event,
    Gap,
    Message,
    Mode,
    Rejected,
    Reset,
    ServerError,
    Snapshot,
    SubscribeResult,
    Tick,
    Unsubscribed,
)

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "BookChanged",
    "BookResync",
    "ClientClosed",
    "ClientStats",
    "CloseCode",
    "ConnectFailed",
    "Connected",
    "Disconnected",
    "Event",
    "Gap",
    "LocalBook",
    "Message",
    "Mode",
    "Rejected",
    "Reset",
    "ServerError",
    "Snapshot",
    "SubscribeResult",
    "Tick",
    "TickerClient",
    "TickerClientError",
    "Unsubscribed",
    "backoff_delay",
    "checksum",
]
