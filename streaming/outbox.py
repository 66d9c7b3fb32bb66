"""One connection's outbox: frames waiting for its socket, bounded, and the writer that drains it.

The fan-out never awaits a socket. It appends to the outbox, which is plain synchronous
code, and the connection's own writer task sends what is queued. A socket that stops
reading so stalls only its own writer; the fan-out and every other connection go on.

Two kinds of subscription feed one outbox (streaming.protocol.Mode):

- ``all``: every tick, in order. The outbox is bounded by live bytes (``max_bytes``) and by
  the age of its oldest live tick (``max_age_ms`` after its ``ts``); past either the
  connection is *slow* and is closed with 4008, so the client resumes with ``since``. History (a
  snapshot, a replay) is bounded by the protocol instead: it never makes a client slow.
- ``latest``: one slot per symbol holding its newest tick (Lightstreamer's MERGE). A tick
  replacing another counts it in ``skipped``; a slot may wait for ``max_rate``; a tick
  older than ``max_age_ms`` is dropped and counted, never written.

Books (issue 21) are state that conflates by key, so they take the ``latest`` slots too:
a ``book`` slot per book subscription (streaming.subscription.BookSubscription) holds
no frame, only "the book changed". When the slot may be written (the socket has room,
``max_rate`` and the batch window allow) its subscription is asked for the frame to
write *then*: one update from what the client holds to the current book, whatever
number of changes it merges (Lightstreamer's COMMAND mode, keyed by price). So a book
never makes a connection slow, and never waits in the outbox as stale bytes.

When a connection accepts batches (it set ``batch_ms``, 0 included), ticks waiting
together go out as one ``ticks`` frame. With ``batch_ms`` above 0 the outbox writes at
most once per ``batch_ms`` (a rate limit with a leading edge): what arrives at least
``batch_ms`` after its last write goes out at the end of the hub's delivery round (or of
the loop turn), merged with whatever else that round brought; what arrives sooner waits
until ``batch_ms`` after the last write. So a tick waits at most ``batch_ms``, and a
connection whose ticks come in bursts (every symbol ticking at once) gets each burst at
once, in one frame, instead of waiting for a timer. The timers are the process's
(``BatchClock``): one heap per event loop for every batching outbox that waits, not a
timer and a writer task per connection. Without ``batch_ms`` (or with 0), ticks share a
frame only when the writer is behind.
"""

import asyncio
import heapq
import itertools
import threading
import time
import types
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from telemetry.metrics import BACKLOG, DELIVERY, LAG

from .extensions import Write
from .loops import PerLoop
from .protocol import CloseCode

SLOW_CONSUMER = CloseCode.SLOW_CONSUMER
INTERNAL_ERROR = 1011


def now_ms() -> float:
    return time.time() * 1000.0


class Frame(str):
    """A frame other than a tick (a reply, a snapshot): never merged into a ``ticks`` frame."""

    __slots__ = ()


# Book slots are keyed by this and the symbol (":" is not a symbol character).
BOOK_SLOT_PREFIX = "book:"


class BookSource(Protocol):
    def next_frame(self, now: float) -> str | None: ...

    def fresh_frame(self, stale: str) -> str: ...


class BookFrame(Frame):
    """A book frame built when the outbox took it (``built_ms``), from ``source``.

    If the writer can only hand it to the socket more than ``max_age_ms`` later (the
    socket was full for that long), a fresh ``book`` snapshot replaces it: a client never
    gets a book older than that from a frame that waited here.
    """

    def __new__(cls, text: str, source: BookSource, built_ms: float) -> "BookFrame":
        frame = super().__new__(cls, text)
        frame.source = source
        frame.built_ms = built_ms
        return frame

    def fresh(self, now: float, max_age_ms: float) -> str:
        if now - self.built_ms <= max_age_ms:
            return self
        return self.source.fresh_frame(self)


