"""The client side of a load test: one process runs many WebSocket clients on one loop.

Each client is an ``asyncio.Protocol`` driving the websockets library's Sans-I/O
``ClientProtocol`` (handshake, framing, ping replies, closing handshake): frames are
handled in the read callback, with no task or future per message, and one receipt
time serves every frame of a socket read. Complete unfragmented text frames (the
ticks) are cut out of the byte stream here; every other frame goes whole through
the protocol, and parsed from their bytes by orjson. About 6.5-7.5 us of CPU per
frame remain on the 2-core benchmark machine (benchmarks/RESULTS.md, "Harness
cost"), half of it the socket read (one per frame when the server writes them one
by one); the harness shares those CPUs with the server it measures.

Nothing here imports Django: client processes start fast and stay small.
"""

import asyncio
import json
import random
import resource
import ssl
import time
import traceback
from collections.abc import Callable
from typing import Any

from orjson import loads as _loads
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.typing import Origin
from websockets.uri import parse_uri

from .books import BookChecks
from .config import LoadTestConfig
from .stats import SeqTracker, WorkerTotals

MAX_FRAME_BYTES = 16 * 1024 * 1024
# Close code of a connection the server dropped for falling behind (docs/protocol.md).
SLOW_CONSUMER = 4008
# Reconnect attempts after one such close before the client gives up.
RECONNECT_ATTEMPTS = 5
MAX_HANDSHAKE_BYTES = 64 * 1024
USER_AGENT = "ticker-loadtest"


class Run:
    """State shared by every client of one process."""

    def __init__(self, cfg: LoadTestConfig, t0: float) -> None:
        self.cfg = cfg
        self.t0 = t0
        self.window_start = t0 + cfg.ramp
        self.window_end = self.window_start + cfg.duration
        self.window_start_ms = self.window_start * 1000.0
        self.window_end_ms = self.window_end * 1000.0
        self.wsuri = parse_uri(cfg.url)
        self.origin = Origin(cfg.origin) if cfg.origin else None
        self.ssl = ssl.create_default_context() if self.wsuri.secure else None
        self.totals = WorkerTotals()
        self.book_checks = BookChecks()
        self.clients: list[TickClient] = []
        self.open = 0
        self.stopping = False
        self.reconnects: set[asyncio.Task] = set()  # clients resuming after a 4008 close


