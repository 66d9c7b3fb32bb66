"""What a load test is asked to do; shared by the command, the runner and the clients."""

from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

MODES = ("all", "latest")
STREAMS = ("ticks", "book")
MAX_BOOK_DEPTH = 50


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
    # Subscribe options (docs/protocol.md): "all" (every tick) or "latest" (the newest
    # tick of a symbol, older ones conflated when the connection is behind), an optional
    # per-symbol rate cap for "latest", and the snapshot size (None: the server's default).
    mode: str = "all"
    max_rate: float | None = None
    snapshot: int | None = None
    # What each client subscribes to (issue 21): ticks and/or the book, at ``depth``
    # levels per side (None: the server's default, 10).
    streams: tuple[str, ...] = ("ticks",)
    depth: int | None = None
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
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if not self.streams or any(s not in STREAMS for s in self.streams):
            raise ValueError(f"streams must be some of {', '.join(STREAMS)}")
        if self.depth is not None:
            if "book" not in self.streams:
                raise ValueError("depth needs the book stream")
            if not 1 <= self.depth <= MAX_BOOK_DEPTH:
                raise ValueError(f"depth must be between 1 and {MAX_BOOK_DEPTH}")
        if self.max_rate is not None:
            if self.mode != "latest" and "book" not in self.streams:
                raise ValueError("max-rate needs mode latest or the book stream")
            if not 0 < self.max_rate <= 1000:
                raise ValueError("max-rate must be above 0 and at most 1000")
        if self.snapshot is not None and not 0 <= self.snapshot <= 300:
            raise ValueError("snapshot must be between 0 and 300")

    @property
    def stream_rate(self) -> float:
        """Ticks/s one (client, symbol) stream should get: the tick rate, or the
        ``max_rate`` cap of mode latest when it is lower."""
        if self.max_rate is not None and self.mode == "latest" and self.max_rate < self.tick_rate:
            return self.max_rate
        return self.tick_rate

    @property
    def expected_ticks_per_s(self) -> float:
        if "ticks" not in self.streams:
            return 0.0
        return self.clients * self.symbols_per_client * self.stream_rate

    def subscribe_options(self) -> dict[str, Any]:
        """The optional fields of every ``subscribe`` command, as given."""
        options: dict[str, Any] = {}
        if self.batch_ms is not None:
            options["batch_ms"] = self.batch_ms
        if self.mode != "all":
            options["mode"] = self.mode
        if self.max_rate is not None:
            options["max_rate"] = self.max_rate
        if self.snapshot is not None:
            options["snapshot"] = self.snapshot
        if self.streams != ("ticks",):
            options["streams"] = list(self.streams)
        if self.depth is not None:
            options["depth"] = self.depth
        return options

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
