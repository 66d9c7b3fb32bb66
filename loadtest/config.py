"""What a load test is asked to do; shared by the command, the runner and the clients."""

from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class LoadTestConfig:
    url: str
    origin: str
    clients: int
    symbols_per_client: int
    symbols: tuple[str, ...]
    duration: float
    ramp: float
    processes: int
    tick_rate: float
    batch_ms: int | None = None
    connect_timeout: float = 30.0
    # How long closing all connections at the end may take before they are aborted.
    close_timeout: float = 5.0
    thresholds: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.clients < 1:
            raise ValueError("clients must be at least 1")
        if self.processes < 1:
            raise ValueError("processes must be at least 1")
        if self.symbols_per_client < 0:
            raise ValueError("symbols-per-client must be 0 (idle clients) or more")
        if self.symbols_per_client > len(self.symbols):
            raise ValueError(
                f"symbols-per-client {self.symbols_per_client} is more than the "
                f"{len(self.symbols)} symbols in the set"
            )
        if self.duration <= 0:
            raise ValueError("duration must be positive")
        if self.ramp < 0:
            raise ValueError("ramp must be 0 or more")
        if self.batch_ms is not None and not 0 <= self.batch_ms <= 1000:
            raise ValueError("batch-ms must be between 0 and 1000")

    @property
    def expected_ticks_per_s(self) -> float:
        return self.clients * self.symbols_per_client * self.tick_rate

    def client_symbols(self, index: int) -> list[str]:
        """The K symbols of client ``index``: consecutive runs, so every symbol gets
        the same number of subscribers, give or take one."""
        n = len(self.symbols)
        start = (index * self.symbols_per_client) % n if n else 0
        return [self.symbols[(start + j) % n] for j in range(self.symbols_per_client)]

    def worker_clients(self, worker: int) -> list[int]:
        """Client indexes run by process ``worker``: interleaved, so the ramp loads
        every process at the same pace."""
        return list(range(worker, self.clients, self.processes))

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["symbols"] = list(self.symbols)
        out["expected_ticks_per_s"] = self.expected_ticks_per_s
        return out


def origin_for(url: str) -> str:
    """The Origin a browser on the same host would send: ws -> http, wss -> https."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
    return f"{scheme}://{parts.netloc}"
