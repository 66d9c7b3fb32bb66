"""The /metrics text: every process's metrics, plus figures read at scrape time; and the
Celery worker's own metrics endpoint.

With PROMETHEUS_MULTIPROC_DIR set, the scrape reads every process's files there
(prometheus_client's MultiProcessCollector); without it, this process's registry.
Collectors registered with ``register_scrape_collector`` run in the scraping process
at scrape time: markets registers one that reads each symbol's feed status from
Redis, the one shared truth, so it is not summed over processes.

A worker that shares no PROMETHEUS_MULTIPROC_DIR with a web process (its own
container under docker-compose) serves its figures itself: ``serve_worker_metrics``
starts prometheus_client's own HTTP server on WORKER_METRICS_ADDR:WORKER_METRICS_PORT,
once per process, from the worker's startup (tickerproject.celery). It serves the
same registry a web process would (the multiprocess directory, when one is set), but
no scrape-time collectors: the feed status is the web's to report.
"""

import glob
import logging
import os
import re
import threading

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    start_http_server,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

_scrape_collectors: list[Collector] = []
_LIVE_FILE = re.compile(r"gauge_live\w+_(\d+)\.db$")


def register_scrape_collector(collector: Collector) -> None:
    """Add ``collector`` to every scrape (once per process)."""
    if collector not in _scrape_collectors:
        _scrape_collectors.append(collector)


def multiproc_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def forget_dead_processes(path: str) -> list[int]:
    """Drop the live-gauge files of processes that have died on this host.

    uvicorn restarts a crashed worker without a hook like gunicorn's child_exit, so the
    scrape does the bookkeeping: a ``livesum`` gauge of a dead pid would count forever.
    """
    dead = []
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        match = _LIVE_FILE.search(name)
        if match and not _alive(int(match.group(1))):
            dead.append(int(match.group(1)))
    for pid in set(dead):
        mark_process_dead(pid, path)
    return sorted(set(dead))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_collector() -> Collector:
    """Every process's metrics (the multiprocess directory), or else this process's."""
    path = multiproc_dir()
    return _Processes(path) if path else _Default()


def render(extra: list[Collector] = ()) -> tuple[bytes, str]:
    """The exposition body and its content type; ``extra`` collectors for this scrape."""
    registry = CollectorRegistry()
    for collector in [process_collector(), *_scrape_collectors, *extra]:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Default(Collector):
    """This process's default registry, inside a registry of our own."""

    def collect(self):
        yield from REGISTRY.collect()


class _Processes(Collector):
    """Every process's files in the multiprocess directory, read at each scrape."""

    def __init__(self, path: str) -> None:
        self.path = path

    def collect(self):
        forget_dead_processes(self.path)
        yield from MultiProcessCollector(None, path=self.path).collect()


_worker_server_lock = threading.Lock()
_worker_server = None  # (server, thread) once started in this process


def serve_worker_metrics(*, port: int, addr: str) -> tuple[str, int] | None:
    """Serve this process's metrics on ``addr:port`` (prometheus_client's HTTP server).

    At most once per process: later calls return the address already served. Port 0
    (WORKER_METRICS_PORT unset) serves nothing. A port that cannot be bound is logged
    and the worker carries on without it (Prometheus' ``up`` shows the target down).
    Returns the address served, or None.
    """
    global _worker_server
    if not port:
        return None
    from . import metrics  # noqa: F401  every metric defined, counted or not yet

    with _worker_server_lock:
        if _worker_server is None:
            registry = CollectorRegistry()
            registry.register(process_collector())
            try:
                _worker_server = start_http_server(port, addr=addr, registry=registry)
            except OSError as exc:
                logger.error("worker metrics: cannot serve on %s:%d: %s", addr, port, exc)
                return None
            mode = f"multiprocess, {multiproc_dir()}" if multiproc_dir() else "this process"
            logger.info("worker metrics served on http://%s:%d/metrics (%s)", addr, port, mode)
        server = _worker_server[0]
        return server.server_address[0], server.server_address[1]


def stop_worker_metrics() -> None:
    """Stop serving (tests; a worker's server lives as long as its process)."""
    global _worker_server
    with _worker_server_lock:
        if _worker_server is not None:
            server, thread = _worker_server
            server.shutdown()
            server.server_close()
            thread.join(5)
            _worker_server = None