class TickClient(asyncio.Protocol):
    """One WebSocket client: subscribes once it is open, then checks every frame."""

    def __init__(self, run: Run, index: int, symbols: list[str]) -> None:
        self.run = run
        self.index = index
        self.symbols = symbols
        # The streams outlive a connection: a client closed with 4008 resumes them.
        self.trackers = {symbol: SeqTracker() for symbol in symbols}
        self.epochs: dict[str, Any] = {}  # symbol -> epoch of its latest snapshot
        # symbol -> [seq, view] of the book the client holds (loadtest.books); a broken
        # one is dropped until the next snapshot.
        self.books: dict[str, list] = {}
        # Resolved when this client is done for good (no reconnect under way).
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closing = False
        self.reconnecting = False  # a reconnect attempt owns the connection's fate
        self.resuming = False  # the connection's subscribe resumes with since/epochs
        self._new_connection()
        run.clients.append(self)

    def _new_connection(self) -> None:
        """State of one WebSocket connection; a reconnect starts it afresh."""
        run = self.run
        self.protocol = ClientProtocol(run.wsuri, origin=run.origin, max_size=MAX_FRAME_BYTES)
        self.handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.is_open = False
        self.fragments: list[bytes] | None = None
        # Bytes read but not handled yet: a partial HTTP response, or the start of a
        # frame not yet complete (see data_received and _split_frames).
        self.pending = b""

    # --- asyncio.Protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Called when the TCP (or TLS) connection is up: send the HTTP upgrade."""
        self.transport = transport  # type: ignore[assignment]
        request = self.protocol.connect()
        request.headers["User-Agent"] = USER_AGENT
        self.protocol.send_request(request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        """Called with each chunk read from the socket; one receipt time for all of it."""
        now = time.time() * 1000.0
        if self.is_open:
            self._split_frames(data, now)
            return
        # Give the protocol the HTTP response alone, so that it then stands on a frame
        # boundary; whatever follows in the same read goes through _split_frames.
        self.pending += data
        end = self.pending.find(b"\r\n\r\n")
        if end < 0 and len(self.pending) < MAX_HANDSHAKE_BYTES:
            return
        head = self.pending if end < 0 else self.pending[: end + 4]
        rest = b"" if end < 0 else self.pending[end + 4 :]
        self.pending = b""
        self._to_protocol(head, now)
        if rest:
            if self.is_open:
                self._split_frames(rest, now)
            else:
                self._to_protocol(rest, now)  # a refusal's body

    def _to_protocol(self, data: bytes, now: float) -> None:
        """Let the websockets protocol parse ``data`` (whole frames once open)."""
        protocol = self.protocol
        protocol.receive_data(data)
        events = protocol.events_received()
        self._flush()
        for event in events:
            if event.__class__ is Frame:
                self._frame(event, now)
            else:
                self._response()

    def _split_frames(self, data: bytes, now: float) -> None:
        """Handle complete unfragmented text frames here; pass every other frame, whole,
        to the websockets protocol, which so always sits on a frame boundary.

        A tick frame is most of the traffic, and skipping the protocol's generic
        parser for it saves a fifth of the harness's CPU per frame.
        """
        if self.pending:
            data = self.pending + data
            self.pending = b""
        size = len(data)
        pos = 0
        while size - pos >= 2:
            b0 = data[pos]
            length = data[pos + 1]
            head = 2
            if length & 0x80:  # a masked server frame: let the protocol fail it
                self._to_protocol(data[pos:], now)
                return
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 4])
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10])
                head = 10
            end = pos + head + length
            if end > size:
                if length > MAX_FRAME_BYTES:  # too big to buffer: the protocol refuses it
                    self._to_protocol(data[pos:], now)
                    return
                break
            if b0 == 0x81:  # FIN, no RSV bits, text
                self._text(data[pos + head : end], now)
            else:
                self._to_protocol(data[pos:end], now)
                if not self.is_open:
                    return
            pos = end
        if pos < size:
            self.pending = data[pos:]

    def eof_received(self) -> None:
        """Called when the server half-closes; the transport closes after this."""
        if self.pending and not self.is_open:
            data, self.pending = self.pending, b""
            self._to_protocol(data, time.time() * 1000.0)
        self.protocol.receive_eof()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        """Called once when the connection is gone, whoever closed it."""
        run = self.run
        was_open = self.is_open
        if was_open:
            self.is_open = False
            run.open -= 1
        if not self.handshake.done():
            self.handshake.set_exception(
                ConnectionError(f"connection lost during the handshake: {exc or 'closed'}")
            )
        if self.reconnecting:
            return  # _reconnect sees the failed handshake and tries again
        if was_open and not self.closing:
            close = self.protocol.close_rcvd
            if close is not None and close.code == SLOW_CONSUMER and not run.stopping:
                run.totals.slow_consumer_closes += 1
                self.reconnecting = True
                task = asyncio.get_running_loop().create_task(self._reconnect())
                run.reconnects.add(task)
                task.add_done_callback(run.reconnects.discard)
                return
            if time.time() < run.window_end:
                run.totals.closed_early += 1
                code = str(close.code) if close is not None else "1006 (no close frame)"
                run.totals.close_codes[code] += 1
        if not self.closed.done():
            self.closed.set_result(None)

    async def _reconnect(self) -> None:
        """After a 4008 close: reconnect with backoff and jitter, and resubscribe from
        the last seq of each stream (``since``, with the snapshots' ``epochs``), so the
        streams go on with no gap and no duplicate."""
        run = self.run
        totals = run.totals
        resumed = False
        try:
            for attempt in range(RECONNECT_ATTEMPTS):
                await asyncio.sleep(reconnect_delay(attempt))
                if self.closing or run.stopping:
                    return
                totals.reconnect_attempts += 1
                self._new_connection()
                self.resuming = True
                try:
                    async with asyncio.timeout(run.cfg.connect_timeout):
                        await open_connection(run, lambda: self)
                        await self.handshake
                except Exception as exc:
                    totals.reconnect_errors[_describe(exc)] += 1
                    if self.transport is not None:
                        self.transport.abort()
                    continue
                totals.reconnected += 1
                # The new connection may already be gone again, with another
                # reconnect under way: that one now owns the client's fate.
                resumed = True
                return
            totals.resume_failed += 1
            if time.time() < run.window_end:
                totals.closed_early += 1
                totals.close_codes[f"{SLOW_CONSUMER} (reconnect failed)"] += 1
        finally:
            if not resumed and self.reconnecting:  # gave up, or stopped at the end
                self.reconnecting = False
                if self.transport is not None and not self.is_open:
                    self.transport.abort()
                if not self.is_open and not self.closed.done():
                    self.closed.set_result(None)

    # --- protocol events

    def _flush(self) -> None:
        if self.transport is None or self.transport.is_closing():
            # Lost already (the server dropped it; connection_lost is on its way): what
            # the protocol wanted to send has nowhere to go.
            self.protocol.data_to_send()
            return
        for chunk in self.protocol.data_to_send():
            if chunk:
                self.transport.write(chunk)
            elif self.transport.can_write_eof():
                self.transport.write_eof()
            else:
                self.transport.close()

    def _response(self) -> None:
        exc = self.protocol.handshake_exc
        if exc is not None:
            if not self.handshake.done():
                self.handshake.set_exception(exc)
            self.transport.close()
            return
        self.is_open = True
        self.run.open += 1
        if self.reconnecting:
            self.reconnecting = False  # from here on, this connection is like any other
        else:
            self.run.totals.opened += 1
        if not self.handshake.done():
            self.handshake.set_result(None)
        if self.symbols:
            self.protocol.send_text(json.dumps(self.subscribe_command()).encode())
            self._flush()

    def subscribe_command(self) -> dict[str, Any]:
        """``subscribe`` with the run's options; on a resumed connection, with the last
        seq of every stream seen so far and the epoch of its snapshot."""
        command: dict[str, Any] = {"action": "subscribe", "symbols": self.symbols, "id": 1}
        command.update(self.run.cfg.subscribe_options())
        if self.resuming:
            since = {s: t.last for s, t in self.trackers.items() if t.last is not None}
            if since:
                command["since"] = since
                epochs = {s: self.epochs[s] for s in since if s in self.epochs}
                if epochs:
                    command["epochs"] = epochs
        return command

    def _frame(self, frame: Frame, now: float) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT:
            if frame.fin:
                self._text(frame.data, now)
            else:
                self.fragments = [frame.data]
        elif opcode is Opcode.CONT and self.fragments is not None:
            self.fragments.append(frame.data)
            if frame.fin:
                data, self.fragments = b"".join(self.fragments), None
                self._text(data, now)
        elif opcode is Opcode.BINARY:
            self.run.totals.unexpected["binary frame"] += 1
        # Ping, pong and close frames are answered by the Sans-I/O protocol itself.

    def _text(self, data: bytes, now: float) -> None:
        run = self.run
        totals = run.totals
        counting = run.window_start_ms <= now < run.window_end_ms
        totals.frames += 1
        if counting:
            totals.frames_counted += 1
        try:
            # orjson parses the frame's bytes (UTF-8 checked) with no str in between.
            msg = _loads(data)
            kind = msg.get("type")
        except (ValueError, AttributeError):
            totals.unexpected["not a JSON object"] += 1
            return
        if kind == "tick":
            self._tick(msg, now, counting, totals)
        elif kind == "ticks":
            if counting:
                totals.batch_frames_counted += 1
            ticks = msg.get("ticks")
            if ticks.__class__ is list:
                self._ticks(ticks, now, counting, totals)
        elif kind == "book_update":
            self._book_update(data, msg, now, counting, totals)
        elif kind == "book":
            view, ok = run.book_checks.snapshot(data, msg)
            totals.book_snapshots += 1
            if not ok:
                totals.book_checksum_failures += 1
                self.books.pop(msg["symbol"], None)
            else:
                self.books[msg["symbol"]] = [msg["seq"], view]
        elif kind == "snapshot":
            self._snapshot(msg)
        elif kind == "subscribed":
            if self.resuming:
                self.resuming = False
                totals.resumed += 1
            else:
                totals.subscribed += 1
        elif kind == "error":
            totals.errors[str(msg.get("code"))] += 1
            if len(totals.error_samples) < 10:
                totals.error_samples.append(msg)
        elif kind == "reset":
            tracker = self.trackers.get(msg.get("symbol"))
            if tracker is not None:
                tracker.reset()
            totals.seq.resets += 1
        elif kind not in ("unsubscribed", "subscriptions", "pong"):
            totals.unexpected[f"type {str(kind)[:30]!r}"] += 1

    def _book_update(
        self, data: bytes, msg: dict, now: float, counting: bool, totals: WorkerTotals
    ) -> None:
        held = self.books.get(msg.get("symbol"))
        totals.book_updates += 1
        if held is None:
            return  # after a failed check: nothing to check against until a snapshot
        seq, prev = msg["seq"], msg["prev_seq"]
        if prev != held[0]:
            totals.book_prev_seq_breaks += 1
            del self.books[msg["symbol"]]
            return
        view, ok = self.run.book_checks.update(data, msg, held[1])
        if not ok:
            totals.book_checksum_failures += 1
            del self.books[msg["symbol"]]
            return
        held[0], held[1] = seq, view
        if counting:
            totals.book_updates_counted += 1
            totals.book_bytes_counted += len(data)
            totals.book_conflated += seq - prev - 1
            totals.book_age.record(now - msg["ts"])

    def _ticks(self, ticks: list, now: float, counting: bool, totals: WorkerTotals) -> None:
        """A ``ticks`` frame: the common case (the next seq of a subscribed symbol, no
        ``skipped``) inline, with the frame's one receipt time; anything else through
        _tick. The same counts as calling _tick for each."""
        trackers = self.trackers
        latency = totals.latency
        counts = latency.counts
        slow = self._tick
        done = 0
        lat_sum = 0.0
        lat_max = latency.max_ms
        for tick in ticks:
            try:
                tracker = trackers.get(tick["symbol"])
                seq = tick["seq"]
                ts = tick["ts"]
            except (KeyError, TypeError, AttributeError):
                tracker = None
            last = tracker.last if tracker is not None else None
            if last is None or seq != last + 1 or "skipped" in tick:
                slow(tick, now, counting, totals)
                continue
            tracker.last = seq
            done += 1
            if counting:
                if tracker.first_counted is None:
                    tracker.first_counted = seq
                tracker.last_counted = seq
                ms = now - ts
                if ms < 0:
                    ms = 0.0
                key = int(ms * 10)  # LatencyHistogram.record, inline
                counts[key] = counts.get(key, 0) + 1
                lat_sum += ms
                if ms > lat_max:
                    lat_max = ms
        totals.ticks += done
        if counting and done:
            totals.ticks_counted += done
            latency.total += done
            latency.sum_ms += lat_sum
            if lat_max > latency.max_ms:
                latency.max_ms = lat_max

    def _tick(self, tick: dict, now: float, counting: bool, totals: WorkerTotals) -> None:
        try:
            tracker = self.trackers.get(tick["symbol"])
            seq = tick["seq"]
            ts = tick["ts"]
            skipped = tick.get("skipped")
        except (KeyError, TypeError, AttributeError):
            totals.unexpected["malformed tick"] += 1
            return
        if tracker is None:
            totals.unexpected["tick of a symbol not subscribed"] += 1
            return
        totals.ticks += 1
        if counting:
            totals.ticks_counted += 1
            totals.latency.record(now - ts)
        last = tracker.last
        if skipped is None:
            if last is not None and seq == last + 1:
                # The common case, without a call: what SeqTracker.observe does for it.
                tracker.last = seq
                if counting:
                    if tracker.first_counted is None:
                        tracker.first_counted = seq
                    tracker.last_counted = seq
                return
            skipped = 0
        elif skipped.__class__ is not int or skipped < 1:
            totals.unexpected["tick with a bad 'skipped'"] += 1
            skipped = 0
        tracker.observe(seq, counting, totals.seq, skipped)

    def _snapshot(self, msg: dict) -> None:
        """A snapshot's ticks are history: they seed the seq check, never the latency."""
        totals = self.run.totals
        totals.snapshots += 1
        ticks = msg.get("ticks") or []
        totals.snapshot_ticks += len(ticks)
        symbol = msg.get("symbol")
        tracker = self.trackers.get(symbol)
        if tracker is not None and "epoch" in msg:
            self.epochs[symbol] = msg["epoch"]  # sent back in "epochs" on a resume
        if tracker is not None and ticks:
            try:
                tracker.seed(max(t["seq"] for t in ticks))
            except (KeyError, TypeError):
                totals.unexpected["malformed snapshot"] += 1

    # --- driven by the process

    def close(self) -> None:
        """Start the closing handshake at the end of the run."""
        self.closing = True
        if self.transport is None:
            return
        if self.reconnecting:  # cancelled with run.reconnects; nothing open to close
            return
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(1000)
            self._flush()
        else:
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()


