"""tickerproject.serve's worker supervision against a real Celery worker and a real Redis
that the test kills (SIGKILL) and starts again, with messages delivered but not yet
acknowledged: Celery 5.7 stops such a worker ("Unrecoverable error"), and the launcher
must start it again, in the same process."""

import os
import signal
import subprocess
import sys
import time

import pytest
from celery import Celery

from tests.realstack import BASE_DIR
from tests.test_e2e_delivery import OwnRedis
from tickerproject import serve

pytestmark = pytest.mark.e2e

WORKER = (
    "import sys; from tickerproject import serve; "
    "serve.run_worker(['celery', '-A', 'tests.celery_crash_app', 'worker', '--pool', "
    "'threads', '--concurrency', '1', '--loglevel', 'INFO', '--without-gossip', "
    "'--without-mingle', '--without-heartbeat'], again=[sys.executable, '-c', {code!r}])"
)


def wait_for_log(path, text: str, count: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        log = path.read_text(errors="replace")
        if log.count(text) >= count:
            return log
        if time.monotonic() > deadline:
            raise AssertionError(f"not {count} x {text!r} within {timeout} s:\n{log[-4000:]}")
        time.sleep(0.1)


def test_a_worker_celery_gives_up_on_when_its_redis_dies_is_started_again(tmp_path):
    redis = OwnRedis(tmp_path)
    code = WORKER.format(code="")  # the image it execs runs the same line (once more)
    code = WORKER.format(code=code)
    log_path = tmp_path / "worker.log"
    env = {**os.environ, "CRASH_BROKER_URL": redis.url, "PYTHONPATH": str(BASE_DIR)}
    with open(log_path, "w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-c", code], cwd=BASE_DIR, env=env, stdout=log, stderr=log
        )
    started = time.monotonic()
    client = Celery("crash", broker=redis.url)
    try:
        wait_for_log(log_path, " ready.", 1, 60)
        # Past the start-up window, or a failure counts as a failed start.
        time.sleep(max(0.0, serve.RESTART_AFTER_SECONDS + 0.5 - (time.monotonic() - started)))
        for _ in range(3):
            client.send_task("tests.celery_crash_app.slow")
        wait_for_log(log_path, "] received", 2, 30)  # one runs, the next waits unacked
        redis.kill()
        time.sleep(1)
        redis.restart()
        # Whichever way Celery takes (it gives the worker up, and the launcher starts it
        # again; or, seldom, its consumer reconnects), the same process runs tasks again.
        client.send_task("tests.celery_crash_app.quick")
        log = wait_for_log(log_path, "'quick-done'", 1, 90)
        assert worker.poll() is None  # the same process (exec, not a child)
        gave_up = "Unrecoverable error" in log
        print(f"\nCelery gave the worker up: {gave_up}")
        if gave_up:
            assert "the Celery worker stopped on an error after" in log
            assert log.count(" ready.") == 2
    finally:
        client.close()
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        redis.kill()
