"""Celery tasks of the feed; thin wrappers over feeds.services."""

import threading

from celery import shared_task
from celery.signals import worker_shutting_down

from .services import run_feed_blocking

# Set when the worker begins a warm shutdown, so a running feed releases its
# leases and returns instead of holding the shutdown up.
_shutting_down = threading.Event()


@worker_shutting_down.connect
def _stop_feeds(**kwargs) -> None:
    _shutting_down.set()


@shared_task(name="feeds.tasks.run_feed", ignore_result=True)
def run_feed() -> int:
    """Beat sends this every few seconds; it returns at once unless a symbol lacks a producer."""
    return run_feed_blocking(stop=_shutting_down).ticks
