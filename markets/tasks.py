"""Celery tasks of the markets app; thin wrappers over markets.candles."""

import logging

from celery import shared_task

from .candles import persist_closed_candles

logger = logging.getLogger(__name__)


@shared_task(name="markets.tasks.persist_candles", ignore_result=True)
def persist_candles() -> int:
    """Beat sends this every CANDLE_PERSIST_SECONDS; it upserts closed 1m/5m/1h candles."""
    written = persist_closed_candles()
    logger.debug("persisted %d candle rows", written)
    return written
