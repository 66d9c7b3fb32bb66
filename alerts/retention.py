"""How long fired alerts stay in their users' history: ALERT_HISTORY_DAYS, and at most
ALERT_HISTORY_MAX_PER_USER per user (the newest are kept).

Every fired alert is a row (``AlertEvent``), and a repeating alert on a busy symbol
fires often, so without a limit the table grows for as long as the deployment runs.
``prune_history`` enforces both limits; beat runs it every ALERT_HISTORY_PRUNE_SECONDS
(alerts.tasks). Rows go in batches of short transactions, so a first run over a large
backlog does not hold the evaluator's writes for long.
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, QuerySet
from django.utils import timezone

from .models import AlertEvent

BATCH = 2000


def prune_history(
    *, now: datetime | None = None, days: float | None = None, per_user: int | None = None
) -> int:
    """Delete events older than ``days`` and each user's beyond their newest ``per_user``
    (the settings by default; 0 turns a limit off). Returns how many were deleted."""
    now = now or timezone.now()
    days = settings.ALERT_HISTORY_DAYS if days is None else days
    per_user = settings.ALERT_HISTORY_MAX_PER_USER if per_user is None else per_user
    deleted = 0
    if days > 0:
        deleted += _delete(AlertEvent.objects.filter(fired_at__lt=now - timedelta(days=days)))
    if per_user > 0:
        crowded = (
            AlertEvent.objects.order_by()
            .values("user_id")
            .annotate(n=Count("id"))
            .filter(n__gt=per_user)
            .values_list("user_id", flat=True)
        )
        for user_id in list(crowded):
            mine = AlertEvent.objects.filter(user_id=user_id)
            # The oldest event kept: the history reads newest first by id.
            oldest_kept = mine.order_by("-pk").values_list("pk", flat=True)[per_user - 1]
            deleted += _delete(mine.filter(pk__lt=oldest_kept))
    return deleted


def _delete(events: QuerySet) -> int:
    deleted = 0
    while True:
        batch = list(events.order_by("pk").values_list("pk", flat=True)[:BATCH])
        if not batch:
            return deleted
        deleted += AlertEvent.objects.filter(pk__in=batch).delete()[0]
