"""Writing a user's alerts (the REST API calls these); the evaluator writes its own state.

Creating or editing an alert arms it from the symbol's last tick: ticks up to that one
are never judged against it, and the side of its price that tick was on is where a
crossing starts from (alerts.evaluator, "Crossing").

An alert whose owner may no longer see its symbol (a group or permission taken away,
markets.entitlements) is switched off, with ``off_reason = "forbidden"``, not deleted:
the user keeps what they set and sees why it stopped, and may delete it or, once the
right is back, switch it on again. Until then the REST API refuses to edit it (403), and
it never fires: the evaluator checks its owner's rights as it stores an event
(alerts.evaluator) and sweeps every ENTITLEMENT_RECHECK_SECONDS
(``switch_off_unentitled``), and the web process checks them again before it writes an
alert to a socket (streaming.alerts).
"""

from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from markets.entitlements import restrictions, unentitled

from .models import OffReason, PriceAlert


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
    if "active" in changes:
        alert.off_reason = ""  # the user's own choice now
    if rearm:
        _arm(alert, last)
    alert.save()
    return alert


def switch_off_forbidden(alerts: QuerySet) -> int:
    """Switch off those of ``alerts`` that are on, as lost to their owner's rights."""
    # ``updated`` is the alert's version (alerts.evaluator): an evaluator holding the old
    # state will not switch it back on.
    return alerts.filter(active=True).update(
        active=False, off_reason=OffReason.FORBIDDEN, updated=timezone.now()
    )


def switch_off_unentitled() -> int:
    """Switch off every active alert whose owner may no longer see its symbol; how many."""
    restricted = restrictions()
    if not restricted:
        return 0
    alerts = list(
        PriceAlert.objects.filter(active=True, symbol__in=list(restricted)).select_related("user")
    )
    refused = unentitled(((a.user, a.symbol) for a in alerts), restricted=restricted)
    if not refused:
        return 0
    lost = [a.pk for a in alerts if (a.user_id, a.symbol) in refused]
    return switch_off_forbidden(PriceAlert.objects.filter(pk__in=lost))
