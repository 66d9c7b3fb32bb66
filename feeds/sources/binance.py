"""``binance``: the Binance spot WebSocket (BINANCE_WS_URL): trades, best bid/ask, the book.

Connects to the combined-stream endpoint
``/stream?streams=<s>@trade/<s>@bookTicker/<s>@depth@100ms`` (``<s>`` is the option
``symbol`` in lower case, default the ticker without its dash, e.g. ``btcusdt``), whose
events come wrapped as ``{"stream": ..., "data": ...}``, and sends ``SUBSCRIBE`` for the
same streams with an id: its ``{"result": null, "id": n}`` reply confirms the
subscription (subscribing twice is harmless on Binance), and an error reply for that id
means it failed, which reconnects with backoff.

Each ``trade`` event (``p`` price, ``q`` quantity) becomes a tick, with the bid and ask
of the latest ``bookTicker`` event (``b``, ``a``; the trade price until one arrives) and
the aggressor's side from ``m`` ("is the buyer the market maker?": a maker buyer means
the seller took the bid, so ``sell``; otherwise ``buy``). Trade ids (``t``) are
consecutive per symbol: a jump counts as a gap (also across a reconnect), and a trade id
not above the last one is dropped as a duplicate.

The order book follows Binance's "How to manage a local order book correctly"
(binance-spot-api-docs, web-socket-streams.md): buffer the diff depth events, get a
snapshot from ``GET BINANCE_REST_URL/api/v3/depth?symbol=<S>&limit=1000`` (its
``lastUpdateId``), drop the buffered events with ``u <= lastUpdateId``; the first one
applied must have ``U <= lastUpdateId + 1 <= u`` and every later one ``U == previous u +
1``. A snapshot older than the first buffered event is fetched again; a gap (``U`` past
the previous ``u`` + 1), a level that is not a decimal, or a crossed book (best bid at
or above best ask, which no exchange's book is) discards the book and syncs again on the
same connection. Each sync yields a ``BookDraft(snapshot=True)`` with the whole book,
each applied event a ``BookDraft(snapshot=False)`` with its levels (absolute sizes, zero
deletes); a crossed book is yielded as it is, so the feed loop counts it, before the
sync starts again. The source counts ``book_gaps``; the feed loop counts
``book_updates``, ``resyncs`` and ``crossed`` as it applies the drafts. Snapshot requests
that follow one another within ``HEALTHY_SECONDS`` wait with backoff, so a broken stream
cannot hammer the REST API (a snapshot of 1000 levels weighs 50 of the 6000 a minute an
IP may use); a 429/418 answer's ``Retry-After`` is honoured.

The websockets library answers Binance's ping frames (every 20 s) with pongs by itself.
Binance ends every connection after 24 h, and sends ``serverShutdown`` before planned
maintenance: both reconnect at once (a connection up that long has reset the backoff).
"""

import asyncio
import json
import logging
from dataclasses import dataclass

import httpx
from django.conf import settings

from markets.book import BookError, OrderBook
from markets.ticks import TickDraft

from .base import Backoff, BookDraft, draft, non_negative, positive
from .exchange import HEALTHY_SECONDS, Draft, ExchangeSource, Reconnect

logger = logging.getLogger(__name__)

# Levels per side asked of the REST snapshot (Binance's own example; weight 50).
SNAPSHOT_LIMIT = 1000
# The whole snapshot request, connect to last byte.
SNAPSHOT_TIMEOUT_SECONDS = 10.0
# A larger answer is refused (1000 levels a side are about 70 kB; 5000, 350 kB).
MAX_SNAPSHOT_BYTES = 4 * 1024 * 1024
# Depth events buffered while a snapshot is on its way; past this the sync starts over.
MAX_BUFFERED_EVENTS = 2000


class SnapshotError(Exception):
    """The REST snapshot could not be had; ``retry_after`` seconds if the server said.

    ``replied``: the server answered, with an error or with something that is not a
    snapshot (counted in ``errors``), as against no answer at all (a timeout, say).
    """

    def __init__(self, text: str, retry_after: float = 0.0, *, replied: bool = True) -> None:
        super().__init__(text)
        self.retry_after = retry_after
        self.replied = replied


@dataclass(frozen=True, slots=True)
class DepthEvent:
    first: int  # U
    last: int  # u
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Snapshot:
    last_update_id: int
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]


