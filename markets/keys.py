"""Names of every Redis key the market-data side writes, under ``settings.REDIS_PREFIX``."""

from django.conf import settings


def _key(kind: str, symbol: str) -> str:
    return f"{settings.REDIS_PREFIX}:{kind}:{symbol}"


def seq_key(symbol: str) -> str:
    """Counter that numbers a symbol's ticks 1, 2, 3, ... across producer restarts."""
    return _key("seq", symbol)


def history_key(symbol: str) -> str:
    """Stream of recent ticks; entry ids are ``<seq>-0``."""
    return _key("hist", symbol)


def numbered_by_key() -> str:
    """Hash: per seq counter (field: its key), the run_id of the Redis server that last
    numbered a tick with it. Another server (a promoted replica, a restarted one) may lack
    the newest writes: the publish script then starts a new epoch (markets.publishing)."""
    return f"{settings.REDIS_PREFIX}:numbered-by"


def epoch_key(symbol: str) -> str:
    """Identifies one life of the seq counter; it changes when Redis loses the counter."""
    return _key("epoch", symbol)


def lease_key(symbol: str) -> str:
    """Held by the one producer allowed to publish the symbol."""
    return _key("lease", symbol)


def candle_clock_key(symbol: str) -> str:
    """Newest tick time (epoch ms) the symbol's candles have seen; it never goes back."""
    return _key("candleclock", symbol)


def candle_index_key(symbol: str, interval: str) -> str:
    """Sorted set of a symbol's candle bucket starts (epoch ms) at one interval."""
    return f"{_key('candles', symbol)}:{interval}"


def candle_key(symbol: str, interval: str, start_ms: int) -> str:
    """Hash of one OHLCV candle.

    Always ``candle_index_key(...) + ":" + start_ms``: the publish script builds it
    that way from the index key, so change both together.
    """
    return f"{candle_index_key(symbol, interval)}:{start_ms}"


def source_status_key(symbol: str) -> str:
    """Hash of the symbol's source counters and state, written by its producer (feeds/).

    Read by ``manage.py feeds list`` and /api/health/ (markets.quotes.source_status).
    """
    return _key("source", symbol)


def book_key(symbol: str) -> str:
    """Hash of the symbol's current order book (markets.books): its top MAX_DEPTH levels.

    Fields: epoch, seq, ts, bids and asks (JSON arrays of [price, size] strings),
    available ("1"/"0") and reason (why there is no book). Written only by the fenced
    book publish script.
    """
    return _key("book", symbol)


def book_log_key(symbol: str) -> str:
    """Stream of the book's recent updates in its current epoch; entry ids ``<seq>-0``."""
    return _key("booklog", symbol)
