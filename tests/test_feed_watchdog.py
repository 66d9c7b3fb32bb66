"""The feed's progress watchdog over a real stack (issue 22).

A worker whose channel layer (the fan-out of every publish) goes through a TCP proxy
that the test freezes (SIGSTOP): its publishes hang in the fan-out while its leases, on
a direct connection, could be renewed for ever. Nothing reaches a client, yet no other
producer would take over. The watchdog must notice within FEED_STALL_SECONDS: log it
once, count it in /metrics, make /api/health/ say degraded, and give the leases up so
that another worker takes the symbols.
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import redis
from django.conf import settings

from tests.realstack import BASE_DIR, RealStack

pytestmark = pytest.mark.e2e

SYMBOL = "BTC-USD"


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def test_a_stuck_publisher_gives_its_leases_up_and_another_worker_takes_over(tmp_path):
    r = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)
    redis_port = urllib.parse.urlsplit(settings.REDIS_URL).port or 6379
    proxy = subprocess.Popen(
        [sys.executable, str(BASE_DIR / "tests" / "tcp_proxy.py"), str(redis_port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    proxy_port = int(proxy.stdout.readline())
    prom = tmp_path / "prom"
    prom.mkdir()
    stack = RealStack(
        tmp_path,
        PROMETHEUS_MULTIPROC_DIR=str(prom),
        TICK_RATE="5",
        FEED_LEASE_SECONDS="2",
        FEED_STALL_SECONDS="2",
    )
    lease = f"{stack.prefix}:lease:{SYMBOL}"
    try:
        stack.prepare_database()
        stack.start_web(wait=False)
        stack._spawn(
            "stuck",
            stack.procfile_argv("worker"),
            extra_env={
                "WORKER_NAME": f"stuck-{stack.prefix}",
                "CHANNEL_LAYER_REDIS_URL": f"redis://127.0.0.1:{proxy_port}/0",
            },
        )
        stack.wait_for_web()

        def healthy():
            status, body = get(f"{stack.http_url}/api/health/")
            return status == 200 and json.loads(body)

        wait_for(healthy, 90, "a healthy stack")
        stuck_token = r.get(lease)
        assert stuck_token
        os.kill(proxy.pid, signal.SIGSTOP)
        frozen_at = time.monotonic()

        def degraded():
            status, body = get(f"{stack.http_url}/api/health/")
            report = json.loads(body)
            problems = [p for p in report.get("problems", []) if "is stalled" in p]
            return status == 503 and problems

        problems = wait_for(degraded, 30, "health to say the feed is stalled")
        noticed = time.monotonic() - frozen_at
        log = stack.log("stuck")
        assert log.count("nothing published for") == 1, log[-3000:]
        assert r.get(lease) != stuck_token  # given up, not renewed
        _, metrics = get(f"{stack.http_url}/metrics")
        stalls = [
            float(line.split()[-1])
            for line in metrics.decode().splitlines()
            if line.startswith("ticker_feed_stalls_total")
        ]
        assert stalls and stalls[0] >= 1
        assert b'ticker_feed_faults_total{kind="timeout",step="publish"}' in metrics
        # Another worker, on a Redis that answers, takes the symbols over.
        stack.start_worker("rescuer")

        def taken_over():
            owner = r.get(lease)
            status = r.hgetall(f"{stack.prefix}:source:{SYMBOL}")
            return (
                owner not in (None, stuck_token)
                and status.get(b"token") == owner
                and status.get(b"state") == b"up"
                and healthy()
            )

        wait_for(taken_over, 90, "another worker to take over")
        took_over = time.monotonic() - frozen_at
    finally:
        os.kill(proxy.pid, signal.SIGCONT)
        stack.stop_all()
        proxy.terminate()
        proxy.wait(timeout=10)
        proxy.stdout.close()
    print(
        f"\nstalled feed noticed after {noticed:.1f} s ({len(problems)} symbols stalled); "
        f"another worker took over {took_over:.1f} s after the freeze (its start-up included)"
    )
