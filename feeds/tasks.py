"""The feed inside Celery workers: one feed loop per worker process, always running.

The loop starts when the worker is ready (``worker_ready``) in a thread of its own, so
it holds no pool slot, and runs as a standby when every symbol has a producer: it polls
for symbols without one every FEED_TAKEOVER_POLL_SECONDS, which is what bounds failover
(docs/feeds.md, "Failover"). Beat still sends ``run_feed`` every FEED_SUPERVISE_SECONDS:
it starts the loop in a worker where it is not running (a backstop; the loop restarts
itself after an error). A warm shutdown stops the loop, which releases its leases, so
another worker takes over at once instead of after the TTL.
"""

import asyncio
import logging
import socket
import threading

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

from .services import run_feed_blocking

logger = logging.getLogger(__name__)

# Set when the worker begins a warm shutdown: the feed releases its leases and returns.
_shutting_down = threading.Event()
_lock = threading.Lock()
_thread: threading.Thread | None = None
# A feed loop that raised is started again after this long.
RESTART_DELAY_SECONDS = 1.0
# How long a warm shutdown waits for the feed to release its leases.
SHUTDOWN_WAIT_SECONDS = 5.0


def _run_forever(worker: str) -> None:
    while not _shutting_down.is_set():
        try:
            run_feed_blocking(stop=_shutting_down, standby=True, worker=worker)
        except (Exception, asyncio.CancelledError):
            # A CancelledError from the loop's inside is no reason to end this thread:
            # nothing here cancels it, and past it beat's check is 5 s away (issue 22).
            logger.exception("feed loop failed; starting it again")
        _shutting_down.wait(RESTART_DELAY_SECONDS)


def ensure_feed_running(worker: str | None = None) -> bool:
    """Start this process's feed loop unless it runs already; True if it was started."""
    global _thread
    with _lock:
        if _shutting_down.is_set() or (_thread is not None and _thread.is_alive()):
            return False
        _thread = threading.Thread(
            target=_run_forever,
            args=(worker or socket.gethostname(),),
            name="ticker-feed",
            daemon=True,
        )
        _thread.start()
        return True


@worker_ready.connect
def _start_feed(sender=None, **kwargs) -> None:
    ensure_feed_running(getattr(sender, "hostname", None))


@worker_shutting_down.connect
def _stop_feeds(**kwargs) -> None:
    _shutting_down.set()


@worker_shutdown.connect
def _wait_for_feed(**kwargs) -> None:
    _shutting_down.set()
    thread = _thread
    if thread is not None:
        thread.join(SHUTDOWN_WAIT_SECONDS)


@shared_task(bind=True, name="feeds.tasks.run_feed", ignore_result=True)
def run_feed(self) -> bool:
    """Beat sends this every FEED_SUPERVISE_SECONDS: make sure this worker's feed runs."""
    return ensure_feed_running(self.request.hostname)
