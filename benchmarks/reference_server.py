"""The bare-Python ceiling: one asyncio process, `websockets`, ticks made in-process.

It speaks the subset of protocol v1 (docs/protocol.md) that the load-test harness
uses, so ``python manage.py loadtest`` can load it exactly like the real stack:

- ``{"action": "subscribe", "symbols": [...], "id": 1}`` answers ``subscribed``
  (unknown symbols get an ``unknown_symbol`` error); ``unsubscribe``, ``list`` and
  ``ping`` work as in v1; anything else is answered with a v1 error.
- Every ``1 / tick-rate`` seconds each symbol gets one tick,
  ``{"type": "tick", "symbol", "seq", "ts", "price", "bid", "ask", "size"}``, with
  ``seq`` rising by exactly 1. The JSON is encoded once per tick and fanned out with
  ``websockets.broadcast``; there is no channel layer, no Redis and no Django.
- ``batch_ms`` in ``subscribe`` is ignored: this server always sends ``tick`` frames,
  which is the point of comparison for the real stack's batched ``ticks`` frames.
  So are ``mode``, ``max_rate`` and ``snapshot``: it sends every tick, never
  conflates (no ``skipped``) and sends no snapshot; with ``--mode latest --max-rate
  X`` the harness expects X ticks/s per stream and reports this server's full rate
  above it.
- No snapshot: a client simply starts at the next live tick. By default no resume
  either (``since`` is ignored).
- For testing the harness's resume, and only when asked: ``--history N`` keeps the
  last N ticks of each symbol, and a ``subscribe`` with ``"since": {symbol: seq}``
  gets the ticks after ``seq`` replayed before live ones (or a ``reset`` with reason
  ``history_truncated`` when the history no longer reaches back); ``epochs`` is
  ignored. ``--close-4008-after S`` closes every connection with code 4008 ("slow
  consumer") S seconds after its first ``subscribe``, as the real stack does with a
  connection that falls behind.

Run: ``python benchmarks/reference_server.py --port 8765 --tick-rate 10``.
It listens on 127.0.0.1 only and stops on SIGINT or SIGTERM.
"""

import argparse
import asyncio
import json
import math
import random
import signal
import sys
import time
from collections import deque
from collections.abc import Iterable

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

# The first twenty tickers of the project's default universe (markets/universe.py).
DEFAULT_SYMBOLS = (
    "AAPL,ADA-USD,AMZN,AUD-USD,BTC-USD,DOGE-USD,ETH-USD,EUR-USD,GBP-USD,GOOGL,"
    "JPM,LTC-USD,META,MSFT,NVDA,SOL-USD,TSLA,USD-CAD,USD-CHF,USD-JPY"
)
MAX_SYMBOLS_PER_CONNECTION = 50
MAX_MESSAGE_BYTES = 64 * 1024


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def error(code: str, message: str, *, id=None, symbols: list[str] | None = None) -> str:
    msg = {"type": "error", "id": id, "code": code, "message": message}
    if symbols is not None:
        msg["symbols"] = symbols
    return json.dumps(msg)


class Market:
    """Per-symbol random walks, seq counters and subscriber sets."""

    def __init__(self, symbols: Iterable[str], *, seed: int = 0, history: int = 0) -> None:
        self.symbols = list(symbols)
        # symbol -> the last ``history`` (seq, JSON) ticks, for since; off when 0
        self.history: dict[str, deque[tuple[int, str]]] | None = (
            {s: deque(maxlen=history) for s in self.symbols} if history > 0 else None
        )
        self.subscribers: dict[str, set[ServerConnection]] = {s: set() for s in self.symbols}
        self.seq = dict.fromkeys(self.symbols, 0)
        self.price = {s: 100.0 + 10 * i for i, s in enumerate(self.symbols)}
        self.rng = random.Random(seed)
        self.ticks_sent = 0

    def tick_all(self) -> None:
        """Called once per tick interval: one tick per symbol, encoded once, broadcast."""
        ts = now_ms()
        gauss = self.rng.gauss
        for symbol in self.symbols:
            self.seq[symbol] += 1
            price = round(self.price[symbol] * math.exp(0.0005 * gauss(0.0, 1.0)), 4)
            self.price[symbol] = price
            subs = self.subscribers[symbol]
            if not subs and self.history is None:
                continue
            spread = round(price * 0.0001, 4)
            text = json.dumps(
                {
                    "type": "tick",
                    "symbol": symbol,
                    "seq": self.seq[symbol],
                    "ts": ts,
                    "price": price,
                    "bid": round(price - spread, 4),
                    "ask": round(price + spread, 4),
                    "size": round(self.rng.random() * 10, 3),
                },
                separators=(",", ":"),
            )
            if self.history is not None:
                self.history[symbol].append((self.seq[symbol], text))
            broadcast(subs, text)
            self.ticks_sent += len(subs)

    async def run(self, tick_rate: float) -> None:
        """Ticks on a fixed schedule; a late interval is caught up, not skipped."""
        loop = asyncio.get_running_loop()
        interval = 1.0 / tick_rate
        next_at = loop.time()
        while True:
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            self.tick_all()

    def replay(self, symbol: str, since: int) -> list[str]:
        """What a resume from ``since`` needs, before any live tick: the ticks after it,
        or a ``reset`` when the history does not reach back that far."""
        if self.history is None:
            return []
        ticks = self.history[symbol]
        if since >= self.seq[symbol]:
            return []
        if not ticks or ticks[0][0] > since + 1:
            return [json.dumps({"type": "reset", "symbol": symbol, "reason": "history_truncated"})]
        return [text for seq, text in ticks if seq > since]


