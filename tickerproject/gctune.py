"""Garbage-collector settings for a web process: no 90 ms pause in the middle of a tick.

CPython's full (generation 2) collection walks every tracked object. A web process
holding 1000 connections made one every ~5 s under the target load, each 80-93 ms on
the benchmark machine, and every tick in flight waited for it: the p99 from tick to
client went from ~50 ms to 105-132 ms (benchmarks/RESULTS.md, round 9). Those
collections found nothing to collect; they were started because objects that live for
a frame or two (ASGI messages, coroutines) survived a young collection by being in
flight at the time, and promoted objects count towards the next full collection.

``tune()`` does the two things Python's documentation and Instagram's write-up
suggest for a long-running server:

- ``gc.freeze()`` once the application is loaded: Django's and the libraries' objects
  (about 125,000) are never walked again;
- a higher first threshold (``GC_THRESHOLDS``, default ``10000,10,10`` against
  Python's ``700,10,10``), so young collections run 14 times less often, promote
  14 times fewer in-flight objects, and full collections become rare.

Cyclic garbage is still collected; only the timing changes. ``GC_THRESHOLDS=default``
leaves Python's own.
"""

import gc
import logging

from django.conf import settings

logger = logging.getLogger(__name__)


def tune() -> None:
    """Called once per web process, after the ASGI application is built."""
    thresholds = settings.GC_THRESHOLDS
    if thresholds is None:
        return
    gc.collect()  # what startup left behind is freed, not frozen
    gc.freeze()
    gc.set_threshold(*thresholds)
    logger.debug("gc: %d objects frozen, thresholds %s", gc.get_freeze_count(), thresholds)


def parse_thresholds(text: str) -> tuple[int, int, int] | None:
    """``GC_THRESHOLDS``: three positive integers, or ``default`` for Python's own."""
    if text.strip().lower() == "default":
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise ValueError(
            f"GC_THRESHOLDS={text!r} wants three positive integers (e.g. 10000,10,10) or 'default'"
        )
    return values  # type: ignore[return-value]
