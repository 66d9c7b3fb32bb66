"""Redis keys of the alerts app, under ``settings.REDIS_PREFIX`` (market keys: markets.keys)."""

from django.conf import settings


def evaluator_lease_key() -> str:
    """Held by the one evaluator loop that judges ticks (alerts.evaluator.EvaluatorLease)."""
    return f"{settings.REDIS_PREFIX}:alerts:evaluator"