async def open_connection(run: Run, factory: Callable[[], asyncio.Protocol]) -> None:
    """TCP (or TLS) connect to the run's server with ``factory``'s protocol."""
    await asyncio.get_running_loop().create_connection(
        factory,
        run.wsuri.host,
        run.wsuri.port,
        ssl=run.ssl,
        server_hostname=run.wsuri.host if run.ssl else None,
    )


def reconnect_delay(attempt: int) -> float:
    """Seconds before reconnect ``attempt`` (0-based): 50-250 ms with jitter, doubling
    with each failed attempt, at most 2 s."""
    return min(2.0, random.uniform(0.05, 0.25) * 2**attempt)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:120]


async def _sleep_until(wall: float) -> None:
    delay = wall - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def _connect_one(run: Run, index: int) -> None:
    cfg = run.cfg
    await _sleep_until(run.t0 + cfg.ramp * index / cfg.clients)
    if run.stopping:
        return
    totals = run.totals
    totals.attempted += 1
    started = time.perf_counter()
    clients: list[TickClient] = []

    def factory() -> TickClient:
        clients.append(TickClient(run, index, cfg.client_symbols(index)))
        return clients[-1]

    try:
        async with asyncio.timeout(cfg.connect_timeout):
            await open_connection(run, factory)
            await clients[0].handshake
    except asyncio.CancelledError:
        totals.failed += 1
        totals.connect_errors["still connecting when the run ended"] += 1
        for client in clients:
            client.abort()
        raise
    except Exception as exc:
        totals.failed += 1
        totals.connect_errors[_describe(exc)] += 1
        for client in clients:
            client.abort()
        return
    totals.connect_ms.append((time.perf_counter() - started) * 1000)


