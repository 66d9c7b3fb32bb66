"""Capacity mode: step the client count up and find the most the server holds.

Each step is a whole load test (its own client processes, ramp and measurement
window) at one client count; a step *holds* when its p99 latency is at most
``max_p99_ms`` and it delivered at least ``min_delivered_ratio`` of the expected
ticks. Steps go up from ``start`` by ``step`` to ``maximum`` and stop at the first
step that does not hold, after ``MAX_STEPS`` steps, or before a step that would end
past ``budget_s``. The result is the largest client count that held, with one row
per step.
"""

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from .config import LoadTestConfig
from .report import build_report
from .runner import Outcome, Second, run_loadtest

# At most this many steps in one capacity run, whatever START:STEP:MAX says.
MAX_STEPS = 50
# Seconds a step takes on top of its ramp and window: starting the client
# processes, closing the connections, merging the results.
STEP_OVERHEAD_S = 5.0


@dataclass(frozen=True)
class CapacityPlan:
    start: int
    step: int
    maximum: int
    max_p99_ms: float = 100.0
    min_delivered_ratio: float = 0.99
    budget_s: float = 600.0  # wall time of the whole capacity run, at most

    def __post_init__(self) -> None:
        if self.start < 1 or self.step < 1 or self.maximum < self.start:
            raise ValueError("capacity wants START:STEP:MAX with 1 <= START <= MAX and STEP >= 1")
        if self.max_p99_ms <= 0:
            raise ValueError("the capacity p99 limit must be positive")
        if not 0 <= self.min_delivered_ratio <= 1:
            raise ValueError("the capacity delivered ratio must be between 0 and 1")
        if self.budget_s <= 0:
            raise ValueError("the capacity time budget must be positive")

    def client_counts(self) -> list[int]:
        """The client count of every step, in order: at most MAX_STEPS of them."""
        return list(range(self.start, self.maximum + 1, self.step))[:MAX_STEPS]

    @classmethod
    def parse(cls, text: str, **limits: Any) -> "CapacityPlan":
        """``START:STEP:MAX``, e.g. ``100:100:1000``."""
        parts = text.split(":")
        try:
            start, step, maximum = (int(p) for p in parts)
        except ValueError:
            raise ValueError(f"capacity wants START:STEP:MAX (integers), got {text!r}") from None
        return cls(start, step, maximum, **limits)


def step_row(report: dict[str, Any], plan: CapacityPlan) -> dict[str, Any]:
    """One step's figures, and whether the server held that load."""
    c = report["connections"]
    tp = report["throughput"]
    lat = report["latency_ms"]
    seq = report["seq"]
    why = []
    if lat["p99"] is None:
        why.append("no tick measured")
    elif lat["p99"] > plan.max_p99_ms:
        why.append(f"p99 {lat['p99']} ms above {plan.max_p99_ms} ms")
    ratio = tp["delivered_ratio"]
    if ratio is None or ratio < plan.min_delivered_ratio:
        why.append(f"delivered {ratio} below {plan.min_delivered_ratio}")
    return {
        "clients": report["config"]["clients"],
        "opened": c["opened"],
        "failed": c["failed"],
        "closed_early": c["closed_early"],
        "slow_consumer_closes": c["slow_consumer_closes"],
        "expected_per_s": tp["expected_ticks_per_s"],
        "delivered_per_s": tp["delivered_ticks_per_s"],
        "delivered_ratio": ratio,
        "p50_ms": lat["p50"],
        "p99_ms": lat["p99"],
        "max_ms": lat["max"],
        "gaps": seq["gaps"],
        "conflated": seq["conflated"],
        "harness_cpu_us_per_frame": report["harness"]["cpu_us_per_frame"],
        "held": not why,
        "why_not": why,
    }


def run_capacity(
    config: LoadTestConfig,
    plan: CapacityPlan,
    *,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    on_second: Callable[[Second], None] | None = None,
    run: Callable[..., Outcome] = run_loadtest,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Run the steps of ``plan`` with ``config`` (its ``clients`` is replaced per step)."""
    if config.symbols_per_client < 1:
        raise ValueError("capacity needs clients that subscribe (symbols-per-client >= 1)")
    started = clock()
    rows: list[dict[str, Any]] = []
    held: int | None = None
    counts = plan.client_counts()
    stopped = f"reached the maximum, {plan.maximum} clients"
    if len(counts) == MAX_STEPS and counts[-1] < plan.maximum:
        stopped = f"reached the step limit, {MAX_STEPS} steps"
    per_step = config.ramp + config.duration + STEP_OVERHEAD_S
    for clients in counts:
        if clock() - started + per_step > plan.budget_s:
            stopped = f"time budget: a step of {clients} clients would end past {plan.budget_s} s"
            break
        step_config = replace(
            config, clients=clients, processes=min(config.processes, clients), thresholds={}
        )
        row = step_row(build_report(run(config=step_config, on_second=on_second)), plan)
        rows.append(row)
        if on_step is not None:
            on_step(row)
        if not row["held"]:
            stopped = f"{clients} clients did not hold: " + "; ".join(row["why_not"])
            break
        held = clients
    return {
        "plan": asdict(plan),
        "max_clients_held": held,
        "stopped": stopped,
        "steps": rows,
        "wall_s": round(clock() - started, 1),
    }


CAPACITY_HEADER = (
    f"{'clients':>8} {'opened':>7} {'failed':>6} {'4008':>5} {'expected/s':>11} "
    f"{'delivered/s':>12} {'ratio':>7} {'p50 ms':>8} {'p99 ms':>9} {'gaps':>6} "
    f"{'conflated':>9}  held"
)


def step_line(r: dict[str, Any]) -> str:
    """One step as a line of the table under CAPACITY_HEADER."""
    ratio = "-" if r["delivered_ratio"] is None else f"{r['delivered_ratio']:.1%}"
    return (
        f"{r['clients']:>8,} {r['opened']:>7,} {r['failed']:>6,} "
        f"{r['slow_consumer_closes']:>5,} {r['expected_per_s']:>11,.0f} "
        f"{r['delivered_per_s']:>12,.1f} {ratio:>7} {_ms(r['p50_ms']):>8} "
        f"{_ms(r['p99_ms']):>9} {r['gaps']:>6,} {r['conflated']:>9,}  "
        + ("yes" if r["held"] else "NO: " + "; ".join(r["why_not"]))
    )


def capacity_lines(result: dict[str, Any]) -> list[str]:
    """The steps as a table, and the verdict."""
    lines = [CAPACITY_HEADER] + [step_line(r) for r in result["steps"]]
    plan = result["plan"]
    held = result["max_clients_held"]
    lines.append(
        f"capacity: {'no step held' if held is None else f'{held:,} clients held'} at "
        f"p99 <= {plan['max_p99_ms']} ms and >= {plan['min_delivered_ratio']:.1%} delivered "
        f"(stopped: {result['stopped']}; {result['wall_s']} s)"
    )
    return lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"