class _Slot:
    """A ``latest`` subscription's waiting tick, or a book subscription's pending change."""

    __slots__ = ("due_ms", "interval_ms", "pending", "skipped", "source", "text", "ts")

    def __init__(self, interval_ms: float, source: BookSource | None = None) -> None:
        self.interval_ms = interval_ms
        # A book slot's subscription, asked for its frame when the slot is written.
        self.source = source
        self.text = ""
        self.ts = 0
        self.skipped = 0  # ticks replaced or dropped since the last one written
        self.pending = False
        self.due_ms = 0.0  # when max_rate lets the next tick of this symbol out


def _nobody(_arg: object) -> None:
    """Called for an outbox's on_close or on_gone when nobody listens."""


def with_skipped(text: str, skipped: int) -> str:
    """The tick JSON ``text`` with ``"skipped": skipped`` added."""
    return f'{text[:-1]},"skipped":{skipped}}}' if skipped else text


def ticks_frame(texts: list[str]) -> str:
    return '{"type":"ticks","ticks":[' + ",".join(texts) + "]}"


class Outbox:
    """Frames waiting for one socket; see the module docstring for the rules."""

    # One per connection, idle ones included: no instance dict, and nothing allocated
    # before it is needed (benchmarks/RESULTS.md, round 11).
    __slots__ = (
        "_due_slots", "_held", "_held_ts", "_last_batch_ms", "_queue", "_queued_frames",
        "_queued_oldest_ts", "_scheduled", "_send", "_slots", "_task", "_write",
        "_writing_oldest_ts", "batch_ms", "clock", "closing", "dropped_stale", "live_bytes",
        "max_age_ms", "max_bytes", "on_close", "on_gone", "ready",
    )  # fmt: skip

    def __init__(
        self,
        *,
        max_bytes: int,
        max_age_ms: float,
        clock: Callable[[], float] = now_ms,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_age_ms = max_age_ms
        self.clock = clock
        # None: one frame per tick. Otherwise the batching window (0 = none, but ticks
        # that waited together still share a frame).
        self.batch_ms: int | None = None
        # A list, not a deque: only appended to and taken whole, and an empty deque
        # allocates a block of 64 slots (760 bytes) for every idle connection.
        self._queue: list[str] = []
        # Written "at once" during a delivery round, in order: texts and their ts (0 for
        # a frame). Two flat lists cleared in place: no tuple or list per tick, which the
        # garbage collector would have to walk (a full collection is a pause for all).
        self._held: list[str] = []
        self._held_ts: list[int] = []
        self.live_bytes = 0
        # ts of the oldest live tick still queued, or held by the writer; 0 for none.
        self._queued_oldest_ts = 0
        self._writing_oldest_ts = 0
        self._slots: dict[str, _Slot] = {}
        self._due_slots = 0  # slots with a tick waiting
        self.dropped_stale = 0  # latest-mode ticks dropped for age, over the connection
        self.closing = False
        # Called (soon, not during the fan-out) with the close code once the connection
        # must end: CloseCode.SLOW_CONSUMER, or 1011 when delivering to it failed.
        self.on_close: Callable[[int], None] = _nobody
        # Called (soon) when writing to the socket raised: the client is gone.
        self.on_gone: Callable[[BaseException], None] = _nobody
        # Set when something is put while the writer waits for a rate-limited slot;
        # made by the writer the first time it waits.
        self.ready: asyncio.Event | None = None
        self._send: Callable[[str], Coroutine[Any, Any, None]] | None = None
        # The server's write without a coroutine (streaming.extensions), if it has one.
        self._write: Write | None = None
        self._queued_frames = 0  # Frames (not ticks) in _queue
        # The writer: a task only while something waits (a full socket, a batch, a
        # rate-limited slot); otherwise a frame is written at once by whoever puts it.
        self._task: asyncio.Task | None = None
        # Batching: whether a write of what waits is arranged (at the end of the round or
        # turn, or on the batch clock), and when (clock ms) the last batch was written.
        self._scheduled = False
        self._last_batch_ms = 0.0

    def attach(
        self, send: Callable[[str], Coroutine[Any, Any, None]], write: Write | None = None
    ) -> None:
        """Start writing to ``send`` (an ASGI websocket.send of one text frame), and
        through ``write`` (streaming.extensions.WRITE_EXTENSION) whenever it can."""
        self._send = send
        self._write = write

    def stop(self) -> None:
        """Called when the socket is gone: nothing more is written or queued."""
        self.closing = True
        self.clear()
        if self._task is not None:
            self._task.cancel()
            self._task = None

    # --- filled by the fan-out and the consumer

    def put_frame(self, text: str) -> None:
        """Queue a reply, a snapshot or any other frame; bounded by the protocol, not here."""
        if self.closing:
            return
        if self._idle():
            self._write_now(text)
            return
        self._queue.append(Frame(text))
        self._queued_frames += 1
        self._wake()

    def put_history(self, texts: list[str]) -> None:
        """Queue replayed ticks: in order, merged when batching, never judged by age."""
        if self.closing:
            return
        self._queue.extend(texts)
        self._wake()

    def put_tick(self, text: str, ts: int, now: float | None = None) -> bool:
        """Queue a live tick of an ``all`` subscription; False once the connection is slow.

        Slow means: more than ``max_bytes`` of live ticks waiting, or a live tick that
        would be written more than ``max_age_ms`` after its ``ts``, whether this socket
        or the whole process (its hub fell behind) made it late.
        """
        if self.closing:
            return False
        if now is None:
            now = self.clock()
        queue = self._queue
        if not queue and self._idle():
            if now - ts > self.max_age_ms:
                self._close(SLOW_CONSUMER)
                return False
            DELIVERY.ticks += 1
            self._write_now(text, ts)
            return True
        if not self._queued_oldest_ts:
            self._queued_oldest_ts = ts
        queue.append(text)
        self.live_bytes += len(text)
        oldest = self._writing_oldest_ts or self._queued_oldest_ts
        if self.live_bytes > self.max_bytes or now - oldest > self.max_age_ms:
            self._close(SLOW_CONSUMER)
            return False
        # The hot path of a batching connection: its write is already arranged.
        if not self._scheduled:
            self._wake()
        return True

    def add_slot(self, symbol: str, *, max_rate: float | None) -> None:
        self._slots[symbol] = _Slot(1000.0 / max_rate if max_rate else 0.0)

    def add_book_slot(self, key: str, source: BookSource, *, max_rate: float | None) -> None:
        self._slots[key] = _Slot(1000.0 / max_rate if max_rate else 0.0, source)

    def put_book(self, key: str, now: float | None = None) -> None:
        """Called when a book changed: its frame goes out at once if it may, else later."""
        slot = self._slots.get(key)
        if slot is None or slot.pending:
            return  # unsubscribed or closing; or already due: it will take this change too
        if now is None:
            now = self.clock()
        if slot.due_ms <= now and self._idle():
            text = slot.source.next_frame(now)  # type: ignore[union-attr]
            if text is not None:
                self._write_now(text)
                slot.due_ms = now + slot.interval_ms
            return
        slot.pending = True
        self._due_slots += 1
        self._wake()

    def drop_slot(self, symbol: str) -> None:
        slot = self._slots.pop(symbol, None)
        if slot is not None and slot.pending:
            self._due_slots -= 1

    def skip_latest(self, symbol: str, count: int) -> None:
        """Count ``count`` ticks of a ``latest`` subscription that will never be written:
        the next tick written says so in ``skipped``."""
        slot = self._slots.get(symbol)
        if slot is not None:
            slot.skipped += count

    def put_latest(self, symbol: str, text: str, ts: int) -> None:
        """Keep ``text`` as the newest tick of a ``latest`` subscription."""
        slot = self._slots.get(symbol)
        if slot is None:
            return  # unsubscribed, or the connection is closing
        if not slot.pending:
            now = self.clock()
            if now - ts > self.max_age_ms:
                # Already too old to show as live (the process is behind): drop it here.
                slot.skipped += 1
                self.dropped_stale += 1
                DELIVERY.stale_dropped += 1
                return
            if slot.due_ms <= now and self._idle():
                DELIVERY.ticks += 1
                self._write_now(with_skipped(text, slot.skipped))
                slot.skipped = 0
                slot.due_ms = now + slot.interval_ms
                return
        if slot.pending:
            slot.skipped += 1
        else:
            slot.pending = True
            self._due_slots += 1
        slot.text = text
        slot.ts = ts
        self._wake()

    # --- the writer

    def _idle(self) -> bool:
        """Nothing waits and nothing is being written: a frame can go out at once."""
        return (
            self._task is None
            and self._send is not None
            and not self._queue
            and not self._due_slots
            and not self.batch_ms
        )

    def _wake(self) -> None:
        if self._task is not None:
            if self.ready is not None:
                self.ready.set()  # (none yet: the writer has never waited, nothing to wake)
        elif self._send is not None:
            if self.batch_ms:
                if not self._scheduled:
                    self._schedule_batch(self._last_batch_ms + self.batch_ms)
            else:
                self._task = asyncio.ensure_future(self._drain())

    def _schedule_batch(self, due_ms: float) -> None:
        """Arrange for what waits to be written at ``due_ms``, or soon if that has passed."""
        self._scheduled = True
        if due_ms <= self.clock():
            if ROUND.open:
                ROUND.outboxes.append(self)  # with the rest of the round's ticks
            else:
                asyncio.get_running_loop().call_soon(self.write_scheduled)
        else:
            batch_clock().add(self, due_ms - self.clock())

    # --- shared frames (streaming.cohort)

    def can_share(self) -> bool:
        """Whether frames built for other connections can be written here."""
        return self._write is not None and not self.closing

    def can_write_shared(self, now: float) -> bool:
        """Nothing waits, nothing is arranged, and the batch window is open."""
        return (
            self._task is None
            and not self._scheduled
            and not self._queue
            and not self._due_slots
            and not self.closing
            and self._write is not None
            and now - self._last_batch_ms >= (self.batch_ms or 0)
        )

    def write_shared(self, payload: bytes, now: float) -> bool:
        """Write a frame built for several connections; False if it cannot go at once."""
        try:
            if not self._write(payload):
                return False
        except Exception as exc:
            self._gone(exc)
            return True  # gone: nothing more to do for it
        self._last_batch_ms = now
        return True

    def write_scheduled(self) -> None:
        """Called when the batch arranged by _schedule_batch is due."""
        if self._scheduled:
            self._scheduled = False
            self.write_batch()

    def write_batch(self) -> None:
        """What waits goes out now, merged into ``ticks`` frames."""
        if self._task is not None or self.closing or self._send is None:
            return  # the writer task has it (the socket was full), or nothing is left
        frames, next_due = self.take()
        if frames:
            self._last_batch_ms = self.clock()
        oldest = self._writing_oldest_ts
        for i, text in enumerate(frames):
            self._write_direct(text, oldest, rest=frames[i + 1 :])
            if self._task is not None or self.closing:
                return  # the socket is full (the writer task has the rest), or gone
        if self._writing_oldest_ts:
            LAG.observe((self.clock() - self._writing_oldest_ts) / 1000)
        self.written()
        if next_due is not None and self.batch_ms and not self._scheduled:
            # A rate-limited slot falls due later; it goes with the next batch at the earliest.
            self._schedule_batch(max(next_due, self._last_batch_ms + self.batch_ms))

    def _write_now(self, text: str, ts: int = 0) -> None:
        """Write ``text`` now, or at the end of the delivery round if one is open."""
        if ROUND.open:
            if not self._held:
                ROUND.outboxes.append(self)
            self._held.append(text)
            self._held_ts.append(ts)
            return
        self._write_direct(text, ts)

    def release_held(self) -> None:
        """Called at the end of a delivery round: what was held is written, in order."""
        if self.batch_ms:
            self.write_scheduled()  # a batch that was due: the round's ticks in one frame
            return
        held, held_ts = self._held, self._held_ts
        try:
            for i in range(len(held)):
                if self.closing:
                    return
                if self._task is None:
                    self._write_direct(held[i], held_ts[i])
                    continue
                # The socket filled up: the writer task takes the rest, after what it has.
                for text, ts in zip(held[i:], held_ts[i:], strict=True):
                    if ts:
                        if not self._queued_oldest_ts:
                            self._queued_oldest_ts = ts
                        self._queue.append(text)
                        self.live_bytes += len(text)
                    else:
                        self._queue.append(Frame(text))
                        self._queued_frames += 1
                self._wake()
                return
        finally:
            held.clear()
            held_ts.clear()

    def _write_direct(self, text: str, ts: int = 0, rest: list[str] | None = None) -> None:
        """Write ``text`` without a task switch; a send that must wait finishes in a task.

        The ASGI send is a coroutine that, on a socket with room, completes without
        ever suspending (uvicorn writes to the transport at once). Running it by hand
        saves the writer task's wake-up per frame; when it does suspend (the socket
        is full) the writer task takes it over, then ``rest``, and everything after
        it queues.
        """
        DELIVERY.frames += 1
        write = self._write
        if write is not None:
            if FRAMES.depth:
                payload = FRAMES.encoded.get(text)
                if payload is None:
                    payload = FRAMES.encoded[text] = text.encode()
            else:
                payload = text.encode()
            try:
                if write(payload):
                    return
            except Exception as exc:
                self._gone(exc)
                return
            # The socket is full (or closing): the coroutine send waits as it should.
        coro = self._send(text)
        try:
            yielded = coro.send(None)
        except StopIteration:
            return
        except Exception as exc:
            self._gone(exc)
            return
        self._writing_oldest_ts = ts
        self._task = asyncio.ensure_future(self._drain(parked=(coro, yielded), rest=rest))

    async def _drain(
        self, parked: tuple[Coroutine, Any] | None = None, rest: list[str] | None = None
    ) -> None:
        """The writer task: runs while frames wait, then ends until the next backlog."""
        loop = asyncio.get_running_loop()
        try:
            if parked is not None:
                await _resume(*parked)
                for text in rest or ():
                    if isinstance(text, BookFrame):
                        text = text.fresh(self.clock(), self.max_age_ms)
                    await self._send(text)
                DELIVERY.frames += len(rest or ())
                if self._writing_oldest_ts:
                    LAG.observe((self.clock() - self._writing_oldest_ts) / 1000)
                self.written()
            while not self.closing:
                if self.batch_ms:
                    # Let a batch gather; a reply put meanwhile waits at most this long.
                    await asyncio.sleep(self.batch_ms / 1000)
                frames, next_due = self.take()
                if frames:
                    self._last_batch_ms = self.clock()
                for text in frames:
                    if isinstance(text, BookFrame):
                        text = text.fresh(self.clock(), self.max_age_ms)
                    await self._send(text)
                DELIVERY.frames += len(frames)
                if self._writing_oldest_ts:
                    LAG.observe((self.clock() - self._writing_oldest_ts) / 1000)
                self.written()
                if self._queue or self.closing:
                    continue
                if next_due is None:
                    return  # idle: the next frame is written at once again
                if self.ready is None:
                    self.ready = asyncio.Event()
                ready = self.ready
                ready.clear()
                timer = loop.call_later(max(0.0, (next_due - self.clock()) / 1000), ready.set)
                try:
                    await ready.wait()
                finally:
                    timer.cancel()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._gone(exc)
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    def _gone(self, exc: BaseException) -> None:
        if not self.closing:
            self.closing = True
            self.clear()
            asyncio.get_running_loop().call_soon(self.on_gone, exc)

    def fail(self, exc: BaseException) -> None:
        """Called when delivering to this connection raised: it ends with 1011."""
        self._close(INTERNAL_ERROR)

    def _close(self, code: int) -> None:
        if not self.closing:
            self.closing = True
            self.clear()
            asyncio.get_running_loop().call_soon(self.on_close, code)

    def clear(self) -> None:
        self._queue.clear()
        self._queued_frames = 0
        self._slots.clear()
        self._due_slots = 0
        self.live_bytes = 0
        self._queued_oldest_ts = 0

    # --- drained by the writer

    def take(self) -> tuple[list[str], float | None]:
        """The frames to write now, and when a rate-limited slot falls due (epoch ms).

        Closes the connection instead when a live tick of an ``all`` subscription is
        already older than ``max_age_ms``: it must not be shown as live.
        """
        now = self.clock()
        if self._queued_oldest_ts and now - self._queued_oldest_ts > self.max_age_ms:
            self._close(SLOW_CONSUMER)
            return [], None
        items, self._queue = self._queue, []
        frames = self._queued_frames
        self._queued_frames = 0
        self._writing_oldest_ts = self._queued_oldest_ts
        self._queued_oldest_ts = 0
        if self.live_bytes:
            BACKLOG.observe(self.live_bytes)
        self.live_bytes = 0
        next_due = None
        if self._due_slots:
            next_due, book_frames = self._take_slots(items, now)
            frames += book_frames
        # Counted here, written by the caller (the writer task) right after.
        DELIVERY.ticks += len(items) - frames
        if self.batch_ms is None or len(items) < 2:
            return items, next_due
        if not frames:
            return [joined_frame(items)], next_due  # the usual batch: ticks only
        return _merge(items), next_due

    def written(self) -> None:
        """Called by the writer once the frames of the last take() are written."""
        self._writing_oldest_ts = 0

    def _take_slots(self, items: list[str], now: float) -> tuple[float | None, int]:
        """Due slots' frames appended to ``items``; when the next falls due, and how many
        book frames were appended."""
        next_due = None
        book_frames = 0
        for slot in self._slots.values():
            if not slot.pending:
                continue
            if slot.source is not None:
                if slot.due_ms > now:
                    next_due = slot.due_ms if next_due is None else min(next_due, slot.due_ms)
                    continue
                slot.pending = False
                self._due_slots -= 1
                text = slot.source.next_frame(now)  # the change(s) since the last one, merged
                if text is not None:
                    items.append(BookFrame(text, slot.source, now))
                    book_frames += 1
                    slot.due_ms = now + slot.interval_ms
                continue
            if now - slot.ts > self.max_age_ms:
                # Too old to show as live: drop it, and let the next tick say so.
                slot.pending = False
                self._due_slots -= 1
                slot.skipped += 1
                self.dropped_stale += 1
                DELIVERY.stale_dropped += 1
            elif slot.due_ms > now:
                next_due = slot.due_ms if next_due is None else min(next_due, slot.due_ms)
            else:
                items.append(with_skipped(slot.text, slot.skipped))
                slot.pending = False
                self._due_slots -= 1
                slot.skipped = 0
                slot.due_ms = now + slot.interval_ms
        return next_due, book_frames


def _merge(items: list[str]) -> list[str]:
    """Runs of two or more ticks become one ``ticks`` frame; other frames stay in place."""
    out: list[str] = []
    run: list[str] = []
    for item in items:
        if isinstance(item, Frame):
            if run:
                out.append(joined_frame(run))
                run = []
            out.append(item)
        else:
            run.append(item)
    if run:
        out.append(joined_frame(run))
    return out


def joined_frame(run: list[str]) -> str:
    """One frame of the ticks ``run``: a ``ticks`` frame, or the tick itself if alone."""
    if len(run) == 1:
        return run[0]
    if not FRAMES.depth:
        return ticks_frame(run)
    key = tuple(run)  # the hub hands every subscriber the same str per tick: cheap to hash
    text = FRAMES.merged.get(key)
    if text is None:
        text = FRAMES.merged[key] = ticks_frame(run)
    return text


class FrameCache(threading.local):
    """Frames built while many outboxes are written in one go, shared between them.

    Connections watching the same symbols (a dashboard's default list, programs
    following one market) get the same ticks in a round, so the same ``ticks`` frame
    and the same bytes: built once, not once per connection. Kept only for the pass
    (``with FRAMES:``), so it holds no more than one round's frames.
    """

    def __init__(self) -> None:
        self.depth = 0
        self.merged: dict[tuple[str, ...], str] = {}
        self.encoded: dict[str, bytes] = {}

    def __enter__(self) -> "FrameCache":
        self.depth += 1
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.depth -= 1
        if not self.depth:
            self.merged.clear()
            self.encoded.clear()


FRAMES = FrameCache()


@types.coroutine
def _resume(coro: Coroutine, yielded: Any):
    """Finish ``coro``, which was started by hand and last yielded ``yielded``.

    The same protocol as ``yield from coro``: whatever the task sends or throws in
    goes on to ``coro``, and each future it yields goes out to the task.
    """
    while True:
        try:
            sent = yield yielded
        except BaseException as exc:
            try:
                yielded = coro.throw(exc)
            except StopIteration:
                return
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration:
                return


class BatchClock:
    """One event loop's timers for the batching outboxes: a heap of (due, outbox).

    One timer runs, for the earliest due batch, and only while some outbox waits.
    """

    # Batches due within this much of each other are written by one timer call.
    SLACK_MS = 1.0

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Outbox]] = []
        self._order = itertools.count()  # ties in due time: in the order they began to wait
        self._handle: asyncio.TimerHandle | None = None
        self._at = float("inf")

    @property
    def waiting(self) -> list[Outbox]:
        return [outbox for _, _, outbox in sorted(self._heap)]

    def add(self, outbox: Outbox, delay_ms: float) -> None:
        """Call ``outbox.write_scheduled()`` in ``delay_ms``."""
        loop = asyncio.get_running_loop()
        due = loop.time() * 1000 + delay_ms  # the loop's clock: outboxes' clocks may differ
        heapq.heappush(self._heap, (due, next(self._order), outbox))
        if due < self._at:
            self._arm(loop, due)

    def _arm(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._at = due
        self._handle = loop.call_at(due / 1000, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._at = float("inf")
        heap = self._heap
        loop = asyncio.get_running_loop()
        until = loop.time() * 1000 + self.SLACK_MS
        with FRAMES:
            while heap and heap[0][0] <= until:
                outbox = heapq.heappop(heap)[2]
                try:
                    outbox.write_scheduled()
                except Exception as exc:  # one broken outbox must not stop the others' batches
                    outbox.fail(exc)
        if heap:
            self._arm(loop, heap[0][0])


# The running loop's batch clock.
batch_clock: PerLoop[BatchClock] = PerLoop(BatchClock)


class DeliveryRound(threading.local):
    """The hub's delivery of one batch of ticks, connection by connection.

    The fan-out goes tick by tick: each tick to each of its subscribers. Writing each
    frame at once made one system call per frame; writing at the end of the loop turn
    (tickerproject.uvicorn_ws) merged them, but then no connection got anything until the
    whole batch was done. In a round, what would be written at once is held per
    connection, and at the end each connection's frames are written together, one
    connection after the other, so the first connections' frames leave while the later
    ones are written. The hub opens a round around each batch and closes it before
    anything it awaits (a refill from history), so nothing else writes meanwhile.
    """

    def __init__(self) -> None:
        self.open = False
        self.outboxes: list[Outbox] = []
        self.cohorts: list[Any] = []  # streaming.cohort.Cohort with ticks this round

    def __enter__(self) -> "DeliveryRound":
        self.open = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def release(self) -> None:
        """Write what was held and close the round."""
        self.open = False
        outboxes = self.outboxes
        try:
            with FRAMES:
                if self.cohorts:
                    cohorts, self.cohorts = self.cohorts, []
                    for cohort in cohorts:
                        try:
                            cohort.release()
                        except Exception as exc:  # its members end (1011); others go on
                            for outbox in list(cohort.members):
                                outbox.fail(exc)
                for outbox in outboxes:
                    try:
                        outbox.release_held()
                    except Exception as exc:  # one broken outbox must not keep the others' ticks
                        outbox.fail(exc)
        finally:
            outboxes.clear()  # in place: no list per batch for the collector


# The round this thread's hub has open, if any: delivery is synchronous between its
# open and its release, so one per thread (per event loop) is enough.
ROUND = DeliveryRound()
