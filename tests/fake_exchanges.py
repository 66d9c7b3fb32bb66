"""Fake Coinbase Exchange and Binance spot WebSocket servers on 127.0.0.1, for tests.

They speak the message shapes of the exchanges' public documentation:

- Coinbase (docs.cdp.coinbase.com/exchange/websocket-feed): a client must send
  ``{"type": "subscribe", "product_ids": [...], "channels": [...]}`` within 5 s; the
  reply is ``{"type": "subscriptions", "channels": [{"name", "product_ids"}]}``, or an
  ``{"type": "error", "message", "reason"}``; then ``ticker`` and ``heartbeat`` messages
  numbered by a per-product ``sequence``.
- Binance (developers.binance.com, "WebSocket Streams"): combined streams at
  ``/stream?streams=a/b``, events wrapped as ``{"stream", "data"}``, lower-case symbols,
  ``{"method": "SUBSCRIBE", "params", "id"}`` answered by ``{"result": null, "id"}`` or
  ``{"code", "msg", "id"}``; ping frames the client must answer; a connection limit in
  time (24 h there, configurable here).

Both also keep a true order book per product (``FakeBook``) that they mutate and stream:

- Coinbase's ``level2_batch`` channel: a ``snapshot`` of the whole book right after the
  ``subscriptions`` reply, then ``l2update`` messages whose ``changes`` are
  ``[side, price, size]`` (``buy``/``sell``, absolute sizes, "0" deletes).
- Binance's diff depth stream ``<symbol>@depth@100ms`` (``depthUpdate`` events with the
  first and final update ids ``U`` and ``u``) and its REST snapshot
  ``GET /api/v3/depth?symbol=BTCUSDT&limit=N`` (``lastUpdateId``, ``bids``, ``asks``),
  served over plain HTTP on the same port (``rest_url``). A test can skip update ids (a
  gap nobody is told about), delay the snapshot, or freeze it at an older book.

Tests drive them: send a ticker or a trade, skip numbers (a gap), drop every connection
(an abrupt TCP close, or a clean close), send garbage, an oversized frame or an error,
stream at a rate, or burst. Each runs in the caller's event loop (``async with``) or in
a thread of its own (``threaded()``), for tests whose stack runs in other processes.
"""

import asyncio
import contextlib
import json
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response


def _iso(ms: float) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z")
    )


class FakeBook:
    """An exchange's true order book: price string -> size string per side, never crossed.

    Independent of markets.book on purpose: it is the oracle the sources' books are
    checked against. ``change()`` makes random level changes around the touch (new
    levels, new sizes, deletions, now and then a deletion of a level that is not there,
    which Binance documents as normal), so the touch moves and levels enter and leave
    any top-N window.
    """

    def __init__(
        self, mid: float, *, tick: str = "0.01", levels: int = 30, decimals: int = 8, seed=0
    ) -> None:
        self.rng = random.Random(seed)
        self.tick = Decimal(tick)
        self.levels = levels
        self.price_places = Decimal(tick)
        self.size_places = Decimal(1).scaleb(-decimals)
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}
        centre = Decimal(str(mid)).quantize(self.tick)
        for i in range(1, levels + 1):
            self.bids[self._price(centre - i * self.tick)] = self._size()
            self.asks[self._price(centre + i * self.tick)] = self._size()

    def _price(self, value: Decimal) -> str:
        return f"{value.quantize(self.price_places):f}"

    def _size(self) -> str:
        return f"{(Decimal(self.rng.randint(1, 500_000)) / 100_000).quantize(self.size_places):f}"

    def zero(self) -> str:
        return f"{Decimal(0).quantize(self.size_places):f}"

    def best(self) -> tuple[Decimal, Decimal]:
        return max(map(Decimal, self.bids)), min(map(Decimal, self.asks))

    def change(self) -> tuple[str, str, str]:
        """One random level change, applied: (side "bid"/"ask", price, size; zero deletes)."""
        best_bid, best_ask = self.best()
        side = self.rng.choice(("bid", "ask"))
        book = self.bids if side == "bid" else self.asks
        # Anywhere from inside the spread (a better level) to a little past the far end.
        k = self.rng.randint(1, self.levels + 5)
        if side == "bid":
            price = self._price(best_ask - k * self.tick)
        else:
            price = self._price(best_bid + k * self.tick)
        roll = self.rng.random()
        if roll < 0.3 and len(book) > 5:
            size = self.zero()  # delete (a level that is not there: harmless, documented)
            book.pop(price, None)
        else:
            size = self._size()
            book[price] = size
        return side, price, size

    def top(self, limit: int | None = None) -> tuple[list[list[str]], list[list[str]]]:
        bids = sorted(self.bids.items(), key=lambda kv: Decimal(kv[0]), reverse=True)
        asks = sorted(self.asks.items(), key=lambda kv: Decimal(kv[0]))
        return [list(x) for x in bids[:limit]], [list(x) for x in asks[:limit]]


