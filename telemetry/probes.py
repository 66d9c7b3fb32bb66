"""What this process knows about its own delivery, for health checks.

The delivery engine (streaming.hub) registers itself here; markets' health report and
the /readyz and /ops/ views read it. Through this module markets learns about the
fan-out without importing streaming (the house's dependency rule).
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
