"""``binance``: the Binance spot WebSocket (BINANCE_WS_URL), trades and best bid/ask.

Connects to the combined-stream endpoint ``/stream?streams=<s>@trade/<s>@bookTicker``
(``<s>`` is the option ``symbol`` in lower case, default the ticker without its dash,
e.g. ``btcusdt``), whose events come wrapped as ``{"stream": ..., "data": ...}``, and
sends ``SUBSCRIBE`` for the same streams with an id: its ``{"result": null, "id": n}``
reply confirms the subscription (subscribing twice is harmless on Binance), and an
error reply for that id means it failed, which reconnects with backoff.

Each ``trade`` event (``p`` price, ``q`` quantity) becomes a tick, with the bid and ask
of the latest ``bookTicker`` event (``b``, ``a``; the trade price until one arrives).
Trade ids (``t``) are consecutive per symbol: a jump counts as a gap (also across a
reconnect), and a trade id not above the last one is dropped as a duplicate.

The websockets library answers Binance's ping frames (every 20 s) with pongs by itself.
Binance ends every connection after 24 h, and sends ``serverShutdown`` before planned
maintenance: both reconnect at once (a connection up that long has reset the backoff).
"""

import logging

from django.conf import settings

from markets.ticks import TickDraft

from .base import draft, non_negative, positive
from .exchange import ExchangeSource, Reconnect

logger = logging.getLogger(__name__)


class BinanceSource(ExchangeSource):
    name = "binance"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        default = self.config.ticker.replace("-", "")
        self.stream_symbol = str(self.config.options.get("symbol") or default).lower()
        self.streams = [f"{self.stream_symbol}@trade", f"{self.stream_symbol}@bookTicker"]
        self.request_id = 0
        self.bid: float | None = None
        self.ask: float | None = None
        self.last_trade_id: int | None = None
        self.missed_trades = 0

    def url(self) -> str:
        return f"{settings.BINANCE_WS_URL.rstrip('/')}/stream?streams={'/'.join(self.streams)}"

    def subscribe_messages(self) -> list[dict]:
        self.request_id += 1
        return [{"method": "SUBSCRIBE", "params": self.streams, "id": self.request_id}]

    def handle(self, message: dict) -> TickDraft | None:
        if "stream" in message and "data" in message:
            return self._event(str(message["stream"]), message["data"])
        if "id" in message and ("result" in message or "error" in message or "code" in message):
            self._reply(message)
            return None
        if message.get("e") == "serverShutdown":
            raise Reconnect("serverShutdown")
        self.ignored("message without the combined-stream wrapper")
        return None

    def _reply(self, message: dict) -> None:
        error = message.get("error") if isinstance(message.get("error"), dict) else message
        if "code" in error:
            text = f"code {error.get('code')}: {error.get('msg', '')}"
            self.error(text)
            if message.get("id") == self.request_id and not self.subscribed:
                raise Reconnect(f"SUBSCRIBE refused: {text}")
            return
        if message.get("id") == self.request_id and message.get("result") is None:
            self.subscribed = True
        else:
            self.ignored("reply to another request")

    def _event(self, stream: str, data: object) -> TickDraft | None:
        if not isinstance(data, dict):
            self.bad("event data is not an object")
            return None
        if data.get("e") == "serverShutdown":
            raise Reconnect("serverShutdown")
        if stream.endswith("@bookTicker"):
            bid, ask = positive(data.get("b")), positive(data.get("a"))
            if bid is None or ask is None:
                self.bad("bookTicker without a valid bid and ask")
                return None
            self.bid, self.ask = bid, ask
            return None
        if stream.endswith("@trade") and data.get("e") == "trade":
            return self._trade(data)
        self.ignored(f"stream {stream[:60]!r}")
        return None

    def _trade(self, data: dict) -> TickDraft | None:
        price = positive(data.get("p"))
        size = non_negative(data.get("q"))
        trade_id = data.get("t")
        if price is None or size is None:
            self.bad("trade without a valid price and quantity")
            return None
        if not isinstance(trade_id, int) or isinstance(trade_id, bool):
            self.bad("trade without an integer id")
            return None
        if self.last_trade_id is not None:
            if trade_id <= self.last_trade_id:
                self.ignored("trade id not above the last one (duplicate or out of order)")
                return None
            if trade_id > self.last_trade_id + 1:
                missed = trade_id - self.last_trade_id - 1
                self.stats.gaps += 1
                self.missed_trades += missed
                self.problems.report("gap: trades missed", f"{missed} before trade {trade_id}")
        self.last_trade_id = trade_id
        trade_time = data.get("T")
        if isinstance(trade_time, int) and not isinstance(trade_time, bool):
            self.stats.exchange_ms = trade_time
        return draft(self.symbol, price, self.bid, self.ask, size)
