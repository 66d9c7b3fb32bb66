"""Counting what a load test saw: latency histograms, seq checks, and their merge.

Everything here is plain Python with no Django import, because it runs in the
client processes on the hot path and is pickled back to the parent.
"""

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# Seqs a stream remembers as missing, so a late arrival can be told from a duplicate.
MAX_REMEMBERED_MISSING = 1000


class LatencyHistogram:
    """Latencies in fixed 0.1 ms buckets (floored); merges across processes exactly."""

    RESOLUTION_MS = 0.1

    __slots__ = ("counts", "max_ms", "sum_ms", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0
        self.sum_ms = 0.0
        self.max_ms = 0.0

    def record(self, ms: float) -> None:
        if ms < 0:
            # Same host, same clock: only the server's ms truncation can make this negative.
            ms = 0.0
        key = int(ms * 10)
        self.counts[key] = self.counts.get(key, 0) + 1
        self.total += 1
        self.sum_ms += ms
        if ms > self.max_ms:
            self.max_ms = ms

    def merge(self, other: "LatencyHistogram") -> None:
        for key, n in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + n
        self.total += other.total
        self.sum_ms += other.sum_ms
        self.max_ms = max(self.max_ms, other.max_ms)

    def percentile(self, p: float) -> float | None:
        """Nearest-rank percentile (0 < p <= 100), floored to the 0.1 ms bucket."""
        if not self.total:
            return None
        if p >= 100:
            return round(self.max_ms, 1)
        rank = max(1, math.ceil(p / 100 * self.total))
        seen = 0
        for key in sorted(self.counts):
            seen += self.counts[key]
            if seen >= rank:
                return round(key * self.RESOLUTION_MS, 1)
        return round(self.max_ms, 1)  # unreachable: the counts sum to total

    def cdf(self, max_points: int = 2000) -> tuple[list[float], list[float]]:
        """(latency ms, fraction of ticks at or below it), at most ``max_points`` long."""
        if not self.total:
            return [], []
        keys = sorted(self.counts)
        step = max(1, math.ceil(len(keys) / max_points))
        xs: list[float] = []
        ys: list[float] = []
        seen = 0
        for i, key in enumerate(keys):
            seen += self.counts[key]
            if i % step == 0 or i == len(keys) - 1:
                xs.append(round(key * self.RESOLUTION_MS, 1))
                ys.append(seen / self.total)
        return xs, ys

    def summary(self) -> dict[str, float | int | None]:
        return {
            "count": self.total,
            "mean": round(self.sum_ms / self.total, 2) if self.total else None,
            "p50": self.percentile(50),
            "p90": self.percentile(90),
            "p99": self.percentile(99),
            "max": round(self.max_ms, 1) if self.total else None,
        }


@dataclass
class SeqCounts:
    """Seq anomalies over every (client, symbol) stream of a run."""

    gaps: int = 0  # seqs skipped and never delivered later
    # The same before the measurement window (the ramp): where every stream starts,
    # at the seam between a subscribe's snapshot and its live ticks.
    gaps_before_window: int = 0
    duplicates: int = 0
    out_of_order: int = 0  # seqs that arrived after a later one
    resets: int = 0  # server "reset" frames: the stream was rebuilt from a snapshot
    # Seqs the server announced it left out ("skipped": k on a tick, mode "latest"):
    # replaced by a newer tick of the symbol, so not gaps.
    conflated: int = 0
    # Ticks whose "skipped" claimed more seqs than the jump since the previous tick.
    conflation_mismatch: int = 0

    def merge(self, other: "SeqCounts") -> None:
        self.gaps += other.gaps
        self.gaps_before_window += other.gaps_before_window
        self.duplicates += other.duplicates
        self.out_of_order += other.out_of_order
        self.resets += other.resets
        self.conflated += other.conflated
        self.conflation_mismatch += other.conflation_mismatch


class SeqTracker:
    """Checks one (client, symbol) stream of seqs, which must rise by exactly 1.

    ``counting`` says whether an anomaly falls inside the measurement window; the
    stream's state is kept up to date either way, so ticks seen during the ramp
    (and snapshots) seed it without being judged.
    """

    __slots__ = ("first_counted", "last", "last_counted", "missing")

    def __init__(self) -> None:
        self.last: int | None = None
        # seq -> whether its absence was counted as a gap
        self.missing: dict[int, bool] = {}
        self.first_counted: int | None = None
        self.last_counted: int | None = None

    def seed(self, seq: int) -> None:
        """A snapshot ended at ``seq``: the next live tick should be ``seq + 1``."""
        if self.last is None or seq > self.last:
            self.last = seq
        for old in [s for s in self.missing if s <= seq]:
            # Delivered by the snapshot after all; a counted gap is taken back.
            del self.missing[old]

    def reset(self) -> None:
        """The server said this stream's history restarts; forget it."""
        self.last = None
        self.missing.clear()

    def observe(self, seq: int, counting: bool, counts: SeqCounts, skipped: int = 0) -> None:
        """One tick's ``seq``; ``skipped`` is its announced conflation (k >= 1: it
        replaced the k ticks of the symbol just before it, so ``seq`` may be up to
        k + 1 past the previous one without a gap)."""
        last = self.last
        if counting:
            if self.first_counted is None:
                self.first_counted = seq
            self.last_counted = seq
        if last is None:
            self.last = seq
            return
        if seq == last + 1 and not skipped:
            self.last = seq
            return
        if seq > last:
            jump = seq - last - 1
            conflated = skipped if skipped <= jump else jump
            lost = jump - conflated
            if counting:
                counts.gaps += lost
                counts.conflated += conflated
                if skipped > jump:
                    counts.conflation_mismatch += 1
            else:
                counts.gaps_before_window += lost
            # The conflated seqs are the ones just before seq; only the rest is missing.
            if lost and len(self.missing) + lost <= MAX_REMEMBERED_MISSING:
                for s in range(last + 1, last + 1 + lost):
                    self.missing[s] = counting
            self.last = seq
            return
        # seq <= last: either a late one we counted as missing, or one we already had.
        was_counted = self.missing.pop(seq, None)
        if was_counted is None:
            if counting:
                counts.duplicates += 1
            return
        if counting:
            counts.out_of_order += 1
        if was_counted:
            counts.gaps -= 1
        else:
            counts.gaps_before_window -= 1


@dataclass
class WorkerTotals:
    """Everything one client process measured; merged into the run's totals."""

    clients: int = 0
    attempted: int = 0
    opened: int = 0
    failed: int = 0
    closed_early: int = 0
    open_at_end: int = 0
    # Close code 4008 ("slow consumer"): the client reconnects and resumes with since.
    slow_consumer_closes: int = 0
    reconnect_attempts: int = 0
    reconnected: int = 0  # reconnect handshakes that succeeded
    resumed: int = 0  # resumed connections the server answered with "subscribed"
    resume_failed: int = 0  # clients that gave up reconnecting (also closed early)
    frames: int = 0  # every frame received, whole run
    frames_counted: int = 0  # frames received inside the measurement window
    ticks: int = 0  # live ticks received, whole run
    ticks_counted: int = 0  # live ticks received inside the window
    batch_frames_counted: int = 0  # "ticks" frames inside the window
    snapshots: int = 0
    snapshot_ticks: int = 0
    subscribed: int = 0
    streams: int = 0  # (client, symbol) pairs that received at least one tick
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    seq: SeqCounts = field(default_factory=SeqCounts)
    errors: Counter = field(default_factory=Counter)  # server error frames by code
    error_samples: list[dict[str, Any]] = field(default_factory=list)
    connect_errors: Counter = field(default_factory=Counter)
    close_codes: Counter = field(default_factory=Counter)
    reconnect_errors: Counter = field(default_factory=Counter)
    unexpected: Counter = field(default_factory=Counter)  # frames the harness could not use
    connect_ms: list[float] = field(default_factory=list)
    # symbol -> [newest seq any client had when the window opened, newest at its end]
    seq_span: dict[str, list[int]] = field(default_factory=dict)
    # per (client, symbol) stream: seqs it advanced through inside the window
    stream_spans: list[int] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)  # per process, inside the window
    # ...of which in the kernel (socket reads, mostly)
    cpu_system_seconds: list[float] = field(default_factory=list)
    event_loop: str = ""
    # Books (issue 21): every book message is checked (prev_seq, then the checksum of
    # the client's book after applying it; loadtest.books).
    book_snapshots: int = 0
    book_updates: int = 0  # whole run
    book_updates_counted: int = 0  # inside the window
    book_bytes_counted: int = 0  # bytes of those book_update frames
    book_conflated: int = 0  # producer updates merged into them (seq - prev_seq - 1)
    book_prev_seq_breaks: int = 0
    book_checksum_failures: int = 0
    # How old the book a client holds is when an update arrives: receipt - its ts.
    book_age: LatencyHistogram = field(default_factory=LatencyHistogram)

    def merge(self, other: "WorkerTotals") -> None:
        for name in (
            "clients", "attempted", "opened", "failed", "closed_early", "open_at_end",
            "slow_consumer_closes", "reconnect_attempts", "reconnected", "resumed",
            "resume_failed",
            "frames", "frames_counted", "ticks", "ticks_counted", "batch_frames_counted",
            "snapshots", "snapshot_ticks", "subscribed", "streams", "book_snapshots",
            "book_updates", "book_updates_counted", "book_bytes_counted", "book_conflated",
            "book_prev_seq_breaks", "book_checksum_failures",
        ):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latency.merge(other.latency)
        self.book_age.merge(other.book_age)
        self.seq.merge(other.seq)
        self.errors.update(other.errors)
        self.error_samples = (self.error_samples + other.error_samples)[:10]
        self.connect_errors.update(other.connect_errors)
        self.close_codes.update(other.close_codes)
        self.reconnect_errors.update(other.reconnect_errors)
        self.unexpected.update(other.unexpected)
        self.connect_ms.extend(other.connect_ms)
        for symbol, (lo, hi) in other.seq_span.items():
            mine = self.seq_span.setdefault(symbol, [lo, hi])
            mine[0] = max(mine[0], lo)
            mine[1] = max(mine[1], hi)
        self.stream_spans.extend(other.stream_spans)
        self.cpu_seconds.extend(other.cpu_seconds)
        self.cpu_system_seconds.extend(other.cpu_system_seconds)
        self.event_loop = self.event_loop or other.event_loop


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of unsorted ``values``."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def gap_ratio(*, gaps: int, delivered: int) -> float:
    """Missing ticks as a share of those that should have arrived."""
    expected = gaps + delivered
    return gaps / expected if expected else 0.0
