"""Price alerts: a user's "SYMBOL crosses above/below X", what fired, and the evaluator's cursor.

Written by alerts.services (the user's edits) and alerts.evaluator (the evaluator's state
and the history); markets never imports this app.
"""

from django.conf import settings
from django.db import models

from markets.symbols import SYMBOL_MAX_LENGTH


class Direction(models.TextChoices):
    ABOVE = "above", "crosses above"
    BELOW = "below", "crosses below"


class OffReason(models.TextChoices):
    # Switched off by the server because its owner may no longer see its symbol
    # (alerts.services.switch_off_unentitled); its owner may delete it, or switch it on
    # again once the right is back.
    FORBIDDEN = "forbidden", "its owner may no longer see the symbol"


class PriceAlert(models.Model):
    """One alert. A crossing is judged tick by tick (alerts.evaluator, "Crossing")."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="price_alerts"
    )
    symbol = models.CharField(max_length=SYMBOL_MAX_LENGTH, db_index=True)
    direction = models.CharField(max_length=5, choices=Direction.choices)
    price = models.DecimalField(max_digits=24, decimal_places=8)
    repeat = models.BooleanField(
        default=False, help_text="Fire on every crossing; otherwise once, then switch off."
    )
    note = models.CharField(max_length=200, blank=True)
    active = models.BooleanField(default=True)
    off_reason = models.CharField(
        max_length=16,
        blank=True,
        choices=OffReason.choices,
        help_text="Why the server switched it off; empty otherwise.",
    )
    # Evaluator state. Ticks with seq <= armed_after_seq (in ``epoch``) are never judged
    # against this alert: it was created or edited after them.
    armed_after_seq = models.BigIntegerField(default=0)
    epoch = models.CharField(max_length=32, blank=True)
    # Which side of ``price`` the last judged tick was on: "above" (>=), "below" (<), or
    # "" while unknown (no tick yet; the first one sets it and cannot fire).
    last_side = models.CharField(max_length=5, blank=True)
    fired_count = models.PositiveIntegerField(default=0)
    last_fired = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["symbol", "price", "id"]
        indexes = [models.Index(fields=["symbol", "active"], name="alert_symbol_active")]

    def __str__(self) -> str:
        return f"{self.symbol} {self.get_direction_display()} {self.price} ({self.user})"


class AlertEvent(models.Model):
    """A fired alert, kept in the user's alert history (a copy of the rule, so it outlives it)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="alert_events"
    )
    alert = models.ForeignKey(
        PriceAlert, null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    symbol = models.CharField(max_length=SYMBOL_MAX_LENGTH)
    direction = models.CharField(max_length=5, choices=Direction.choices)
    threshold = models.DecimalField(max_digits=24, decimal_places=8)
    price = models.FloatField(help_text="Price of the tick that crossed.")
    seq = models.BigIntegerField()
    epoch = models.CharField(max_length=32, blank=True)
    tick_ts = models.BigIntegerField(help_text="The crossing tick's ts, epoch ms (UTC).")
    fired_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-fired_at", "-id"]
        # The retention's age cut (alerts.retention).
        indexes = [models.Index(fields=["fired_at"], name="alert_event_fired_at")]
        constraints = [
            # A backstop to the cursor's compare-and-set: one event per alert and tick.
            models.UniqueConstraint(fields=["alert", "epoch", "seq"], name="alert_event_once")
        ]

    def __str__(self) -> str:
        return f"{self.symbol} {self.direction} {self.threshold} at seq {self.seq}"


class EvaluatorCursor(models.Model):
    """The last tick of a symbol the evaluator has judged, moved in the same transaction
    as the events it fired (alerts.evaluator)."""

    symbol = models.CharField(max_length=SYMBOL_MAX_LENGTH, unique=True)
    epoch = models.CharField(max_length=32, blank=True)
    last_seq = models.BigIntegerField(default=0)
    updated = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.symbol} at {self.epoch}/{self.last_seq}"
