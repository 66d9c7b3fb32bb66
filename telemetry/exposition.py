"""The /metrics text: every process's metrics, plus figures read at scrape time.

With PROMETHEUS_MULTIPROC_DIR set, the scrape reads every process's files there
(prometheus_client's MultiProcessCollector); without it, this process's registry.
Collectors registered with ``register_scrape_collector`` run in the scraping process
at scrape time: markets registers one that reads each symbol's feed status from
Redis, the one shared truth, so it is not summed over processes.
"""

import glob
import os
import re

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

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


def render(extra: list[Collector] = ()) -> tuple[bytes, str]:
    """The exposition body and its content type; ``extra`` collectors for this scrape."""
    path = multiproc_dir()
    if path:
        forget_dead_processes(path)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=path)
    else:
        registry = CollectorRegistry()
        registry.register(_Default())
    for collector in [*_scrape_collectors, *extra]:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Default(Collector):
    """This process's default registry, inside a registry of our own."""

    def collect(self):
        yield from REGISTRY.collect()
