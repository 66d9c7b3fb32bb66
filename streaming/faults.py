"""Faults that repeat are logged once, then counted, never once per tick."""

import logging
from collections import Counter


class FaultLog:
    """Logs the first fault of each kind with its traceback, then every 10x-th with a count."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.counts: Counter[str] = Counter()

    def report(
        self, kind: str, message: str, *args: object, exc: BaseException | None = None
    ) -> None:
        """Called with each occurrence of a fault ``kind``; logs 1st, 10th, 100th, ..."""
        self.counts[kind] += 1
        n = self.counts[kind]
        if n == 1:
            self.logger.error(message, *args, exc_info=exc)
        elif _is_power_of_ten(n):
            self.logger.error(message + " (%d times so far)", *args, n)

    def total(self) -> int:
        return sum(self.counts.values())


def _is_power_of_ten(n: int) -> bool:
    while n % 10 == 0:
        n //= 10
    return n == 1
