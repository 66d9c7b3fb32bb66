"""Writing a user's alerts (the REST API calls these); the evaluator writes its own state.

Creating or editing an alert arms it from the symbol's last tick: ticks up to that one
are never judged against it, and the side of its price that tick was on is where a
crossing starts from (alerts.evaluator, "Crossing").
"""

from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import transaction

from .models import PriceAlert


class InvalidAlert(ValueError):
    """The alert cannot be saved as asked (e.g. the user has too many)."""


@dataclass(frozen=True, slots=True)
class LastTick:
    """The symbol's newest tick when the alert is armed; all None before its first tick."""

    epoch: str = ""
    seq: int = 0
    price: float | None = None


def _arm(alert: PriceAlert, last: LastTick) -> None:
    alert.epoch = last.epoch
    alert.armed_after_seq = last.seq
    alert.last_side = (
        "" if last.price is None else ("above" if last.price >= float(alert.price) else "below")
    )


def create_alert(
    *, user, symbol: str, direction: str, price: Decimal, repeat: bool, note: str, last: LastTick
) -> PriceAlert:
    with transaction.atomic():
        if PriceAlert.objects.filter(user=user).count() >= settings.ALERTS_MAX_PER_USER:
            raise InvalidAlert(
                f"at most {settings.ALERTS_MAX_PER_USER} alerts per user; delete one first"
            )
        alert = PriceAlert(
            user=user, symbol=symbol, direction=direction, price=price, repeat=repeat, note=note
        )
        _arm(alert, last)
        alert.save()
    return alert


def update_alert(alert: PriceAlert, *, changes: dict, last: LastTick) -> PriceAlert:
    """Apply ``changes`` (direction, price, repeat, note, active). A change of the rule or
    switching it on re-arms it from ``last``; a note alone does not."""
    rearm = any(
        key in changes and changes[key] != getattr(alert, key) for key in ("direction", "price")
    ) or (changes.get("active") is True and not alert.active)
    for key, value in changes.items():
        setattr(alert, key, value)
    if rearm:
        _arm(alert, last)
    alert.save()
    return alert
