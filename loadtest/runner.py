"""Runs a load test: starts the client processes, relays their progress, merges results."""

import multiprocessing
import queue as queue_module
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .client import worker_main
from .config import LoadTestConfig
from .stats import WorkerTotals

# Spawned processes start in about half a second; leave room for a loaded machine.
READY_TIMEOUT = 60.0
# After the window closes: closing handshakes plus pickling results back.
FINISH_GRACE = 30.0


class LoadTestError(RuntimeError):
    """The harness itself failed (a client process crashed or hung)."""


@dataclass
class Second:
    """Totals of all client processes at one second after the start."""

    second: int
    phase: str
    open: int
    opened: int
    failed: int
    closed_early: int
    frames: int
    ticks: int
    frames_per_s: int = 0
    ticks_per_s: int = 0


@dataclass
class Outcome:
    config: LoadTestConfig
    totals: WorkerTotals
    timeline: list[Second] = field(default_factory=list)
    started_at: str = ""
    finished_at: str = ""


def _phase(cfg: LoadTestConfig, second: int) -> str:
    if second <= cfg.ramp:
        return "ramp"
    if second <= cfg.ramp + cfg.duration:
        return "measure"
    return "closing"


class _Timeline:
    """Sums per-process progress into one row per second, once every process has
    reported that second (or a later one)."""

    def __init__(self, cfg: LoadTestConfig, on_second: Callable[[Second], None] | None) -> None:
        self.cfg = cfg
        self.on_second = on_second
        self.reports: dict[int, dict[int, tuple[int, ...]]] = {}
        # Per process, the values used in the last row: a late process repeats them.
        self.emitted: dict[int, tuple[int, ...]] = {}
        self.rows: list[Second] = []
        self.next_second = 1

    def add(self, worker: int, second: int, values: tuple[int, ...]) -> None:
        self.reports.setdefault(second, {})[worker] = values
        while self._complete(self.next_second):
            self._emit(self.next_second)

    def _complete(self, second: int) -> bool:
        if second not in self.reports:
            return False
        have = self.reports[second]
        return len(have) == self.cfg.processes or any(s > second + 2 for s in self.reports)

    def _emit(self, second: int) -> None:
        have = self.reports.pop(second, {})
        sums = [0] * 6
        for worker in range(self.cfg.processes):
            values = have.get(worker) or self.emitted.get(worker) or (0,) * 6
            self.emitted[worker] = values
            for i, v in enumerate(values):
                sums[i] += v
        row = Second(second, _phase(self.cfg, second), *sums)
        if self.rows:
            row.frames_per_s = row.frames - self.rows[-1].frames
            row.ticks_per_s = row.ticks - self.rows[-1].ticks
        else:
            row.frames_per_s, row.ticks_per_s = row.frames, row.ticks
        self.rows.append(row)
        self.next_second = second + 1
        if self.on_second is not None:
            self.on_second(row)

    def flush(self) -> None:
        for second in sorted(self.reports):
            if second >= self.next_second:
                self._emit(second)


def run_loadtest(
    *, config: LoadTestConfig, on_second: Callable[[Second], None] | None = None
) -> Outcome:
    """Run the load test described by ``config``; ``on_second`` gets live progress."""
    ctx = multiprocessing.get_context("spawn")
    events = ctx.Queue()
    start = ctx.Event()
    t0 = ctx.Value("d", 0.0)
    procs = [
        ctx.Process(
            target=worker_main,
            args=(config, worker, events, start, t0),
            name=f"loadtest-client-{worker}",
            daemon=True,
        )
        for worker in range(config.processes)
    ]
    timeline = _Timeline(config, on_second)
    results: dict[int, WorkerTotals] = {}
    try:
        for proc in procs:
            proc.start()
        ready: set[int] = set()
        deadline = time.monotonic() + READY_TIMEOUT
        while len(ready) < config.processes:
            message = _next(events, procs, deadline, "start")
            if message[0] == "ready":
                ready.add(message[1])

        t0.value = time.time() + 0.5
        started_at = datetime.fromtimestamp(t0.value, UTC).isoformat(timespec="seconds")
        start.set()
        end = config.ramp + config.duration + config.close_timeout + FINISH_GRACE
        deadline = time.monotonic() + 0.5 + end
        while len(results) < config.processes:
            message = _next(events, procs, deadline, "finish")
            if message[0] == "progress":
                timeline.add(message[1], message[2], message[3])
            elif message[0] == "result":
                results[message[1]] = message[2]
        for proc in procs:
            proc.join(timeout=10)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
    timeline.flush()

    totals = WorkerTotals()
    for worker in sorted(results):
        totals.merge(results[worker])
    return Outcome(
        config=config,
        totals=totals,
        timeline=[row for row in timeline.rows if row.second <= config.ramp + config.duration],
        started_at=started_at,
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _next(events, procs, deadline: float, stage: str) -> tuple:
    """The next message from the client processes; raises if they crash or hang."""
    while True:
        try:
            message = events.get(timeout=0.5)
        except queue_module.Empty:
            if time.monotonic() > deadline:
                raise LoadTestError(f"client processes did not {stage} in time") from None
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise LoadTestError(
                    f"client process {dead[0].name} died with exit code {dead[0].exitcode}"
                ) from None
            continue
        if message[0] == "crash":
            raise LoadTestError(f"client process {message[1]} crashed:\n{message[2]}")
        return message
