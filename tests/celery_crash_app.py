"""A Celery app of its own for tests/test_serve_live.py: one slow task, its broker from
CRASH_BROKER_URL. With one pool thread busy on it, the next messages wait delivered but
not acknowledged, which is what makes Celery 5.7 give up on a worker whose broker dies."""

import os
import time

from celery import Celery

app = Celery("crash", broker=os.environ["CRASH_BROKER_URL"])
app.conf.broker_connection_retry_on_startup = True


@app.task
def slow() -> None:
    time.sleep(8)


@app.task
def quick() -> str:
    return "quick-done"