async def handle(ws: ServerConnection, market: Market, close_after: float | None = None) -> None:
    """Called once per accepted connection; serves its commands until it closes."""
    mine: set[str] = set()
    closer: asyncio.TimerHandle | None = None
    try:
        async for frame in ws:
            if not isinstance(frame, str):
                await ws.send(error("bad_request", "binary frames are not accepted"))
                continue
            if len(frame) > MAX_MESSAGE_BYTES:
                await ws.send(error("message_too_large", "a command may be at most 64 KiB"))
                continue
            try:
                cmd = json.loads(frame)
            except ValueError:
                await ws.send(error("bad_json", "the frame is not valid JSON"))
                continue
            if close_after is not None and closer is None and is_subscribe(cmd):
                closer = asyncio.get_running_loop().call_later(
                    close_after, lambda: asyncio.ensure_future(slow_consumer_close(ws, market))
                )
            # Written at once (broadcast writes synchronously): a replay goes out whole,
            # before any live tick of the symbols it has just subscribed to.
            for answer in command(cmd, mine, ws, market):
                broadcast((ws,), answer)
    except ConnectionClosed:
        pass
    finally:
        if closer is not None:
            closer.cancel()
        for symbol in mine:
            market.subscribers[symbol].discard(ws)


def is_subscribe(cmd: object) -> bool:
    return isinstance(cmd, dict) and cmd.get("action") == "subscribe"


async def slow_consumer_close(ws: ServerConnection, market: Market) -> None:
    """Close with 4008 as the real stack does with a connection that fell behind; no
    tick is sent to it once this starts."""
    for subs in market.subscribers.values():
        subs.discard(ws)
    await ws.close(4008, "slow consumer")


def command(cmd: object, mine: set[str], ws: ServerConnection, market: Market) -> list[str]:
    """Answer one decoded command (the v1 subset), updating subscriptions."""
    if not isinstance(cmd, dict):
        return [error("bad_request", "a command must be a JSON object")]
    id = cmd.get("id")
    action = cmd.get("action")
    if action == "ping":
        return [json.dumps({"type": "pong", "id": id, "ts": now_ms()})]
    if action == "list":
        return [json.dumps({"type": "subscriptions", "id": id, "symbols": sorted(mine)})]
    if action not in ("subscribe", "unsubscribe"):
        return [error("unknown_action", f"unknown action {str(action)[:40]!r}", id=id)]
    symbols = cmd.get("symbols")
    if not isinstance(symbols, list) or not symbols or not all(isinstance(s, str) for s in symbols):
        return [error("bad_request", "'symbols' must be a non-empty list of strings", id=id)]
    symbols = list(dict.fromkeys(symbols))
    if action == "unsubscribe":
        for symbol in symbols:
            if symbol in mine:
                mine.discard(symbol)
                market.subscribers[symbol].discard(ws)
        return [json.dumps({"type": "unsubscribed", "id": id, "symbols": symbols})]
    known = [s for s in symbols if s in market.subscribers]
    unknown = [s for s in symbols if s not in market.subscribers]
    if len(mine | set(known)) > MAX_SYMBOLS_PER_CONNECTION:
        return [error("too_many_symbols", "too many symbols for one connection", id=id)]
    answers = []
    for symbol in known:
        mine.add(symbol)
        market.subscribers[symbol].add(ws)
    if known:
        answers.append(json.dumps({"type": "subscribed", "id": id, "symbols": known}))
    since = cmd.get("since")
    if isinstance(since, dict):
        for symbol in known:
            if isinstance(since.get(symbol), int):
                answers += market.replay(symbol, since[symbol])
    if unknown:
        answers.append(
            error(
                "unknown_symbol", f"unknown symbol(s): {', '.join(unknown)}", id=id, symbols=unknown
            )
        )
    return answers


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--symbols", default=DEFAULT_SYMBOLS, help="comma-separated tickers")
    parser.add_argument("--tick-rate", type=float, default=10.0, help="ticks/s per symbol")
    parser.add_argument(
        "--history", type=int, default=0, help="ticks kept per symbol to serve since (tests)"
    )
    parser.add_argument(
        "--close-4008-after",
        type=float,
        default=None,
        metavar="S",
        help="close each connection with 4008 S seconds after it subscribes (tests)",
    )
    args = parser.parse_args(argv)

    market = Market((s.strip() for s in args.symbols.split(",") if s.strip()), history=args.history)
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    # No compression: daphne does not negotiate permessage-deflate either.
    async with serve(
        lambda ws: handle(ws, market, args.close_4008_after),
        "127.0.0.1",
        args.port,
        compression=None,
        max_size=MAX_MESSAGE_BYTES,
    ):
        print(f"reference server on ws://127.0.0.1:{args.port}/ ", end="", flush=True)
        print(f"({len(market.symbols)} symbols at {args.tick_rate}/s)", flush=True)
        ticker = asyncio.create_task(market.run(args.tick_rate))
        await stop
        ticker.cancel()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
