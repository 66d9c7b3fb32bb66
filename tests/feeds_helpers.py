"""Helpers for the feed source tests: run a source and collect what it yields."""

import asyncio
import contextlib
import itertools
import sys
import time
from decimal import Decimal

from feeds.sources import SourceContext, SymbolConfig, build_source
from feeds.sources.base import BookDraft
from markets.book import OrderBook


def config(ticker="BTC-USD", source="simulated", **options) -> SymbolConfig:
    return SymbolConfig(
        ticker=ticker,
        asset_class="crypto",
        tick_size=Decimal("0.01"),
        annual_volatility=0.5,
        start_price=97000.0,
        source=source,
        options=options,
    )


def make_source(ticker="BTC-USD", source="simulated", *, fast_backoff=True, **options):
    src = build_source(
        config(ticker, source, **options), SourceContext(last_price=None, tick_rate=2, seed=0)
    )
    if fast_backoff:
        src.backoff_base = 0.05  # reconnect tests need not wait half a second a time
    return src


class Collector:
    """Runs ``source.ticks()`` in a task and keeps the drafts: ticks in ``drafts``, book
    drafts in ``books``, applied to ``book`` as the feed loop would (a snapshot replaces it).
    """

    def __init__(self, source) -> None:
        self.source = source
        self.drafts = []
        self.books: list[BookDraft] = []
        self.book = OrderBook()
        self.done = False
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        async with contextlib.aclosing(self.source.ticks()) as drafts:
            async for draft in drafts:
                if isinstance(draft, BookDraft):
                    self.books.append(draft)
                    if draft.snapshot:
                        self.book = OrderBook.from_levels(bids=draft.bids, asks=draft.asks)
                    else:
                        self.book.apply(bids=draft.bids, asks=draft.asks)
                else:
                    self.drafts.append(draft)
        self.done = True

    @property
    def snapshots(self) -> int:
        return sum(1 for b in self.books if b.snapshot)

    def levels(self) -> tuple[list[list[str]], list[list[str]]]:
        """The whole book the drafts built, as [price, size] lists, best first."""
        bids, asks = self.book.top(max(self.book.depths()))
        return [list(x) for x in bids], [list(x) for x in asks]

    async def until(self, predicate, timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.task.done() and self.task.exception():
                raise self.task.exception()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; stats {self.source.stats}")
            await asyncio.sleep(0.005)

    async def count(self, n: int, timeout: float = 10.0) -> None:
        await self.until(lambda: len(self.drafts) >= n, timeout, f"{n} drafts")

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@contextlib.asynccontextmanager
async def collecting(source):
    collector = Collector(source)
    try:
        yield collector
    finally:
        await collector.close()


class ResumingClient:
    """A WebSocket client of the real stack that never loses a tick.

    It subscribes (a one-tick snapshot gives each symbol's epoch) and, when the server
    closes it (4008 on a loaded machine, say), reconnects at once and resumes with
    ``since``/``epochs``, as docs/protocol.md tells clients to. Every tick is kept with
    its receive time; a ``reset`` (which would mean a gap) is kept too.
    """

    def __init__(self, url: str, origin: str, symbols: list[str]) -> None:
        self.url, self.origin, self.symbols = url, origin, symbols
        # Per symbol: (seq, ts, received at time.monotonic(), price).
        self.ticks: dict[str, list[tuple[int, int, float, float]]] = {s: [] for s in symbols}
        self.epochs: dict[str, str] = {}
        self.resets: list[dict] = []
        self.duplicates: list[dict] = []
        self.closes: list[int | None] = []
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        import json

        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        while True:
            try:
                async with connect(self.url, origin=self.origin) as ws:
                    since = {s: t[-1][0] for s, t in self.ticks.items() if t}
                    command = {"action": "subscribe", "symbols": self.symbols, "snapshot": 1}
                    if since:
                        command["since"] = since
                        command["epochs"] = {s: self.epochs[s] for s in since if s in self.epochs}
                    await ws.send(json.dumps(command))
                    async for raw in ws:
                        msg = json.loads(raw)
                        if msg["type"] == "tick":
                            got = self.ticks[msg["symbol"]]
                            if got and msg["seq"] <= got[-1][0]:
                                self.duplicates.append(msg)
                            else:
                                got.append((msg["seq"], msg["ts"], time.monotonic(), msg["price"]))
                        elif msg["type"] == "snapshot":
                            self.epochs[msg["symbol"]] = msg["epoch"]
                        elif msg["type"] == "reset":
                            self.resets.append(msg)
            except ConnectionClosed as exc:
                self.closes.append(exc.rcvd.code if exc.rcvd else None)
            except OSError:
                self.closes.append(None)
                await asyncio.sleep(0.2)

    def gaps(self) -> dict[str, list[int]]:
        """Per symbol, the seqs that are missing or repeated (empty when contiguous)."""
        out = {}
        for symbol, ticks in self.ticks.items():
            seqs = [t[0] for t in ticks]
            if seqs and seqs != list(range(seqs[0], seqs[0] + len(seqs))):
                out[symbol] = [b for a, b in itertools.pairwise(seqs) if b != a + 1]
        return out

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def wait_for_published(stack, symbols: list[str], timeout: float = 60.0) -> None:
    """Until each symbol has a published tick in the stack's Redis.

    Subscribing before a symbol's first tick gives a snapshot without an epoch, which a
    later resume or catch-up takes for a changed epoch (a reset); the tests that count
    every seq subscribe after the first tick.
    """
    import redis

    r = redis.Redis.from_url(stack.env["REDIS_URL"])
    deadline = time.monotonic() + timeout
    try:
        while not all(r.get(f"{stack.prefix}:epoch:{s}") for s in symbols):
            assert time.monotonic() < deadline, f"no tick of {symbols} was published"
            await asyncio.sleep(0.1)
    finally:
        r.close()


def first_tick_ts(stack, symbol: str, predicate) -> int | None:
    """The ts (epoch ms) of the first tick in the stack's history whose price matches."""
    import redis

    r = redis.Redis.from_url(stack.env["REDIS_URL"])
    try:
        for _, fields in r.xrange(f"{stack.prefix}:hist:{symbol}"):
            if predicate(float(fields[b"price"])):
                return int(fields[b"ts"])
    finally:
        r.close()
    return None


async def stop_feeds(stop, tasks, *, timeout: float = 20.0) -> None:
    """Set ``stop`` and wait for the feed loops to return, at most ``timeout`` seconds.

    A feed loop that has not returned by then is a stall (a run_feed once waited past the
    suite's 300 s timeout here with every thread idle and no timer pending): every task of
    the loop prints its stack, so the await it sits in is named, and the test fails.
    """
    stop.set()
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    if pending:
        for task in asyncio.all_tasks():
            task.print_stack(file=sys.stderr)
        raise AssertionError(
            f"{len(pending)} feed loop(s) still running {timeout:.0f} s after stop"
        )
    for task in done:
        task.result()
