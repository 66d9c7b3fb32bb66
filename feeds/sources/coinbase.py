"""``coinbase``: the Coinbase Exchange market-data WebSocket (COINBASE_WS_URL).

Subscribes to the ``ticker`` and ``heartbeat`` channels of one product (option
``product_id``, default the ticker, e.g. BTC-USD) and maps each ticker message's
``price``, ``best_bid``, ``best_ask`` and ``last_size`` to a tick (``time`` is kept as
the exchange time of the last tick; our ``ts`` is the publish time, on our clock).

Sequence numbers: Coinbase numbers every message of a product (``sequence``), but the
ticker channel carries only some of them, so a jump in ``sequence`` between two ticker
messages is normal. A message whose ``sequence`` is not above the last one seen is a
duplicate or arrived out of order: it is dropped and counted as ignored. Missed data is
found with the heartbeat, which carries the product's current ``sequence`` and
``last_trade_id``: a heartbeat whose ``last_trade_id`` is past the last ticker's
``trade_id`` shows trades we never received, and counts as a gap (also across a
reconnect, so trades missed while disconnected count too). ``error`` messages are
counted and logged; one that arrives before the ``subscriptions`` confirmation means
the subscription failed, and the adapter reconnects with backoff.
"""

import logging
from datetime import datetime

from django.conf import settings

from markets.ticks import TickDraft

from .base import draft, non_negative, positive
from .exchange import ExchangeSource, Reconnect

logger = logging.getLogger(__name__)

CHANNELS = ("ticker", "heartbeat")


def parse_time_ms(value: object) -> int:
    """Epoch ms of an ISO-8601 time such as 2022-10-19T23:28:22.061769Z; 0 if unreadable."""
    try:
        return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return 0


class CoinbaseSource(ExchangeSource):
    name = "coinbase"
    # Heartbeats come every second; ten seconds of silence is a dead connection.
    stall_seconds = 10.0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.product_id = str(self.config.options.get("product_id") or self.config.ticker)
        self.last_sequence: int | None = None
        self.last_trade_id: int | None = None
        self.missed_trades = 0

    def url(self) -> str:
        return settings.COINBASE_WS_URL

    def on_connect(self) -> None:
        super().on_connect()
        # A new connection may restart the numbering's view; trade ids carry on.
        self.last_sequence = None

    def subscribe_messages(self) -> list[dict]:
        return [{"type": "subscribe", "product_ids": [self.product_id], "channels": list(CHANNELS)}]

    def _fresh(self, message: dict) -> bool:
        """False (and counted) for a message whose sequence is not above the last one."""
        sequence = message.get("sequence")
        if not isinstance(sequence, int) or isinstance(sequence, bool):
            self.bad(f"{message.get('type')} without an integer sequence")
            return False
        if self.last_sequence is not None and sequence <= self.last_sequence:
            self.ignored("sequence not above the last one (duplicate or out of order)")
            return False
        self.last_sequence = sequence
        return True

    def handle(self, message: dict) -> TickDraft | None:
        kind = message.get("type")
        if kind == "ticker":
            return self._ticker(message)
        if kind == "heartbeat":
            self._heartbeat(message)
        elif kind == "subscriptions":
            self._subscriptions(message)
        elif kind == "error":
            text = f"{message.get('message', '')}: {message.get('reason', '')}".strip(": ")
            self.error(text or "error without a message")
            if not self.subscribed:
                raise Reconnect(f"subscription refused: {text}")
        else:
            self.ignored(f"type {str(kind)[:40]!r}")
        return None

    def _subscriptions(self, message: dict) -> None:
        channels = message.get("channels")
        if not isinstance(channels, list):
            self.bad("subscriptions without channels")
            return
        confirmed = {
            c.get("name")
            for c in channels
            if isinstance(c, dict) and self.product_id in (c.get("product_ids") or ())
        }
        if "ticker" not in confirmed:
            raise Reconnect(f"subscriptions do not include ticker for {self.product_id}")
        self.subscribed = True

    def _ticker(self, message: dict) -> TickDraft | None:
        if message.get("product_id") != self.product_id:
            self.ignored("ticker of another product")
            return None
        price = positive(message.get("price"))
        if price is None:
            self.bad("ticker without a valid price")
            return None
        size = non_negative(message.get("last_size"))
        if size is None:
            self.bad("ticker without a valid last_size")
            return None
        if not self._fresh(message):
            return None
        trade_id = message.get("trade_id")
        if isinstance(trade_id, int) and not isinstance(trade_id, bool):
            self.last_trade_id = max(trade_id, self.last_trade_id or 0)
        self.stats.exchange_ms = parse_time_ms(message.get("time")) or self.stats.exchange_ms
        return draft(
            self.symbol,
            price,
            positive(message.get("best_bid")),
            positive(message.get("best_ask")),
            size,
        )

    def _heartbeat(self, message: dict) -> None:
        if message.get("product_id") != self.product_id:
            self.ignored("heartbeat of another product")
            return
        if not self._fresh(message):
            return
        last = message.get("last_trade_id")
        if not isinstance(last, int) or isinstance(last, bool) or last <= 0:
            return  # some heartbeats carry 0: nothing to check against
        if self.last_trade_id is not None and last > self.last_trade_id:
            missed = last - self.last_trade_id
            self.stats.gaps += 1
            self.missed_trades += missed
            self.problems.report(
                "gap: trades missed", f"{missed} before sequence {message.get('sequence')}"
            )
        self.last_trade_id = max(last, self.last_trade_id or 0)
