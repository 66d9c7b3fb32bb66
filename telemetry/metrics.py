"""Every Prometheus metric of ticker, defined once (docs/operations.md, "Metrics").

Names start with ``ticker_``. prometheus_client runs in multiprocess mode when
PROMETHEUS_MULTIPROC_DIR is set (the launcher sets and wipes it): each process writes
its values to memory-mapped files there and any web process's /metrics sums them, so
the figures are right with WEB_CONCURRENCY>1 and include the Celery workers.

The hot path (per tick per client) never touches a metric. It adds to plain integers
(``DELIVERY``) and to local histograms (``LocalHistogram``), which each process flushes
into the real metrics about once a second (``flush()``, driven by streaming.hub).
"""

import bisect
import threading
from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram

# --- WebSocket connections and commands (streaming.consumer, streaming.limits)
WS_CONNECTIONS = Gauge(
    "ticker_ws_connections",
    "Open WebSocket connections (summed over live web processes).",
    multiprocess_mode="livesum",
)
WS_CLOSES = Counter(
    "ticker_ws_closes",
    "WebSocket connections closed, by close code and by which side closed first.",
    ["code", "by"],
)
WS_COMMANDS = Counter(
    "ticker_ws_commands",
    "Client commands, by action and result (ok, or the error code answered).",
    ["action", "result"],
)
SUBSCRIPTIONS = Gauge(
    "ticker_subscriptions",
    "Subscriptions per symbol (summed over live web processes).",
    ["symbol"],
    multiprocess_mode="livesum",
)

