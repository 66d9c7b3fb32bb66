"""``coinbase``: the Coinbase Exchange market-data WebSocket (COINBASE_WS_URL).

Subscribes to the ``ticker``, ``heartbeat`` and ``level2_batch`` channels of one product
(option ``product_id``, default the ticker, e.g. BTC-USD) and maps each ticker message's
``price``, ``best_bid``, ``best_ask``, ``last_size`` and ``side`` to a tick (``time`` is
kept as the exchange time of the last tick; our ``ts`` is the publish time, on our clock).

Sides: the ``ticker`` channel's ``side`` is the taker's (docs.cdp.coinbase.com, Exchange
WebSocket channels, the ticker example: ``"side": "buy", // taker side``), so it is the
aggressor as it stands. (The ``matches`` channel's ``side`` is the other one: "the side
field indicates the maker order side", a ``sell`` there is a buyer taking an ask. This
source does not read matches.)

The book: ``level2_batch`` (level2 updates batched every 50 ms, public, unlike ``level2``)
sends a ``snapshot`` of the whole book (``bids``, ``asks``: ``[price, size]`` strings)
right after subscribing, then ``l2update`` messages whose ``changes`` are ``[side,
price, size]`` with ``buy`` for bids and ``sell`` for asks, absolute sizes, "0" deleting
the level. The snapshot becomes a ``BookDraft(snapshot=True)`` and each l2update a
``BookDraft(snapshot=False)``. level2 messages carry no sequence number, so a lost one
cannot be seen from the numbering; what can be seen is a broken book: an l2update that
cannot be read or applied, or a crossed book (best bid at or above best ask; it is
published first, so the feed loop counts it), discards the book and reconnects, and the
new connection's snapshot syncs it again (the feed loop counts each snapshot after the
first in ``resyncs``).

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

from markets.book import BookError, OrderBook
from markets.ticks import TickDraft

from .base import BookDraft, draft, non_negative, positive
from .exchange import Draft, ExchangeSource, Reconnect

logger = logging.getLogger(__name__)

CHANNELS = ("ticker", "heartbeat", "level2_batch")
# A level2 snapshot holds the product's whole book: BTC-USD's is a few MB of JSON.
MAX_SNAPSHOT_MESSAGE_BYTES = 32 * 1024 * 1024
CHANGE_SIDES = {"buy": "bids", "sell": "asks"}


def _levels(value: object) -> list[tuple[str, str]] | None:
    """``[[price, size], ...]`` as string pairs, or None if malformed."""
    if not isinstance(value, list):
        return None
    levels = []
    for level in value:
        if not isinstance(level, list) or len(level) < 2:
            return None
        if not isinstance(level[0], str) or not isinstance(level[1], str):
            return None
        levels.append((level[0], level[1]))
    return levels


def parse_time_ms(value: object) -> int:
    """Epoch ms of an ISO-8601 time such as 2022-10-19T23:28:22.061769Z; 0 if unreadable."""
    try:
        return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return 0


class CoinbaseSource(ExchangeSource):
    name = "coinbase"
    has_book = True
    # Heartbeats come every second; ten seconds of silence is a dead connection.
    stall_seconds = 10.0
    max_message_bytes = MAX_SNAPSHOT_MESSAGE_BYTES

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.product_id = str(self.config.options.get("product_id") or self.config.ticker)
        self.last_sequence: int | None = None
        self.last_trade_id: int | None = None
        self.missed_trades = 0
        self.book = OrderBook()
        self.synced = False  # a snapshot came on this connection
        self.syncs = 0  # snapshots over the source's life

    def url(self) -> str:
        return settings.COINBASE_WS_URL

    def on_connect(self) -> None:
        super().on_connect()
        # A new connection may restart the numbering's view; trade ids carry on.
        self.last_sequence = None
        # Its level2_batch starts with a new snapshot.
        self.book.clear()
        self.synced = False

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

    def handle(self, message: dict) -> Draft | None:
        kind = message.get("type")
        if kind == "ticker":
            return self._ticker(message)
        if kind == "l2update":
            return self._l2update(message)
        if kind == "snapshot":
            return self._snapshot(message)
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
        if not confirmed & {"level2_batch", "level2"}:
            # Ticks go on; the book stays as it was (none until a snapshot comes).
            self.problems.report("subscriptions do not include level2_batch: no book")
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
        # The ticker's side is the taker's: the aggressor as it stands (module docstring).
        side = message.get("side")
        return draft(
            self.symbol,
            price,
            positive(message.get("best_bid")),
            positive(message.get("best_ask")),
            size,
            side=side if side in ("buy", "sell") else None,
        )

    # --- The order book (level2_batch).

    def _snapshot(self, message: dict) -> BookDraft | None:
        if message.get("product_id") != self.product_id:
            self.ignored("snapshot of another product")
            return None
        bids, asks = _levels(message.get("bids")), _levels(message.get("asks"))
        if bids is None or asks is None:
            self.bad("snapshot without valid bids and asks")
            raise Reconnect("unreadable book snapshot")
        try:
            book = OrderBook.from_levels(bids=bids, asks=asks)
        except BookError as exc:
            self.bad("snapshot with a level that is not a decimal", str(exc))
            raise Reconnect("unreadable book snapshot") from None
        self.book = book
        self.synced = True
        self.syncs += 1
        if self.syncs == 1:
            logger.info(
                "%s %s: book synced (%d bids, %d asks)", self.name, self.symbol, *book.depths()
            )
        else:  # the feed loop counts it (resyncs); its cause was logged when it happened
            self.problems.report("book synced again", "a new snapshot")
        top_bids, top_asks = book.top(max(book.depths()))
        self._resync_if_crossed()
        return BookDraft(self.symbol, bids=top_bids, asks=top_asks, snapshot=True)

    def _l2update(self, message: dict) -> BookDraft | None:
        if message.get("product_id") != self.product_id:
            self.ignored("l2update of another product")
            return None
        changes = message.get("changes")
        sides: dict[str, list[tuple[str, str]]] = {"bids": [], "asks": []}
        if not isinstance(changes, list):
            changes = None
        else:
            for change in changes:
                if (
                    not isinstance(change, list)
                    or len(change) < 3
                    or change[0] not in CHANGE_SIDES
                    or not isinstance(change[1], str)
                    or not isinstance(change[2], str)
                ):
                    changes = None
                    break
                sides[CHANGE_SIDES[change[0]]].append((change[1], change[2]))
        if changes is None:
            self.bad("l2update without valid changes")
            if self.synced:  # a change we cannot read is one our book misses
                raise Reconnect("unreadable l2update: book resync")
            return None
        if not self.synced:
            self.ignored("l2update before the snapshot")
            return None
        try:
            self.book.apply(bids=sides["bids"], asks=sides["asks"])
        except BookError as exc:
            self.bad("l2update with a level that is not a decimal", str(exc))
            raise Reconnect("l2update we could not apply: book resync") from None
        self._resync_if_crossed()
        return BookDraft(self.symbol, bids=sides["bids"], asks=sides["asks"], snapshot=False)

    def _resync_if_crossed(self) -> None:
        """A crossed book is published as it is (the feed loop counts and logs the
        episode), then the source reconnects for a new snapshot: no real book is crossed."""
        if self.book.crossed():
            self.synced = False
            self.reconnect_after = "crossed book: resync"

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
