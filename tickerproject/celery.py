"""The Celery app; Django settings prefixed CELERY_ configure it."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_init

from telemetry import logs

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tickerproject.settings")

app = Celery("tickerproject")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


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