class FakeExchange:
    """The server plumbing; subclasses implement ``session``."""

    def __init__(self) -> None:
        self.server: Server | None = None
        self.port = 0
        self.clients: set[ServerConnection] = set()
        self.connections = 0  # accepted so far
        self.received: list[dict] = []  # every JSON message clients sent
        self.stream_task: asyncio.Task | None = None
        self.stream_generation = 0  # a stream runs while its generation is the current one
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> "FakeExchange":
        self.loop = asyncio.get_running_loop()
        self.server = await serve(
            self._handler,
            "127.0.0.1",
            0,
            max_size=None,
            compression=None,
            process_request=self.process_request,
        )
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.stream_generation += 1
        if self.stream_task is not None:
            self.stream_task.cancel()
            await asyncio.gather(self.stream_task, return_exceptions=True)
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def __aenter__(self) -> "FakeExchange":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def _handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        try:
            await self.session(ws)
        except ConnectionClosed:
            pass
        finally:
            self.clients.discard(ws)

    async def session(self, ws: ServerConnection) -> None:
        raise NotImplementedError

    async def process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        """Called for each HTTP request before the handshake: a REST answer, or None."""
        return None

    async def recv_json(self, ws: ServerConnection, timeout: float) -> dict | None:
        async with asyncio.timeout(timeout):
            raw = await ws.recv()
        message = json.loads(raw)
        self.received.append(message)
        return message

    async def wait_for_clients(self, n: int = 1, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.clients) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.clients)} of {n} clients subscribed")
            await asyncio.sleep(0.01)

    async def broadcast(self, text: str | bytes) -> None:
        for ws in list(self.clients):
            with contextlib.suppress(ConnectionClosed):
                await ws.send(text)

    async def drop(self, *, abrupt: bool = True, code: int = 1001) -> None:
        """End every connection: a TCP reset with no close frame, or a clean close."""
        for ws in list(self.clients):
            if abrupt:
                ws.transport.abort()
            else:
                await ws.close(code, "going away")
            self.clients.discard(ws)

    async def garbage(self) -> None:
        """Frames that are not what the exchange sends: not JSON, binary, not an object."""
        for frame in ("{not json", b"\x00\x01binary", "[1, 2, 3]", '"a string"', "null"):
            await self.broadcast(frame)

    async def oversized(self, nbytes: int = 1024 * 1024) -> None:
        await self.broadcast(json.dumps({"type": "ticker", "padding": "x" * nbytes}))

    def start_stream(self, rate: float) -> None:
        """Send ``tick()`` to every client ``rate`` times a second until stopped."""
        self.stream_generation += 1
        generation = self.stream_generation

        async def run() -> None:
            interval = 1.0 / rate
            next_at = time.monotonic()
            while self.stream_generation == generation:
                if self.clients:
                    await self.tick()
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

        self.stream_task = asyncio.get_running_loop().create_task(run())

    def stop_stream(self) -> None:
        """Stop the stream after the tick under way, if any (a tick cancelled half-way
        would leave the true book changed and the change unsent)."""
        self.stream_generation += 1

    async def tick(self) -> None:
        raise NotImplementedError

    # --- Running in a thread, for stacks in other processes.
    def call(self, coro_fn, *args, timeout: float = 10.0, **kwargs):
        """Run ``coro_fn(*args)`` on the fake's own loop (threaded mode) and return its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro_fn(*args, **kwargs), self.loop).result(timeout)

    @contextlib.contextmanager
    def threaded(self) -> Iterator["FakeExchange"]:
        ready = threading.Event()
        stop: list[asyncio.Future] = []

        async def main() -> None:
            await self.start()
            stop.append(asyncio.get_running_loop().create_future())
            ready.set()
            try:
                await stop[0]
            finally:
                await self.stop()

        thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake exchange did not start")
        try:
            yield self
        finally:
            self.loop.call_soon_threadsafe(stop[0].set_result, None)
            thread.join(10)


class FakeCoinbase(FakeExchange):
    """Coinbase Exchange's market-data feed, for a set of products."""

    def __init__(self, products: dict[str, float] | None = None, heartbeat_seconds=1.0) -> None:
        super().__init__()
        self.products = products or {"BTC-USD": 97000.0}
        self.sequence = dict.fromkeys(self.products, 37475248783)
        self.trade_id = dict.fromkeys(self.products, 370843401)
        self.prices = dict(self.products)
        self.subscribed: dict[ServerConnection, set[str]] = {}
        self.heartbeat_seconds = heartbeat_seconds
        self.sent_tickers = 0
        # Coinbase quotes prices to the product's quote increment and sizes to 8 places.
        self.books = {
            p: FakeBook(price, seed=i) for i, (p, price) in enumerate(self.products.items())
        }
        self.level2: dict[ServerConnection, set[str]] = {}  # level2_batch subscribers
        self.sent_l2updates = 0
        self.stream_books = False  # tick() also sends an l2update per product

    async def session(self, ws: ServerConnection) -> None:
        # "You are disconnected if no subscribe has been received within 5 seconds."
        try:
            request = await self.recv_json(ws, timeout=5.0)
        except TimeoutError:
            await ws.close(1000, "no subscribe")
            return
        if request.get("type") != "subscribe":
            await ws.send(json.dumps({"type": "error", "message": "Failed to subscribe"}))
            return
        wanted = request.get("product_ids") or []
        unknown = [p for p in wanted if p not in self.products]
        if unknown or not wanted:
            await ws.send(
                json.dumps(
                    {
                        "type": "error",
                        "message": "Failed to subscribe",
                        "reason": f"{', '.join(unknown) or 'no product'} is not a valid product",
                    }
                )
            )
            return
        channels = [c if isinstance(c, str) else c.get("name") for c in request["channels"]]
        await ws.send(
            json.dumps(
                {
                    "type": "subscriptions",
                    "channels": [{"name": c, "product_ids": wanted} for c in channels],
                }
            )
        )
        self.subscribed[ws] = set(wanted)
        if "level2_batch" in channels:
            # "the first message is a snapshot of the book", then l2update messages.
            for product in wanted:
                await ws.send(json.dumps(self.snapshot_message(product)))
            self.level2[ws] = set(wanted)
        self.clients.add(ws)
        beat = asyncio.get_running_loop().create_task(self._heartbeats(ws, wanted))
        try:
            async for raw in ws:  # clients may send more (unsubscribe); keep them
                self.received.append(json.loads(raw))
        finally:
            beat.cancel()
            self.level2.pop(ws, None)

    async def _heartbeats(self, ws: ServerConnection, products: list[str]) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(self.heartbeat_seconds)
                for product in products:
                    await ws.send(json.dumps(self.heartbeat_message(product)))

    def heartbeat_message(self, product: str) -> dict:
        self.sequence[product] += 1
        return {
            "type": "heartbeat",
            "sequence": self.sequence[product],
            "last_trade_id": self.trade_id[product],
            "product_id": product,
            "time": _iso(time.time() * 1000),
        }

    def snapshot_message(self, product: str) -> dict:
        bids, asks = self.books[product].top()
        return {"type": "snapshot", "product_id": product, "bids": bids, "asks": asks}

    async def l2update(self, product: str = "BTC-USD", changes: int = 3) -> dict:
        """``changes`` random level changes of the true book, sent as one l2update."""
        book = self.books[product]
        made = []
        for _ in range(changes):
            side, price, size = book.change()
            made.append(["buy" if side == "bid" else "sell", price, size])
        message = {
            "type": "l2update",
            "product_id": product,
            "time": _iso(time.time() * 1000),
            "changes": made,
        }
        text = json.dumps(message)
        for ws, products in list(self.level2.items()):
            if product in products:
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(text)
        self.sent_l2updates += 1
        return message

    def l2_unsent(self, product: str = "BTC-USD", changes: int = 5) -> None:
        """The book changes and nobody is told (a lost batch; only a new snapshot heals it)."""
        for _ in range(changes):
            self.books[product].change()

    def ticker_message(self, product: str, price: float | None = None) -> dict:
        # The ticker channel carries only matches: the sequence moves on by more than one.
        self.sequence[product] += 3
        self.trade_id[product] += 1
        if price is None:
            price = round(self.prices[product] * (1 + ((self.trade_id[product] % 7) - 3) / 1e4), 2)
        self.prices[product] = price
        return {
            "type": "ticker",
            "sequence": self.sequence[product],
            "product_id": product,
            "price": f"{price:.2f}",
            "open_24h": "1310.79",
            "volume_24h": "404081.47",
            "low_24h": "1270.00",
            "high_24h": "1345.92",
            "volume_30d": "9050266.88",
            "best_bid": f"{price - 0.18:.2f}",
            "best_bid_size": "0.46688654",
            "best_ask": f"{price + 0.05:.2f}",
            "best_ask_size": "1.56637040",
            "side": "buy" if self.trade_id[product] % 3 else "sell",  # the taker's side
            "time": _iso(time.time() * 1000),
            "trade_id": self.trade_id[product],
            "last_size": "0.0143",
        }

    async def ticker(self, product: str = "BTC-USD", price: float | None = None) -> dict:
        message = self.ticker_message(product, price)
        self.sent_tickers += 1
        await self.broadcast(json.dumps(message))
        return message

    async def tick(self) -> None:
        for product in self.products:
            await self.ticker(product)
            if self.stream_books:
                await self.l2update(product)

    async def heartbeat(self, product: str = "BTC-USD") -> None:
        await self.broadcast(json.dumps(self.heartbeat_message(product)))

    async def skip(self, product: str = "BTC-USD", trades: int = 5) -> None:
        """Trades happen that no client is told about: a gap the next heartbeat shows."""
        self.sequence[product] += 3 * trades
        self.trade_id[product] += trades

    async def error(self, message: str = "Internal error", reason: str = "test") -> None:
        await self.broadcast(json.dumps({"type": "error", "message": message, "reason": reason}))

    async def burst(self, n: int, product: str | None = None) -> float:
        """Send ``n`` tickers as fast as the socket takes them; returns the seconds taken."""
        product = product or next(iter(self.products))
        started = time.perf_counter()
        for _ in range(n):
            await self.ticker(product)
        return time.perf_counter() - started


