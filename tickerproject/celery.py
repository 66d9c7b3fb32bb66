"""The Celery app; Django settings prefixed CELERY_ configure it."""

import logging
import os

from celery import Celery
from celery.signals import (
    beat_init,
    celeryd_after_setup,
    celeryd_init,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_init,
)

from telemetry import logs

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tickerproject.settings")

app = Celery("tickerproject")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


logger = logging.getLogger(__name__)


# Celery's own logging (a handler of its own for task loggers, its format) is not set up
# at all when this signal has a receiver: the worker and beat log through Django's
# LOGGING, as every other process does (LOG_FORMAT=json: one JSON object per line).
@setup_logging.connect
def _use_django_logging(**kwargs) -> None:
    """Called when a worker or beat would configure logging: Django's configuration."""
    from django.conf import settings
    from django.utils.log import configure_logging

    configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)


@celeryd_init.connect
def _say_through_the_log(**kwargs) -> None:
    """Called as a worker starts: the lines its signal handlers write straight to the
    terminal ("worker: Warm shutdown (MainProcess)", a SIGUSR1 stack dump) are records.

    Celery writes them with os.write, as a signal handler must; telemetry.logs.write_now
    does the same with the formatted record. tests/test_logs_live.py notices if Celery
    stops calling this module-level function.
    """
    from celery.apps import worker

    worker.safe_say = lambda msg, f=None: logs.write_now("celery.apps.worker", msg.strip())


# The launcher starts both with --quiet (their banners are terminal art): their facts, once.
@celeryd_after_setup.connect
def _log_worker_started(sender=None, instance=None, **kwargs) -> None:
    """Called once a worker is set up, before it consumes."""
    tasks = sorted(name for name in app.tasks if not name.startswith("celery."))
    pool = getattr(instance.pool_cls, "__module__", instance.pool_cls)
    logger.info(
        "worker %s: broker %s, concurrency %s (%s), queues %s, tasks %s",
        sender, app.connection_for_write().as_uri(), instance.concurrency,
        str(pool).rsplit(".", 1)[-1], ", ".join(app.amqp.queues), ", ".join(tasks),
    )  # fmt: skip


@beat_init.connect
def _log_beat_started(sender=None, **kwargs) -> None:
    """Called as beat starts its scheduler."""
    logger.info(
        "beat: broker %s, scheduler %s, schedule %s, max interval %s s",
        app.connection_for_write().as_uri(), type(sender.scheduler).__name__,
        sender.schedule_filename, sender.scheduler.max_interval,
    )  # fmt: skip


# Every log line of a task carries its id (telemetry.logs, LOG_FORMAT=json).
@task_prerun.connect
def _task_started(task_id=None, **kwargs) -> None:
    logs.task_id.set(task_id)


@task_postrun.connect
def _task_ended(**kwargs) -> None:
    logs.task_id.set(None)


# The worker's own /metrics, when WORKER_METRICS_PORT is set (docs/operations.md): sent
# once per worker process, as it starts, before it connects to the broker; serving is
# idempotent in telemetry.exposition besides.
@worker_init.connect
def _serve_worker_metrics(**kwargs) -> None:
    from django.conf import settings

    from telemetry.exposition import serve_worker_metrics

    serve_worker_metrics(port=settings.WORKER_METRICS_PORT, addr=settings.WORKER_METRICS_ADDR)