# --- Ticks (markets.publishing, streaming.hub, streaming.outbox)
TICKS_PUBLISHED = Counter(
    "ticker_ticks_published",
    "Ticks published (numbered, stored and sent to the channel layer), by symbol and source.",
    ["symbol", "source"],
)
TICKS_REFUSED = Counter(
    "ticker_ticks_refused",
    "Ticks the publish script refused because the producer no longer held the lease.",
    ["symbol"],
)
BOOK_MESSAGES = Counter(
    "ticker_book_messages_published",
    "Order-book messages published by producers (markets.books), by symbol, source and "
    "kind (snapshot: a new epoch; update: the window diff of the producer's top 50).",
    ["symbol", "source", "kind"],
)
TICKS_RECEIVED = Counter(
    "ticker_ticks_received",
    "Live ticks the web processes received from the channel layer (one per process).",
)
TICKS_DELIVERED = Counter(
    "ticker_ticks_delivered",
    "Ticks written to client sockets (one per tick per client; batched ticks counted each).",
)
FRAMES_DELIVERED = Counter(
    "ticker_frames_delivered",
    "WebSocket frames written to clients (ticks, batches, snapshots and replies).",
)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DELIVERY_LAG = Histogram(
    "ticker_delivery_lag_seconds",
    "Tick ts to frame written: once per tick per process at the fan-out (frames written "
    "at once), and once per writer batch for frames that waited (its oldest tick).",
    buckets=LAG_BUCKETS,
)
OUTBOX_BUCKETS = (0, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
OUTBOX_BYTES = Histogram(
    "ticker_outbox_bytes",
    "Live tick bytes a connection's writer found waiting when it took a backlog.",
    buckets=OUTBOX_BUCKETS,
)
SLOW_CONSUMER_CLOSES = Counter(
    "ticker_slow_consumer_closes", "Connections closed with 4008 for falling behind."
)
CLIENT_GONE_WRITES = Counter(
    "ticker_client_gone_writes",
    "Writes that found their client already gone (it disconnected mid-write): not an error.",
)
STALE_DROPPED = Counter(
    "ticker_latest_stale_dropped",
    "Ticks of 'latest' subscriptions dropped because they were older than MAX_TICK_AGE_MS.",
)

# --- Order books in the web process (streaming.book, streaming.subscription; issue 21)
BOOK_UPDATES_DELIVERED = Counter(
    "ticker_book_updates_delivered",
    "book_update frames written to clients (one per update per client).",
)
BOOK_SNAPSHOTS_DELIVERED = Counter(
    "ticker_book_snapshots_delivered",
    "book snapshot frames written to clients (on subscribe and on a new book epoch).",
)
BOOK_CONFLATED = Counter(
    "ticker_book_updates_conflated",
    "Producer book updates merged into a later book_update instead of sent on their own "
    "(a slow socket, max_rate, a batch window): seq - prev_seq - 1 per update sent.",
)
BOOK_STALE_DROPPED = Counter(
    "ticker_book_stale_dropped",
    "Book updates not sent because the process's book was older than MAX_TICK_AGE_MS "
    "(the process was behind; the next one takes the client to the then current book), "
    "or replaced by a fresh book snapshot because a full socket kept them waiting longer.",
)
BOOK_FRAMES_BUILT = Counter(
    "ticker_book_frames_built",
    "Book frames encoded by the web process: one per depth and last-sent seq, shared by "
    "every client with the same.",
)
BOOK_REFILLS = Counter(
    "ticker_book_refills",
    "Books a web process read from Redis, by why: subscribe (its first subscriber), gap "
    "(a seq hole), epoch (a delta of a new epoch), bad (a malformed message).",
    ["why"],
)
BOOK_SEQ_BREAKS = Counter(
    "ticker_book_seq_breaks",
    "book.message events that did not continue the web process's book (a hole or an "
    "unknown epoch): each made it read the book from Redis.",
)

# --- The delivery engine's faults and recoveries (streaming.hub)
HOLE_REFILLS = Counter("ticker_hole_refills", "Ticks lost by the layer, refilled from history.")
RESETS = Counter("ticker_resets", "Feeds whose subscribers were reset (history could not tell).")
STALE_TICKS = Counter(
    "ticker_stale_ticks",
    "Ticks of an epoch Redis no longer holds, dropped by a web process (a fan-out that a "
    "retry carried past a Redis restart or failover).",
)
RECOVERIES = Counter("ticker_channel_layer_recoveries", "Channel-layer outages recovered from.")
LOOP_RESTARTS = Counter(
    "ticker_receive_loop_restarts",
    "Web-process loops (the hub's, the guard's) restarted after a bug escaped them.",
    ["loop"],
)
LOOP_FAILURES = Counter(
    "ticker_loop_failures",
    "Rounds of a periodic loop (the guard's entitlement check) that failed; it tries again "
    "next period (telemetry.loops).",
    ["loop"],
)
BEHIND_EPISODES = Counter(
    "ticker_behind_episodes", "Times a web process started receiving ticks later than allowed."
)
# Labelled, so that only web processes whose hub runs have a series (an unlabelled
# gauge would be 0 in every process that imports this module: workers, beat).
RECEIVE_LOOP_UP = Gauge(
    "ticker_receive_loop_up",
    "1 while this web process's fan-out receive loop runs and its channel layer answers; "
    "0 while it is down or recovering. One series per web process (pid) that has started it.",
    ["loop"],
    multiprocess_mode="liveall",
)
CHANNEL_LAYER_ERRORS = Counter(
    "ticker_channel_layer_errors", "Channel-layer operations that failed.", ["op"]
)
REDIS_ERRORS = Counter(
    "ticker_redis_errors", "Redis operations that failed, by component.", ["component"]
)
# No label (the log line names the group): a series from the start, at 0.
REDIS_PRIMARY_CHANGES = Counter(
    "ticker_redis_primary_changes",
    "Times this process found a Sentinel-managed group's primary at another address than "
    "before (a failover; markets.sentinel logs which group).",
)
REVOKED = Counter("ticker_revoked_connections", "Connections closed with 4403 by the guard.")

# --- Producers (feeds)
LEASE_CHANGES = Counter(
    "ticker_lease_changes",
    "Producer lease changes: taken, lost (found another owner) and released.",
    ["event"],
)
FEED_FAULTS = Counter(
    "ticker_feed_faults",
    "Feed-loop steps that failed, by step (acquire, renew, refresh, start, flush, publish) "
    "and kind (error; timeout: past the deadline below the lease TTL; cancelled: a "
    "CancelledError that was no cancellation of the feed; bug: any other exception).",
    ["step", "kind"],
)
FEED_STALLS = Counter(
    "ticker_feed_stalls",
    "Feeds that held leases with drafts waiting but published nothing for "
    "FEED_STALL_SECONDS: each gave its leases up and restarted its publisher.",
)
FEED_EPOCHS = Counter(
    "ticker_feed_new_epochs",
    "Symbols a producer moved to a new epoch because Redis lost writes it had made (the "
    "stored seq behind the last it published, the history's tail gone, or the counter last "
    "used on another Redis server: a promoted replica, a restarted one), by why.",
    ["why"],
)

# --- REST and pages (telemetry.middleware)
HTTP_REQUESTS = Counter(
    "ticker_http_requests", "HTTP requests, by route, method and status.",
    ["route", "method", "status"],
)  # fmt: skip
HTTP_LATENCY = Histogram(
    "ticker_http_request_duration_seconds",
    "HTTP request latency, by route.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


class LocalHistogram:
    """Observations counted in plain Python, added to a Histogram on ``flush()``.

    ``observe`` is a bisect and a list increment (a few hundred ns), against a lock
    and two memory-mapped writes for Histogram.observe in multiprocess mode.
    """

    def __init__(self, target: Histogram, bounds: Sequence[float]) -> None:
        self.target = target
        self.bounds = list(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last is +Inf
        self.sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def observe_many(self, value: float, n: int) -> None:
        """What ``n`` calls of observe(value) would do."""
        self.counts[bisect.bisect_left(self.bounds, value)] += n
        self.sum += value * n

    def flush(self) -> None:
        counts, total = self.counts, self.sum
        if not any(counts):
            return
        self.counts = [0] * len(counts)
        self.sum = 0.0
        with self._lock:
            # prometheus_client keeps one (non-cumulative) value per bucket and the sum;
            # adding n to a bucket is what n observe() calls would do.
            buckets = self.target._buckets
            for i, n in enumerate(counts):
                if n:
                    buckets[i].inc(n)
            self.target._sum.inc(total)


class DeliveryTally:
    """Plain counters the fan-out and the writers add to; flushed into the metrics."""

    __slots__ = (
        "book_conflated", "book_frames_built", "book_snapshots", "book_stale", "book_updates",
        "frames", "received", "stale_dropped", "ticks",
    )  # fmt: skip

    def __init__(self) -> None:
        self.frames = 0
        self.ticks = 0
        self.received = 0
        self.stale_dropped = 0
        self.book_updates = 0
        self.book_snapshots = 0
        self.book_conflated = 0
        self.book_stale = 0
        self.book_frames_built = 0

    def flush(self) -> None:
        frames, ticks, received, stale = self.frames, self.ticks, self.received, self.stale_dropped
        self.frames = self.ticks = self.received = self.stale_dropped = 0
        for name, counter in (
            ("book_updates", BOOK_UPDATES_DELIVERED),
            ("book_snapshots", BOOK_SNAPSHOTS_DELIVERED),
            ("book_conflated", BOOK_CONFLATED),
            ("book_stale", BOOK_STALE_DROPPED),
            ("book_frames_built", BOOK_FRAMES_BUILT),
        ):
            value = getattr(self, name)
            if value:
                setattr(self, name, 0)
                counter.inc(value)
        if frames:
            FRAMES_DELIVERED.inc(frames)
        if ticks:
            TICKS_DELIVERED.inc(ticks)
        if received:
            TICKS_RECEIVED.inc(received)
        if stale:
            STALE_DROPPED.inc(stale)


# This process's hot-path aggregates.
DELIVERY = DeliveryTally()
LAG = LocalHistogram(DELIVERY_LAG, LAG_BUCKETS)
BACKLOG = LocalHistogram(OUTBOX_BYTES, OUTBOX_BUCKETS)


def flush() -> None:
    """Add this process's hot-path aggregates to the metrics (about once a second)."""
    DELIVERY.flush()
    LAG.flush()
    BACKLOG.flush()


# Labelled series that alerts and the dashboard read exist from the start at 0, so a
# rate() has a baseline and a rule never refers to a series that is not there yet.
for _loop in ("receive_forever", "housekeep_forever", "report_forever", "guard"):
    LOOP_RESTARTS.labels(_loop)
LOOP_FAILURES.labels("guard")
for _op in ("receive", "recover", "housekeeping"):
    CHANNEL_LAYER_ERRORS.labels(_op)
for _why in ("subscribe", "gap", "epoch", "bad"):
    BOOK_REFILLS.labels(_why)
for _component in ("refill", "catch-up", "subscribe", "metrics", "readyz", "book", "alerts"):
    REDIS_ERRORS.labels(_component)
for _event in ("taken", "lost", "released"):
    LEASE_CHANGES.labels(_event)
