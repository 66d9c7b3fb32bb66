"""One object per running event loop: one per web process in production, one per test."""

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    """Calling it returns the running loop's instance of ``factory()``, made on first use."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self.factory = factory
        self.instances: dict[asyncio.AbstractEventLoop, T] = {}

    def __call__(self) -> T:
        loop = asyncio.get_running_loop()
        instance = self.instances.get(loop)
        if instance is None:
            # Forget the instances of closed loops (tests run one loop per test).
            for old in [lp for lp in self.instances if lp.is_closed()]:
                del self.instances[old]
            instance = self.instances[loop] = self.factory()
        return instance

    def pop(self) -> T | None:
        """Forget the running loop's instance and return it, if it had one."""
        return self.instances.pop(asyncio.get_running_loop(), None)
