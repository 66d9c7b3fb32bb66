"""What the client yields: typed ticks and the events around them (docs/protocol.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .book import LocalBook

Mode = Literal["all", "latest"]


@dataclass(frozen=True, slots=True)
class Tick:
    """One price update of a symbol.

    ``seq`` numbers the symbol's ticks 1, 2, 3, ... on the server; ``ts`` is the tick's
    creation time in epoch milliseconds (UTC). ``skipped`` is only non-zero in ``latest``
    mode: this tick replaced that many older ones (an announced jump, not a loss).
    """

    symbol: str
    seq: int
    ts: int
    price: float
    bid: float
    ask: float
    size: float
    skipped: int = 0

    @property
    def time(self) -> datetime:
        """``ts`` as an aware UTC datetime."""
        return datetime.fromtimestamp(self.ts / 1000, tz=UTC)

    @classmethod
    def from_message(cls, msg: dict[str, Any]) -> Tick:
        """A tick from its wire form (a ``tick`` message or an entry of ``ticks``)."""
        return cls(
            symbol=msg["symbol"],
            seq=int(msg["seq"]),
            ts=int(msg["ts"]),
            price=float(msg["price"]),
            bid=float(msg["bid"]),
            ask=float(msg["ask"]),
            size=float(msg["size"]),
            skipped=int(msg.get("skipped", 0)),
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Recent history of a symbol, sent on a fresh subscribe and after a :class:`Reset`.

    The first live tick that follows has ``seq`` = the last snapshot tick's ``seq`` + 1.
    Snapshot ticks are history: :meth:`TickerClient.ticks` does not yield them one by one.
    """

    symbol: str
    epoch: str
    ticks: tuple[Tick, ...]


@dataclass(frozen=True, slots=True)
class Reset:
    """The server could not continue this symbol's series (``history_truncated`` or
    ``epoch_changed``): drop what you hold for it; a :class:`Snapshot` follows at once."""

    symbol: str
    reason: str


@dataclass(frozen=True, slots=True)
class Gap:
    """Ticks ``expected`` .. ``got - 1`` of ``symbol`` never arrived.

    The server promises none in ``all`` mode (it fills holes from history), so this is a
    sign of a server bug; it is counted in :attr:`ClientStats.gaps` and yielded so that a
    program can decide (e.g. refetch ``GET /api/symbols/{symbol}/ticks?after_seq=``).
    """

    symbol: str
    expected: int
    got: int


@dataclass(frozen=True, slots=True)
class BookChanged:
    """A subscribed book changed: ``book`` (the client's live :class:`LocalBook`) now
    holds ``seq``; ``snapshot`` is True for a fresh book (subscribe, a new epoch, a
    resync). Every message was checked (``prev_seq`` and checksum) before this."""

    symbol: str
    seq: int
    snapshot: bool
    book: LocalBook = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class BookResync:
    """A book message did not check out (``reason``: ``prev_seq`` or ``checksum``): the
    client dropped its book and subscribed to it again; a fresh snapshot follows."""

    symbol: str
    reason: str
    expected: int
    got: int


@dataclass(frozen=True, slots=True)
class Connected:
    """A connection is open (``reconnects`` = 0 for the first one)."""

    url: str
    reconnects: int


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection closed; the client reconnects after ``retry_in`` seconds.

    ``code`` is the server's close code (None when there was no close frame: the
    connection dropped, or could not be opened).
    """

    code: int | None
    reason: str
    retry_in: float


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    """The server dropped subscriptions on its own (``reason``, e.g. ``forbidden``).

    The client forgets these symbols: they are not asked for again on reconnect.
    """

    symbols: tuple[str, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """Symbols the server refused on subscribe (``unknown_symbol``, ``forbidden``,
    ``too_many_symbols``, ``bad_request``); the client forgets them."""

    symbols: tuple[str, ...]
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class ServerError:
    """Any other ``error`` message (e.g. ``rate_limited``); the connection stays open."""

    code: str
    message: str
    id: int | str | None
    symbols: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Message:
    """A message of a type this client does not know (from a newer server)."""

    type: str
    raw: dict[str, Any] = field(compare=False)


Event = (
    Tick
    | Snapshot
    | BookChanged
    | BookResync
    | Reset
    | Gap
    | Connected
    | Disconnected
    | Unsubscribed
    | Rejected
    | ServerError
    | Message
)


@dataclass(frozen=True, slots=True)
class SubscribeResult:
    """The server's answer to :meth:`TickerClient.subscribe`: which symbols it
    subscribed, and which it refused, with the error code of each."""

    subscribed: tuple[str, ...]
    refused: dict[str, str]


@dataclass(slots=True)
class ClientStats:
    """Counters since the client started."""

    frames: int = 0  # frames received
    ticks: int = 0  # ticks yielded (snapshot ticks not counted)
    duplicates: int = 0  # ticks received again and dropped (never yielded)
    gaps: int = 0  # holes in a symbol's seq (never expected in "all" mode)
    skipped: int = 0  # ticks conflated away in "latest" mode, as the server announced
    resets: int = 0
    reconnects: int = 0
    book_snapshots: int = 0  # book messages applied
    book_updates: int = 0  # book_update messages applied
    book_conflated: int = 0  # producer updates merged into those (seq - prev_seq - 1)
    prev_seq_breaks: int = 0  # book_update whose prev_seq was not the book's seq
    checksum_failures: int = 0  # book messages whose checksum did not match the book
    book_resyncs: int = 0  # books dropped and subscribed again after one of those
    close_codes: dict[int | None, int] = field(default_factory=dict)
