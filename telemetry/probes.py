"""What this process knows about its own delivery and loops, for health checks.

The delivery engine (streaming.hub) registers itself here, and so does every named
background loop (streaming.guard's entitlement rounds: ``register_loop``); markets'
health report and the /readyz and /ops/ views read them. Through this module markets
learns about streaming without importing it (the house's dependency rule).
"""

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SymbolDelivery:
    subscribers: int
    last_received_ms: int | None  # wall-clock ms when this process last got a live tick
    last_ts: int | None  # ts of that tick


@dataclass(frozen=True)
class Delivery:
    """One web process's fan-out: its receive loop and the symbols it serves."""

    receive_loop: str  # "running", "recovering" (channel layer failing), "stopped"
    since_ms: int | None  # when the loop entered that state
    symbols: dict[str, SymbolDelivery] = field(default_factory=dict)


_probe: Callable[[], Delivery] | None = None


def register_delivery(owner: object, method_name: str) -> None:
    """Register ``owner.method_name()`` as this process's delivery probe (weakly)."""
    global _probe
    ref = weakref.ref(owner)

    def probe() -> Delivery | None:
        obj = ref()
        return None if obj is None else getattr(obj, method_name)()

    _probe = probe


def delivery() -> Delivery | None:
    """This process's delivery, or None before its first subscriber (nothing to deliver)."""
    return _probe() if _probe is not None else None


# --- Named loops: periodic work a process runs in the background (the guard's rounds)


@dataclass(frozen=True)
class LoopStatus:
    """A periodic loop's account of itself, for health checks.

    ``state`` is "running" (its last round succeeded), "failing" (its last round raised;
    it tries again next period), "restarting" (a bug escaped it; its supervisor restarts
    it after a backoff), "stopped" (its task ended while it has work) or "idle" (no work:
    it does not run). Health judges a loop only while ``busy``.
    """

    state: str
    period_s: float
    busy: bool
    started_ms: int | None  # wall-clock ms when its task (re)started
    last_round_ms: int | None  # wall-clock ms when its last successful round ended
    failures: int  # rounds failed in a row
    restarts: int  # times its supervisor restarted it
    error: str | None = None  # the last failure, while failing, restarting or stopped

    @property
    def last_progress_ms(self) -> int | None:
        """When it last showed life: its last successful round, or its (fresh) start."""
        marks = [m for m in (self.last_round_ms, self.started_ms) if m is not None]
        return max(marks) if marks else None


_loops: dict[str, Callable[[], LoopStatus | None]] = {}


def register_loop(name: str, owner: object, method_name: str) -> None:
    """Register ``owner.method_name()`` (weakly) as the probe of the loop called ``name``.

    The probe returns a LoopStatus, or None once the loop is gone (its event loop
    closed); a later registration under the same name replaces it.
    """
    ref = weakref.ref(owner)

    def probe() -> LoopStatus | None:
        obj = ref()
        return None if obj is None else getattr(obj, method_name)()

    probe.owner = ref  # type: ignore[attr-defined]
    _loops[name] = probe


def unregister_loop(name: str, owner: object) -> None:
    """Forget ``name``'s probe if ``owner`` registered it (a loop shut down on purpose)."""
    probe = _loops.get(name)
    if probe is not None and probe.owner() is owner:  # type: ignore[attr-defined]
        del _loops[name]


def loops() -> dict[str, LoopStatus]:
    """Every registered loop's status, by name; loops that are gone are forgotten."""
    out = {}
    for name, probe in list(_loops.items()):
        status = probe()
        if status is None:
            _loops.pop(name, None)
        else:
            out[name] = status
    return out
