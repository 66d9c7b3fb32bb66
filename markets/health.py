"""/api/health/: whether live delivery works, per component and per symbol.

It is ``degraded`` (503) when, in fact, ticks do not reach clients (docs/operations.md,
"Health states"):

- Redis or the database does not answer;
- an active symbol has had no tick for FEED_STALE_SECONDS, or its feed source is not
  up (down, starting; or no fresh report from a producer while its ticks have stopped:
  none runs it);
- this web process's fan-out receive loop is down (its channel layer is failing);
- a symbol with subscribers in this process has received no tick for longer than its
  expected interval plus HEALTH_DELIVERY_MARGIN_SECONDS, while its producer published
  one within that time: ticks are published but do not arrive here;
- a background loop of this process that has work (the entitlement guard, while
  connections are open) is dead, or has completed no round for LOOP_STALE_PERIODS of
  its periods: revoked tokens and lost rights are no longer enforced.

The producer side comes from Redis (markets.quotes.health); this process's fan-out and
loops from telemetry.probes, where the delivery engine and the guard report themselves,
so markets needs no import of streaming.
"""

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from telemetry import probes

from . import quotes
from .candles import now_ms

# A busy loop whose last round (or start) is older than this many of its periods is
# reported; never sooner than LOOP_STALE_MIN_SECONDS, so a short period does not flap.
LOOP_STALE_PERIODS = 3
LOOP_STALE_MIN_SECONDS = 1.0


@dataclass
class Report:
    base: quotes.Health
    problems: list[str] = field(default_factory=list)
    receive_loop: dict[str, Any] = field(default_factory=dict)
    loops: dict[str, dict[str, Any]] = field(default_factory=dict)
    symbols: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def expected_interval_s(source: dict | None) -> float:
    """How often a symbol should tick: its source's measured rate, else TICK_RATE."""
    rate = (source or {}).get("ticks_per_s") or 0.0
    return 1.0 / rate if rate > 0 else 1.0 / settings.TICK_RATE


async def report() -> Report:
    base = await quotes.health()
    out = Report(base=base)
    if not base.redis.ok:
        out.problems.append(f"redis: {base.redis.error}")
    if not base.database.ok:
        out.problems.append(f"database: {base.database.error}")
    for ticker in base.stale:
        out.problems.append(f"{ticker}: no tick for over {settings.FEED_STALE_SECONDS:g} s")
    margin = settings.HEALTH_DELIVERY_MARGIN_SECONDS
    for ticker, source in base.sources.items():
        name, state = source.get("name"), source.get("state")
        age = base.feed.get(ticker)
        # "unknown": no fresh report from a producer. A problem once its ticks stop too
        # (a producer that stopped); ticks published without reports (a one-off
        # publisher, tests) are not.
        quiet = age is None or age > expected_interval_s(source) + margin
        if state != "up" and (state != "unknown" or quiet):
            out.problems.append(f"{ticker}: feed source {name} is {state}")

    at = now_ms()
    delivery = probes.delivery()
    if delivery is None:
        out.receive_loop = {"state": "idle", "since_ms": None}
    else:
        out.receive_loop = {"state": delivery.receive_loop, "since_ms": delivery.since_ms}
        if delivery.receive_loop not in ("running", "idle"):
            out.problems.append(f"receive loop: {delivery.receive_loop}")
    for name, status in sorted(probes.loops().items()):
        entry, problem = loop_health(name, status, at)
        out.loops[name] = entry
        if problem:
            out.problems.append(problem)
    served = delivery.symbols if delivery is not None else {}
    for ticker, age in base.feed.items():
        source = base.sources.get(ticker)
        entry: dict[str, Any] = {"last_tick_age_s": age, "source": source}
        here = served.get(ticker)
        if here is not None and here.subscribers:
            received_age = (
                round(max(at - here.last_received_ms, 0) / 1000, 3)
                if here.last_received_ms
                else None
            )
            limit = expected_interval_s(source) + margin
            publishing = age is not None and age <= limit
            lagging = publishing and (received_age is None or received_age > limit)
            entry.update(
                subscribers=here.subscribers,
                received_age_s=received_age,
                delivery="lagging" if lagging else "ok",
            )
            if lagging:
                out.problems.append(
                    f"{ticker}: published {age:g} s ago but no tick reached this process for "
                    f"{received_age if received_age is not None else '?'} s"
                )
        else:
            entry.update(subscribers=0, received_age_s=None, delivery="idle")
        out.symbols[ticker] = entry
    return out


def loop_stale_after_s(period_s: float) -> float:
    return max(LOOP_STALE_PERIODS * period_s, LOOP_STALE_MIN_SECONDS)


def loop_health(name: str, status: probes.LoopStatus, at_ms: int) -> tuple[dict, str | None]:
    """A loop's health entry, and its problem line when it is dead or too late."""
    progress = status.last_progress_ms
    age = round(max(at_ms - progress, 0) / 1000, 3) if progress is not None else None
    last_round_age = (
        round(max(at_ms - status.last_round_ms, 0) / 1000, 3) if status.last_round_ms else None
    )
    entry = {
        "state": status.state,
        "period_s": status.period_s,
        "last_round_age_s": last_round_age,
        "failures": status.failures,
        "restarts": status.restarts,
        "error": status.error,
    }
    if not status.busy:
        return entry, None
    why = f" ({status.error})" if status.error else ""
    if status.state == "stopped":
        return entry, f"{name} loop: stopped{why}"
    if age is None or age > loop_stale_after_s(status.period_s):
        shown = "?" if age is None else f"{age:g}"
        return entry, f"{name} loop: {status.state}, no round completed for {shown} s{why}"
    return entry, None
