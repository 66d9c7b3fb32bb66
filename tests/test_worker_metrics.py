"""The Celery worker's own metrics endpoint (WORKER_METRICS_PORT; docs/operations.md).

Under docker-compose the worker runs in a container of its own and shares no
PROMETHEUS_MULTIPROC_DIR with web, so it serves its figures itself with
prometheus_client's HTTP server, started once per worker process from worker_init
(tickerproject/celery.py). Here:

- in this process: off without a port, served once per process, and its registry;
- a real worker (the Procfile's command, tests/realstack.py) is scraped over HTTP until
  its feed has published: once with no multiprocess directory (compose's shape) and once
  with a directory of its own (prometheus_client's MultiProcessCollector), whose files
  a web process sharing it (make run's shape) would sum.
"""

import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from telemetry.exposition import serve_worker_metrics, stop_worker_metrics
from tests.realstack import RealStack
from tickerproject.stack import free_port


def scrape(port: int, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as response:
        assert response.status == 200
        return response.read().decode()


def samples(text: str, name: str) -> dict[tuple, float]:
    """``name``'s samples by their label values."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


# --- in this process


def test_no_port_serves_nothing():
    assert serve_worker_metrics(port=0, addr="127.0.0.1") is None


def test_served_once_per_process_with_every_metric_defined():
    port = free_port()
    try:
        assert serve_worker_metrics(port=port, addr="127.0.0.1") == ("127.0.0.1", port)
        # A second call (a second signal, another thread) serves nothing new.
        assert serve_worker_metrics(port=free_port(), addr="127.0.0.1") == ("127.0.0.1", port)
        text = scrape(port)
        assert "# TYPE ticker_ticks_published_total counter" in text
        assert 'ticker_lease_changes_total{event="taken"}' in text
        # Only this process's registry: the feed status is the web's to read from Redis.
        assert "ticker_feed_last_tick_age_seconds" not in text
    finally:
        stop_worker_metrics()
    with pytest.raises(urllib.error.URLError):
        scrape(port, timeout=2)


# --- a real worker


def worker_stack(workdir: Path, multiproc_dir: Path | None) -> tuple[RealStack, int]:
    port = free_port()
    stack = RealStack(workdir, WORKER_METRICS_PORT=str(port), TICK_RATE="4")
    stack.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    stack.env.pop("WORKER_METRICS_ADDR", None)  # the default: loopback
    if multiproc_dir is not None:
        multiproc_dir.mkdir()
        stack.env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc_dir)
    return stack, port


def wait_for(predicate, timeout: float, interval: float = 0.5):
    """(seconds taken, result) once ``predicate()`` is truthy, else (None, None)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        result = predicate()
        if result:
            return time.monotonic() - started, result
        time.sleep(interval)
    return None, None


def published_by_worker(port: int) -> tuple[float, str] | None:
    try:
        text = scrape(port)
    except OSError:
        return None  # not listening yet
    total = sum(samples(text, "ticker_ticks_published_total").values())
    return (total, text) if total > 0 else None


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["single", "multiprocess"])
def test_a_real_worker_serves_its_published_ticks(tmp_path, mode):
    prom_dir = tmp_path / "prom-worker" if mode == "multiprocess" else None
    stack, port = worker_stack(tmp_path, prom_dir)
    stack.prepare_database()
    try:
        worker = stack.start_worker()
        elapsed, found = wait_for(lambda: published_by_worker(port), 90, interval=0.5)
        log = stack.log("worker")
        assert found, f"no published ticks on :{port}\n{log[-3000:]}"
        assert worker.poll() is None
        total, text = found
        by_symbol = samples(text, "ticker_ticks_published_total")
        assert all(dict(k)["source"] == "simulated" for k in by_symbol), by_symbol
        taken = samples(text, "ticker_lease_changes_total")[(("event", "taken"),)]
        assert taken >= 1
        # Started once, from the worker's own startup, on loopback (the default address).
        assert log.count("worker metrics served on") == 1, log[-3000:]
        assert f"http://127.0.0.1:{port}/metrics" in log
        print(
            f"\n{mode}: worker :{port} served {total:.0f} published ticks of "
            f"{len(by_symbol)} symbols and {taken:.0f} leases taken after {elapsed:.1f} s"
        )
        if prom_dir is not None:
            assert "multiprocess" in log
            # The files a web process sharing the directory sums (make run's shape).
            files = sorted(p.name for p in prom_dir.iterdir())
            assert f"counter_{worker.pid}.db" in files, files
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=str(prom_dir))
            summed = sum(
                s.value
                for family in registry.collect()
                for s in family.samples
                if s.name == "ticker_ticks_published_total"
            )
            assert summed > 0
    finally:
        stack.stop_all()
    # Nothing serves once the worker is gone.
    assert worker.poll() is not None
    with pytest.raises(urllib.error.URLError):
        scrape(port, timeout=2)