def _levels(value: object) -> list[tuple[str, str]] | None:
    """``[[price, qty], ...]`` as (price, qty) string pairs, or None if malformed."""
    if not isinstance(value, list):
        return None
    levels = []
    for level in value:
        if not isinstance(level, list | tuple) or len(level) < 2:
            return None
        price, qty = level[0], level[1]
        if not isinstance(price, str) or not isinstance(qty, str):
            return None
        levels.append((price, qty))
    return levels


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class BinanceSource(ExchangeSource):
    name = "binance"
    has_book = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        default = self.config.ticker.replace("-", "")
        self.stream_symbol = str(self.config.options.get("symbol") or default).lower()
        self.streams = [
            f"{self.stream_symbol}@trade",
            f"{self.stream_symbol}@bookTicker",
            f"{self.stream_symbol}@depth@100ms",
        ]
        self.request_id = 0
        self.bid: float | None = None
        self.ask: float | None = None
        self.last_trade_id: int | None = None
        self.missed_trades = 0
        # The book: synced (last_update_id set) or syncing (events buffered).
        self.book = OrderBook()
        self.last_update_id: int | None = None
        self.buffered: list[DepthEvent] = []
        self.syncs = 0  # books synced over the source's life
        self.sync_backoff: Backoff | None = None  # made at the first request (backoff_base)
        self.last_fetch_at: float | None = None  # loop time of the last snapshot request
        self.retry_after = 0.0
        self.http: httpx.AsyncClient | None = None

    def url(self) -> str:
        return f"{settings.BINANCE_WS_URL.rstrip('/')}/stream?streams={'/'.join(self.streams)}"

    def subscribe_messages(self) -> list[dict]:
        self.request_id += 1
        return [{"method": "SUBSCRIBE", "params": self.streams, "id": self.request_id}]

    def on_connect(self) -> None:
        super().on_connect()
        # A new connection's stream starts anywhere: the book syncs again from its events.
        self._unsync()

    async def close(self) -> None:
        if self.http is not None:
            await self.http.aclose()
            self.http = None

    def handle(self, message: dict) -> Draft | None:
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

    def _event(self, stream: str, data: object) -> Draft | None:
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
        if "@depth" in stream and data.get("e") == "depthUpdate":
            return self._depth(data)
        self.ignored(f"stream {stream[:60]!r}")
        return None

    def _trade(self, data: dict) -> TickDraft | None:
        price = positive(data.get("p"))
        size = non_negative(data.get("q"))
        trade_id = data.get("t")
        if price is None or size is None:
            self.bad("trade without a valid price and quantity")
            return None
        if _int(trade_id) is None:
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
        if _int(trade_time) is not None:
            self.stats.exchange_ms = trade_time
        # "m": is the buyer the market maker? Then the seller was the aggressor.
        maker_buyer = data.get("m")
        side = None if not isinstance(maker_buyer, bool) else ("sell" if maker_buyer else "buy")
        return draft(self.symbol, price, self.bid, self.ask, size, side=side)

    # --- The order book.

    def _depth(self, data: dict) -> BookDraft | None:
        first, last = _int(data.get("U")), _int(data.get("u"))
        bids, asks = _levels(data.get("b")), _levels(data.get("a"))
        if first is None or last is None or first > last or bids is None or asks is None:
            self.bad("depthUpdate without valid U, u, b and a")
            # An event we cannot read is one we cannot apply: sync again if it mattered.
            if self.last_update_id is not None:
                self._resync("an unreadable depth event")
            return None
        event = DepthEvent(first, last, bids, asks)
        if self.last_update_id is None:  # syncing: keep it for after the snapshot
            self.buffered.append(event)
            if len(self.buffered) > MAX_BUFFERED_EVENTS:
                self.problems.report("book: too many events buffered while syncing")
                self._unsync()
                self.buffered.append(event)
            if self.background is None:
                self.start_background(self._fetch_snapshot())
            return None
        if event.last <= self.last_update_id:
            self.ignored("depth event already applied")
            return None
        if event.first > self.last_update_id + 1:
            self._gap(event)
            return None
        return self._apply(event)

    def _apply(self, event: DepthEvent) -> BookDraft | None:
        try:
            self.book.apply(bids=event.bids, asks=event.asks)
        except BookError as exc:
            self.bad("depth event with a level that is not a decimal", str(exc))
            self._resync("a depth event we could not apply")
            return None
        self.last_update_id = event.last
        update = BookDraft(self.symbol, bids=event.bids, asks=event.asks, snapshot=False)
        self._resync_if_crossed()
        return update

    def _resync_if_crossed(self) -> None:
        """A crossed book is published as it is (the feed loop counts and logs the
        episode) and synced again: no exchange's real book is crossed."""
        if self.book.crossed():
            self._resync("crossed book")

    def _gap(self, event: DepthEvent) -> None:
        self.stats.book_gaps += 1
        self.problems.report(
            "book gap: depth updates missed",
            f"update ids {self.last_update_id + 1}..{event.first - 1}",
        )
        self._resync("gap")
        self.buffered.append(event)  # it may follow the next snapshot
        self.start_background(self._fetch_snapshot())

    def _unsync(self) -> None:
        self.book.clear()
        self.last_update_id = None
        self.buffered.clear()
        if self.background is not None:
            if self.background.done() and not self.background.cancelled():
                self.background.exception()  # a request that ended unread: no warning
            self.background.cancel()
            self.background = None

    def _resync(self, why: str) -> None:
        """Discard the book; the next depth event (or the caller) starts a new sync."""
        logger.debug("%s %s: book resync (%s)", self.name, self.symbol, why)
        self._unsync()

    async def _fetch_snapshot(self) -> Snapshot:
        """The REST snapshot, after a backoff wait if the last request was recent."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.sync_backoff is None:
            self.sync_backoff = Backoff(base=self.backoff_base, cap=self.backoff_cap)
        if self.last_fetch_at is not None and now - self.last_fetch_at < HEALTHY_SECONDS:
            delay = max(self.sync_backoff.next_delay(), self.retry_after)
            await asyncio.sleep(delay)
        else:
            self.sync_backoff.reset()
        self.retry_after = 0.0
        self.last_fetch_at = loop.time()
        if self.http is None:
            self.http = httpx.AsyncClient(
                base_url=settings.BINANCE_REST_URL.rstrip("/"),
                timeout=httpx.Timeout(SNAPSHOT_TIMEOUT_SECONDS, connect=5.0),
                headers={"Accept": "application/json"},
            )
        params = {"symbol": self.stream_symbol.upper(), "limit": SNAPSHOT_LIMIT}
        try:
            async with asyncio.timeout(SNAPSHOT_TIMEOUT_SECONDS):
                async with self.http.stream("GET", "/api/v3/depth", params=params) as response:
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_SNAPSHOT_BYTES:
                            raise SnapshotError(f"snapshot above {MAX_SNAPSHOT_BYTES} bytes")
        except (httpx.HTTPError, TimeoutError) as exc:
            raise SnapshotError(f"{type(exc).__name__}: {exc}", replied=False) from None
        if response.status_code != 200:
            retry_after = positive(response.headers.get("Retry-After")) or 0.0
            text = bytes(body[:200]).decode(errors="replace")
            raise SnapshotError(f"HTTP {response.status_code}: {text}", retry_after)
        try:
            payload = json.loads(body)
        except ValueError:
            raise SnapshotError("snapshot is not JSON") from None
        last_update_id = _int(payload.get("lastUpdateId")) if isinstance(payload, dict) else None
        bids = _levels(payload.get("bids")) if isinstance(payload, dict) else None
        asks = _levels(payload.get("asks")) if isinstance(payload, dict) else None
        if last_update_id is None or bids is None or asks is None:
            raise SnapshotError("snapshot without lastUpdateId, bids and asks")
        return Snapshot(last_update_id, bids, asks)

    def background_done(self, task: asyncio.Task) -> BookDraft | None:
        """Called when the snapshot request ended: sync the book from it and the buffer."""
        if task.cancelled():
            return None
        exc = task.exception()
        if isinstance(exc, SnapshotError):
            self.stats.errors += exc.replied
            self.stats.last_error = f"book snapshot: {exc}"[:300]
            self.problems.report("cannot get the book snapshot", str(exc))
            self.retry_after = exc.retry_after
            self.start_background(self._fetch_snapshot())
            return None
        if exc is not None:
            raise exc
        snapshot: Snapshot = task.result()
        pending = [e for e in self.buffered if e.last > snapshot.last_update_id]
        if pending and pending[0].first > snapshot.last_update_id + 1:
            # The snapshot is older than the stream we hold (a lagging cache): again.
            self.problems.report(
                "book snapshot older than the stream",
                f"lastUpdateId {snapshot.last_update_id}, first event U {pending[0].first}",
            )
            self.buffered = pending
            self.start_background(self._fetch_snapshot())
            return None
        try:
            book = OrderBook.from_levels(bids=snapshot.bids, asks=snapshot.asks)
        except BookError as exc:
            self.bad("book snapshot with a level that is not a decimal", str(exc))
            self.buffered = pending
            self.start_background(self._fetch_snapshot())
            return None
        self.book = book
        self.last_update_id = snapshot.last_update_id
        self.buffered = []
        for index, event in enumerate(pending):
            if event.first > self.last_update_id + 1:
                self._gap(event)
                self.buffered.extend(pending[index + 1 :])  # kept for the next snapshot
                return None
            try:
                self.book.apply(bids=event.bids, asks=event.asks)
            except BookError as exc:
                self.bad("depth event with a level that is not a decimal", str(exc))
                self._resync("a depth event we could not apply")
                return None
            self.last_update_id = event.last
        self.syncs += 1
        if self.syncs == 1:
            logger.info(
                "%s %s: book synced at update id %d (%d bids, %d asks)",
                self.name,
                self.symbol,
                self.last_update_id,
                *self.book.depths(),
            )
        else:  # the feed loop counts it (resyncs); its cause was logged when it happened
            self.problems.report("book synced again", f"at update id {self.last_update_id}")
        bids, asks = self.book.top(max(self.book.depths()))
        snapshot = BookDraft(self.symbol, bids=bids, asks=asks, snapshot=True)
        self._resync_if_crossed()
        return snapshot
