"""Background loops that must not die: their supervisor, and a periodic loop's rounds.

``supervise(name, loop_fn, faults=...)`` runs ``loop_fn()`` until it returns: a bug that
escapes it is logged through ``faults`` (streaming.faults.FaultLog: the first time with
its traceback, then every 10x-th time with a count), counted in
``ticker_receive_loop_restarts_total{loop=name}``, and the loop starts again after a
backoff (0.1 s, doubling up to 1 s), as streaming.hub's loops are restarted.

``Rounds`` is a periodic loop's bookkeeping: when it started, how each round ended
(a failed round counted in ``ticker_loop_failures_total{loop=name}``), and the
``probes.LoopStatus`` it shows /api/health/ (markets.health) through telemetry.probes.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from . import metrics, probes

RESTART_FIRST_SECONDS = 0.1
RESTART_MAX_SECONDS = 1.0


class FaultReporter(Protocol):
    """What supervise needs of a fault log (streaming.faults.FaultLog)."""

    def report(
        self, kind: str, message: str, *args: object, exc: BaseException | None = None
    ) -> None: ...


def _wall_ms() -> int:
    return int(time.time() * 1000)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Rounds:
    """The state of one periodic loop, kept by the loop, read by health checks."""

    def __init__(self, name: str, *, period_s: float) -> None:
        self.name = name
        self.period_s = period_s
        self.started_ms: int | None = None
        self.last_round_ms: int | None = None
        self.failures = 0  # in a row
        self.restarts = 0
        self.error: str | None = None
        self._restarting = False

    def started(self, *, fresh: bool = True) -> None:
        """Its task starts: rounds are judged from now until the first one ends. A restart
        after a bug (``fresh=False``) keeps the clock running, so a loop that fails at
        every start still grows old."""
        if fresh:
            self.started_ms = _wall_ms()
            self._restarting = False

    def succeeded(self) -> None:
        self.last_round_ms = _wall_ms()
        self.failures = 0
        self.error = None
        self._restarting = False

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.error = _describe(exc)
        self._restarting = False
        metrics.LOOP_FAILURES.labels(self.name).inc()

    def restarting(self, exc: BaseException) -> None:
        self.restarts += 1
        self.error = _describe(exc)
        self._restarting = True

    def status(self, *, alive: bool, busy: bool) -> probes.LoopStatus:
        """``alive``: its task runs; ``busy``: it has work (health judges it only then)."""
        if not busy:
            state = "idle"
        elif not alive:
            state = "stopped"
        elif self._restarting:
            state = "restarting"
        elif self.failures:
            state = "failing"
        else:
            state = "running"
        return probes.LoopStatus(
            state=state,
            period_s=self.period_s,
            busy=busy,
            started_ms=self.started_ms,
            last_round_ms=self.last_round_ms,
            failures=self.failures,
            restarts=self.restarts,
            error=self.error if state in ("failing", "restarting", "stopped") else None,
        )


async def supervise(
    name: str,
    loop_fn: Callable[[], Awaitable[None]],
    *,
    faults: FaultReporter,
    rounds: Rounds | None = None,
    first_delay: float = RESTART_FIRST_SECONDS,
    max_delay: float = RESTART_MAX_SECONDS,
) -> None:
    """Run ``loop_fn()`` until it returns; restart it with backoff when a bug escapes it."""
    delay = first_delay
    fresh = True
    while True:
        if rounds is not None:
            rounds.started(fresh=fresh)
        fresh = False
        try:
            await loop_fn()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            metrics.LOOP_RESTARTS.labels(name).inc()
            if rounds is not None:
                rounds.restarting(exc)
            faults.report(f"loop:{name}", "%s loop failed; restarting", name, exc=exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
