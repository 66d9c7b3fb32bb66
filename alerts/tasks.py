"""The alert evaluator inside Celery workers: one loop per worker process, always running.

Like the feed (feeds.tasks), the loop starts when the worker is ready, in a thread of
its own (it holds no pool slot), and beat sends ``run_evaluator`` every
ALERT_SUPERVISE_SECONDS to start it where it is not running. Every worker runs one; the
evaluator lease (alerts.evaluator.EvaluatorLease) lets one judge ticks while the others
stand by, so a dead worker's role moves to another within ALERT_EVALUATOR_LEASE_SECONDS,
and a warm shutdown releases the lease at once.

Beat also sends ``prune_alert_history`` every ALERT_HISTORY_PRUNE_SECONDS: the
fired-alert history's retention (alerts.retention).

Why a long-running loop rather than a beat task every second: XREAD BLOCK wakes on the
crossing tick itself, so an alert reaches the dashboard milliseconds after the tick
instead of up to a beat period (plus a task's dispatch) later, and the cursor state
stays in one place.
"""

import logging
import socket
import threading

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

from .evaluator import run_evaluator_blocking
from .retention import prune_history

logger = logging.getLogger(__name__)

_stopping = threading.Event()
_lock = threading.Lock()
_thread: threading.Thread | None = None
RESTART_DELAY_SECONDS = 1.0
SHUTDOWN_WAIT_SECONDS = 5.0


def _run_forever(worker: str) -> None:
    while not _stopping.is_set():
        try:
            run_evaluator_blocking(_stopping, worker=worker)
        except Exception:
            logger.exception("alert evaluator failed; starting it again")
        _stopping.wait(RESTART_DELAY_SECONDS)


def ensure_evaluator_running(worker: str | None = None) -> bool:
    """Start this process's evaluator loop unless it runs already; True if started."""
    global _thread
    with _lock:
        if _stopping.is_set() or (_thread is not None and _thread.is_alive()):
            return False
        _thread = threading.Thread(
            target=_run_forever,
            args=(worker or socket.gethostname(),),
            name="ticker-alerts",
            daemon=True,
        )
        _thread.start()
        return True


@worker_ready.connect
def _start_evaluator(sender=None, **kwargs) -> None:
    ensure_evaluator_running(getattr(sender, "hostname", None))


@worker_shutting_down.connect
def _stop_evaluator(**kwargs) -> None:
    _stopping.set()


@worker_shutdown.connect
def _wait_for_evaluator(**kwargs) -> None:
    _stopping.set()
    thread = _thread
    if thread is not None:
        thread.join(SHUTDOWN_WAIT_SECONDS)


@shared_task(bind=True, name="alerts.tasks.run_evaluator", ignore_result=True)
def run_evaluator(self) -> bool:
    """Beat sends this every ALERT_SUPERVISE_SECONDS: make sure this worker's loop runs."""
    return ensure_evaluator_running(self.request.hostname)


@shared_task(name="alerts.tasks.prune_alert_history", ignore_result=True)
def prune_alert_history() -> int:
    """Beat sends this every ALERT_HISTORY_PRUNE_SECONDS: the history's retention."""
    deleted = prune_history()
    if deleted:
        logger.info("alerts: pruned %d fired alert(s) from the history", deleted)
    return deleted