class FakeBinance(FakeExchange):
    """Binance's spot stream endpoint, for a set of symbols (upper case, e.g. BTCUSDT)."""

    def __init__(self, symbols: dict[str, float] | None = None, *, session_seconds=None) -> None:
        super().__init__()
        self.symbols = symbols or {"BTCUSDT": 97000.0}
        self.trade_id = dict.fromkeys(self.symbols, 12345)
        self.update_id = dict.fromkeys(self.symbols, 400900217)
        self.prices = dict(self.symbols)
        self.streams: dict[ServerConnection, set[str]] = {}
        self.paths: list[str] = []
        self.refuse_subscribe = False
        self.session_seconds = session_seconds  # Binance: 24 h; here, say, 1 s
        self.sent_trades = 0
        # Order books: the true book per symbol, numbered by update_id (shared with the
        # bookTicker's "u", as on Binance).
        self.books = {
            s: FakeBook(price, seed=i) for i, (s, price) in enumerate(self.symbols.items())
        }
        self.sent_depth = 0
        self.stream_books = False  # tick() also sends a depth event per symbol
        self.rest_requests: list[str] = []  # the path and query of every REST request
        self.rest_delay = 0.0  # seconds the snapshot takes to arrive (taken before the wait)
        self.rest_status: int | None = None  # answer every snapshot request with this error
        self.rest_body: str | None = None  # answer 200 with this body instead of a snapshot
        self.frozen: dict[str, tuple[int, tuple]] = {}  # symbol -> (lastUpdateId, top) served

    async def process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path == "/stream":
            return None  # the WebSocket handshake
        self.rest_requests.append(request.path)
        if url.path != "/api/v3/depth":
            return self._json(ws, 404, {"code": -1, "msg": "Not found"})
        query = parse_qs(url.query)
        symbol = (query.get("symbol") or [""])[0]
        if symbol not in self.books:
            return self._json(ws, 400, {"code": -1121, "msg": "Invalid symbol."})
        limit = int((query.get("limit") or ["100"])[0])
        # The snapshot is taken when the request arrives; the stream goes on meanwhile.
        if symbol in self.frozen:
            last_update_id, (bids, asks) = self.frozen[symbol]
        else:
            last_update_id, (bids, asks) = self.update_id[symbol], self.books[symbol].top()
        if self.rest_delay:
            await asyncio.sleep(self.rest_delay)
        if self.rest_status is not None:
            response = self._json(ws, self.rest_status, {"code": -1003, "msg": "Too many requests"})
            response.headers["Retry-After"] = "1"
            return response
        if self.rest_body is not None:
            response = ws.respond(200, self.rest_body)
            response.headers["Content-Type"] = "application/json;charset=UTF-8"
            return response
        body = {"lastUpdateId": last_update_id, "bids": bids[:limit], "asks": asks[:limit]}
        return self._json(ws, 200, body)

    @staticmethod
    def _json(ws: ServerConnection, status: int, body: object) -> Response:
        response = ws.respond(status, json.dumps(body))
        response.headers["Content-Type"] = "application/json;charset=UTF-8"
        return response

    def freeze_snapshot(self, symbol: str = "BTCUSDT") -> None:
        """The REST snapshot stays at the book as it is now (a lagging cache) until thawed."""
        self.frozen[symbol] = (self.update_id[symbol], self.books[symbol].top())

    def thaw_snapshot(self, symbol: str = "BTCUSDT") -> None:
        self.frozen.pop(symbol, None)

    async def session(self, ws: ServerConnection) -> None:
        url = urlsplit(ws.request.path)
        self.paths.append(ws.request.path)
        if url.path != "/stream":
            await ws.close(1008, "unknown path")
            return
        streams = set()
        for value in parse_qs(url.query).get("streams", []):
            streams.update(s for s in value.split("/") if s)
        self.streams[ws] = streams
        self.clients.add(ws)
        limit = None
        if self.session_seconds is not None:
            limit = asyncio.get_running_loop().call_later(
                self.session_seconds, lambda: asyncio.ensure_future(ws.close(1001, "24h"))
            )
        try:
            async for raw in ws:
                try:
                    request = json.loads(raw)
                except ValueError:
                    await ws.send(json.dumps({"code": 3, "msg": "Invalid JSON", "id": None}))
                    continue
                self.received.append(request)
                await self._command(ws, request)
        finally:
            if limit is not None:
                limit.cancel()
            self.streams.pop(ws, None)

    async def _command(self, ws: ServerConnection, request: dict) -> None:
        if request.get("method") == "SUBSCRIBE":
            if self.refuse_subscribe:
                await ws.send(
                    json.dumps(
                        {
                            "code": 2,
                            "msg": "Invalid request: too many parameters",
                            "id": request.get("id"),
                        }
                    )
                )
                return
            params = request.get("params") or []
            if any(p != p.lower() for p in params):
                # Binance's stream names are lower case; others silently give nothing.
                params = []
            self.streams[ws].update(params)
            await ws.send(json.dumps({"result": None, "id": request.get("id")}))
        else:
            await ws.send(
                json.dumps({"code": 2, "msg": "Invalid request", "id": request.get("id")})
            )

    async def _send_event(self, stream: str, data: dict) -> None:
        text = json.dumps({"stream": stream, "data": data})
        for ws, streams in list(self.streams.items()):
            if stream in streams:
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(text)

    async def trade(self, symbol: str = "BTCUSDT", price: float | None = None) -> dict:
        self.trade_id[symbol] += 1
        if price is None:
            price = round(self.prices[symbol] * (1 + ((self.trade_id[symbol] % 7) - 3) / 1e4), 2)
        self.prices[symbol] = price
        now = int(time.time() * 1000)
        data = {
            "e": "trade",
            "E": now,
            "s": symbol,
            "t": self.trade_id[symbol],
            "p": f"{price:.8f}",
            "q": "0.01200000",
            "T": now,
            "m": self.trade_id[symbol] % 3 == 0,  # the buyer was the maker: a sell aggressor
            "M": True,
        }
        self.sent_trades += 1
        await self._send_event(f"{symbol.lower()}@trade", data)
        return data

    async def book(self, symbol: str = "BTCUSDT", bid: float | None = None, ask=None) -> dict:
        # The book's current update id: only depth changes move it (a bookTicker that took
        # one would make the diff depth stream look gapped).
        price = self.prices[symbol]
        data = {
            "u": self.update_id[symbol],
            "s": symbol,
            "b": f"{bid if bid is not None else price - 0.01:.8f}",
            "B": "31.21000000",
            "a": f"{ask if ask is not None else price + 0.01:.8f}",
            "A": "40.66000000",
        }
        await self._send_event(f"{symbol.lower()}@bookTicker", data)
        return data

    async def tick(self) -> None:
        for symbol in self.symbols:
            await self.book(symbol)
            await self.trade(symbol)
            if self.stream_books:
                await self.depth(symbol)

    async def skip(self, symbol: str = "BTCUSDT", trades: int = 5) -> None:
        self.trade_id[symbol] += trades

    def _depth_changes(self, symbol: str, changes: int) -> tuple[int, list, list]:
        book = self.books[symbol]
        first = self.update_id[symbol] + 1
        bids: dict[str, str] = {}
        asks: dict[str, str] = {}
        for _ in range(changes):
            side, price, size = book.change()
            (bids if side == "bid" else asks)[price] = size  # the latest per price counts
            self.update_id[symbol] += 1
        return first, [list(x) for x in bids.items()], [list(x) for x in asks.items()]

    async def depth(self, symbol: str = "BTCUSDT", changes: int = 3) -> dict:
        """``changes`` level changes (one update id each) sent as one depthUpdate event."""
        first, bids, asks = self._depth_changes(symbol, changes)
        now = int(time.time() * 1000)
        data = {
            "e": "depthUpdate",
            "E": now,
            "s": symbol,
            "U": first,
            "u": self.update_id[symbol],
            "b": bids,
            "a": asks,
        }
        self.sent_depth += 1
        for stream in (f"{symbol.lower()}@depth@100ms", f"{symbol.lower()}@depth"):
            await self._send_event(stream, data)
        return data

    def skip_depth(self, symbol: str = "BTCUSDT", changes: int = 3) -> None:
        """Update ids that no client is told about: the next event shows a gap."""
        self._depth_changes(symbol, changes)

    async def server_shutdown(self) -> None:
        for symbol in self.symbols:
            await self._send_event(
                f"{symbol.lower()}@trade", {"e": "serverShutdown", "E": int(time.time() * 1000)}
            )

    async def ping_all(self, timeout: float = 5.0) -> list[float]:
        """Ping every client as Binance does; returns each one's pong latency in seconds."""
        latencies = []
        for ws in list(self.clients):
            waiter = await ws.ping(b"binance")
            async with asyncio.timeout(timeout):
                latencies.append(await waiter)
        return latencies

    async def burst(self, n: int, symbol: str | None = None) -> float:
        symbol = symbol or next(iter(self.symbols))
        started = time.perf_counter()
        for _ in range(n):
            await self.trade(symbol)
        return time.perf_counter() - started