def _progress(run: Run) -> tuple[int, ...]:
    t = run.totals
    return (run.open, t.opened, t.failed, t.closed_early, t.frames, t.ticks)


async def _report_progress(run: Run, queue: Any, worker: int) -> None:
    second = 1
    while True:
        await _sleep_until(run.t0 + second)
        queue.put(("progress", worker, second, _progress(run)))
        second += 1


async def run_worker(cfg: LoadTestConfig, worker: int, queue: Any, t0: float) -> WorkerTotals:
    """Run this process's share of the clients from ``t0`` to the end of the window."""
    run = Run(cfg, t0)
    indexes = cfg.worker_clients(worker)
    run.totals.clients = len(indexes)
    connectors = [asyncio.create_task(_connect_one(run, i)) for i in indexes]
    progress = asyncio.create_task(_report_progress(run, queue, worker))

    await _sleep_until(run.window_start)
    cpu_start = time.process_time()
    sys_start = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    # The newest seq of each symbol any client had when the window opened.
    newest_at_start: dict[str, int] = {}
    for client in run.clients:
        for symbol, tracker in client.trackers.items():
            if tracker.last is not None and tracker.last > newest_at_start.get(symbol, -1):
                newest_at_start[symbol] = tracker.last
    await _sleep_until(run.window_end)
    run.totals.cpu_seconds.append(time.process_time() - cpu_start)
    run.totals.cpu_system_seconds.append(
        resource.getrusage(resource.RUSAGE_SELF).ru_stime - sys_start
    )

    run.stopping = True
    reconnects = list(run.reconnects)
    for task in connectors + reconnects:
        task.cancel()
    await asyncio.gather(*connectors, *reconnects, return_exceptions=True)
    run.totals.open_at_end = run.open
    for client in run.clients:
        client.close()
    pending = [c.closed for c in run.clients if not c.closed.done()]
    if pending:
        await asyncio.wait(pending, timeout=cfg.close_timeout)
    for client in run.clients:
        if not client.closed.done():
            client.abort()
    progress.cancel()

    totals = run.totals
    newest_at_end: dict[str, int] = {}
    first_counted: dict[str, int] = {}
    for client in run.clients:
        for symbol, tracker in client.trackers.items():
            if tracker.last is not None:
                totals.streams += 1
            if tracker.first_counted is not None:
                totals.stream_spans.append(tracker.last_counted - tracker.first_counted + 1)
                newest_at_end[symbol] = max(newest_at_end.get(symbol, -1), tracker.last_counted)
                first_counted[symbol] = min(
                    first_counted.get(symbol, tracker.first_counted), tracker.first_counted
                )
    for symbol, end in newest_at_end.items():
        start = newest_at_start.get(symbol, first_counted[symbol] - 1)
        totals.seq_span[symbol] = [start, end]
    return totals


def loop_factory():
    """uvloop when installed (it comes with uvicorn[standard]): a cheaper socket read."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def event_loop_name() -> str:
    return "asyncio" if loop_factory() is None else "uvloop"


def raise_open_files_limit(needed: int) -> int:
    """Lift the soft RLIMIT_NOFILE towards the hard one; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def worker_main(cfg: LoadTestConfig, worker: int, queue: Any, start: Any, t0: Any) -> None:
    """Entry point of one client process (multiprocessing target)."""
    try:
        raise_open_files_limit(len(cfg.worker_clients(worker)) + 256)
        queue.put(("ready", worker))
        if not start.wait(timeout=120):
            return
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            totals = runner.run(run_worker(cfg, worker, queue, t0.value))
        totals.event_loop = event_loop_name()
        queue.put(("result", worker, totals))
    except BaseException:
        queue.put(("crash", worker, traceback.format_exc()))
        raise
