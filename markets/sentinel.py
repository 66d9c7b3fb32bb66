"""Redis Sentinel: the URL of a Sentinel-managed group, and connections that find its primary.

Every Redis URL in ticker's settings (REDIS_URL, each entry of REDIS_SHARD_URLS and
CHANNEL_LAYER_REDIS_URL) is either a plain ``redis://`` URL of one server, or a
Sentinel-managed group::

    redis+sentinel://[[user]:password@]host:port[,host:port...]/master_name[/db][?sentinel_password=...]

the sentinels to ask (port 26379 unless given), the name they monitor the group under,
the database number (0 unless given), the data nodes' user and password, and the
sentinels' own password (``requirepass`` in sentinel.conf). Percent-encode reserved
characters in either password. REDIS_SENTINELS, REDIS_SENTINEL_MASTER, REDIS_PASSWORD and
REDIS_SENTINEL_PASSWORD build one for REDIS_URL (tickerproject/settings.py, README).

Each process logs a failover once, when it first connects to a group's new primary, and
counts it (``ticker_redis_primary_changes_total``). The module has no Django import: the
settings build the channel layer's and Celery's
configuration from these URLs, and markets.redis builds every other client.
"""

import logging
import threading
from dataclasses import dataclass, replace
from urllib.parse import parse_qs, quote, unquote

import redis.asyncio.sentinel as async_sentinel
import redis.sentinel as sync_sentinel
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.connection import Connection as AsyncConnection
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.connection import Connection as SyncConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry as SyncRetry

from telemetry.metrics import REDIS_PRIMARY_CHANGES

logger = logging.getLogger(__name__)

SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379
_QUERY_OPTIONS = {"sentinel_password"}


@dataclass(frozen=True)
class SentinelGroup:
    """What a ``redis+sentinel://`` URL names."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None

    def url(self) -> str:
        """This group as a URL (parse(group.url()) == group)."""
        userinfo = ""
        if self.password is not None or self.username is not None:
            userinfo = quote(self.username or "", safe="")
            if self.password is not None:
                userinfo += ":" + quote(self.password, safe="")
            userinfo += "@"
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.sentinels)
        query = (
            f"?sentinel_password={quote(self.sentinel_password, safe='')}"
            if self.sentinel_password is not None
            else ""
        )
        return f"{SCHEME}://{userinfo}{hosts}/{quote(self.master, safe='')}/{self.db}{query}"


def is_sentinel_url(url: str) -> bool:
    return url.startswith(f"{SCHEME}://")


def _address(text: str, url: str) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:port
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = text.partition(":")
    if not host:
        raise ValueError(f"{_shown(url)}: a sentinel address without a host ({text!r})")
    try:
        number = int(port) if port else DEFAULT_SENTINEL_PORT
    except ValueError:
        raise ValueError(f"{_shown(url)}: sentinel port {port!r} is not a number") from None
    return host, number


def _shown(url: str) -> str:
    """``url`` without its passwords, for an error message."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        url = f"{scheme}://***@{rest.rpartition('@')[2]}"
    return url.split("?", 1)[0]


def parse(url: str) -> SentinelGroup | None:
    """The group a ``redis+sentinel://`` URL names; None for any other URL.

    Raises ValueError, naming the URL without its passwords, when it is malformed.
    """
    if not is_sentinel_url(url):
        return None
    rest = url[len(SCHEME) + 3 :]
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    sentinels = tuple(
        _address(item.strip(), url) for item in hosts.replace(";", ",").split(",") if item.strip()
    )
    if not sentinels:
        raise ValueError(f"{_shown(url)}: no sentinel address (host:port,host:port,...)")
    parts = [unquote(p) for p in path.strip("/").split("/") if p]
    if not parts or len(parts) > 2:
        raise ValueError(f"{_shown(url)}: the path must be /master_name or /master_name/db")
    try:
        db = int(parts[1]) if len(parts) == 2 else 0
    except ValueError:
        raise ValueError(f"{_shown(url)}: database {parts[1]!r} is not a number") from None
    username = password = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    options = parse_qs(query, keep_blank_values=True)
    unknown = set(options) - _QUERY_OPTIONS
    if unknown:
        raise ValueError(f"{_shown(url)}: unknown option(s) {', '.join(sorted(unknown))}")
    sentinel_password = options["sentinel_password"][-1] if "sentinel_password" in options else None
    return SentinelGroup(
        sentinels=sentinels,
        master=parts[0],
        db=db,
        username=username,
        password=password,
        sentinel_password=sentinel_password,
    )


def with_defaults(url: str, *, password: str | None, sentinel_password: str | None) -> str:
    """``url`` with these passwords where a Sentinel URL names none (others unchanged)."""
    group = parse(url)
    if group is None:
        return url
    group = replace(
        group,
        password=group.password if group.password is not None else password,
        sentinel_password=(
            group.sentinel_password if group.sentinel_password is not None else sentinel_password
        ),
    )
    return group.url()


def split_urls(value: str) -> list[str]:
    """A comma-separated list of Redis URLs, where a Sentinel URL's own commas (between its
    sentinels) do not split it: a piece with no ``scheme://`` belongs to the URL before."""
    urls: list[str] = []
    for piece in (p.strip() for p in value.split(",")):
        if not piece:
            continue
        if "://" not in piece and urls and is_sentinel_url(urls[-1]):
            urls[-1] += "," + piece
        else:
            urls.append(piece)
    return urls


def sentinel_kwargs(group: SentinelGroup, *, timeout: float) -> dict:
    """Connection options of the clients that ask the sentinels.

    Their own short timeout: discovery moves on to the next sentinel when one does not
    answer, so a dead sentinel must cost little. (Without these, redis-py's sentinel
    clients of a channels_redis host entry would wait without a timeout.)
    """
    options: dict = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if group.sentinel_password is not None:
        options["password"] = group.sentinel_password
    return options


def retry_policy(retries: int, *, asynchronous: bool = True):
    """Every client's retry of a command that failed on its connection (and of a connect).

    A few quick tries with jittered backoff (20 ms doubling, at most 250 ms apart): they
    carry a command over a dropped idle connection, and over the switch to a new primary
    (a demoted one answers READONLY, which a Sentinel connection turns into a reconnect).
    They do not wait out a failover, which takes seconds: a caller sees the outage (health
    says degraded, the feed loop logs it) and tries again on its own schedule.
    """
    backoff = ExponentialWithJitterBackoff(base=0.02, cap=0.25)
    # Not a TimeoutError: a server that stopped answering would cost each try the whole
    # socket timeout, and the command may have run.
    return (AsyncRetry if asynchronous else SyncRetry)(
        backoff, retries, supported_errors=(RedisConnectionError,)
    )


# Per group (master name), the primary this process last connected to: a failover is
# logged and counted once per process, not once per connection or pool.
_primaries: dict[str, tuple[str, int]] = {}
_primaries_lock = threading.Lock()


def note_primary(group: str, address: tuple[str, int]) -> None:
    """Called when a connection to ``group``'s primary opens: logs and counts a new one."""
    address = (str(address[0]), int(address[1]))
    with _primaries_lock:
        before = _primaries.get(group)
        if before == address:
            return
        _primaries[group] = address
    if before is not None:
        REDIS_PRIMARY_CHANGES.inc()
        logger.warning(
            "Redis primary of %s is now %s:%s (was %s:%s): a failover", group, *address, *before
        )


class PrimaryConnection(async_sentinel.SentinelManagedConnection):
    """A connection to a group's primary that asks the sentinels where it is on every
    connect, a command's reconnect included.

    redis-py asks only in ``connect()``: a command retried after its connection dropped
    reconnects through ``connect_check_health()`` to the host it had, which after a
    failover is the old primary (redis-py#3874, open). That retry would fail until the
    sentinels answer, or, were the old primary back (empty, before they demote it), write
    there. Here every reconnect looks the primary up first.
    """

    async def connect_to(self, address):
        self.host, self.port = address
        await AsyncConnection.connect_check_health(
            self, check_health=self.connection_pool.check_connection, retry_socket_connect=False
        )
        if self.connection_pool.is_master:
            note_primary(self.connection_pool.service_name, address)

    async def connect_check_health(self, check_health=True, retry_socket_connect=True):
        # One try: the command's own retry (retry_policy) repeats it.
        if not self.is_connected:
            await self._connect_retry()


class SyncPrimaryConnection(sync_sentinel.SentinelManagedConnection):
    """PrimaryConnection for the synchronous clients (Celery tasks, the alert evaluator)."""

    def connect_to(self, address):
        self.host, self.port = address
        SyncConnection.connect_check_health(
            self, check_health=self.connection_pool.check_connection, retry_socket_connect=False
        )
        if self.connection_pool.is_master:
            note_primary(self.connection_pool.service_name, address)

    def connect_check_health(self, check_health=True, retry_socket_connect=True):
        if not self._sock:
            self._connect_retry()


class BlockingPrimaryPool(async_sentinel.SentinelConnectionPool, BlockingConnectionPool):
    """A Sentinel pool that, when full, waits for a free connection (markets.redis's pools
    are blocking: a burst waits instead of failing with "Too many connections")."""

    async def aclose(self) -> None:
        """Called when its client closes: the connections to the sentinels close too."""
        try:
            await super().aclose()
        finally:
            await self.sentinel_manager.aclose()


class SyncPrimaryPool(sync_sentinel.SentinelConnectionPool):
    """A Sentinel pool whose close() closes its connections to the sentinels too."""

    def close(self) -> None:
        """Called when its client closes."""
        try:
            super().close()
        finally:
            self.sentinel_manager.close()


def async_pool(group: SentinelGroup, *, sentinel_timeout: float, **options) -> BlockingPrimaryPool:
    """A blocking pool of PrimaryConnections to ``group``'s primary."""
    manager = async_sentinel.Sentinel(
        group.sentinels, sentinel_kwargs=sentinel_kwargs(group, timeout=sentinel_timeout)
    )
    return BlockingPrimaryPool(
        group.master,
        manager,
        connection_class=PrimaryConnection,
        db=group.db,
        username=group.username,
        password=group.password,
        **options,
    )


def sync_pool(group: SentinelGroup, *, sentinel_timeout: float, **options):
    """A pool of SyncPrimaryConnections to ``group``'s primary."""
    manager = sync_sentinel.Sentinel(
        group.sentinels, sentinel_kwargs=sentinel_kwargs(group, timeout=sentinel_timeout)
    )
    return SyncPrimaryPool(
        group.master,
        manager,
        connection_class=SyncPrimaryConnection,
        db=group.db,
        username=group.username,
        password=group.password,
        **options,
    )


def channel_host(url: str, *, sentinel_timeout: float, **options) -> dict:
    """A channels_redis host entry for ``url``: its ``address``, or for a Sentinel group
    the ``sentinels``/``master_name`` form channels_redis 4 takes, with PrimaryConnection."""
    group = parse(url)
    if group is None:
        return {"address": url, **options}
    return {
        "sentinels": list(group.sentinels),
        "master_name": group.master,
        "sentinel_kwargs": sentinel_kwargs(group, timeout=sentinel_timeout),
        "connection_class": PrimaryConnection,
        "db": group.db,
        "username": group.username,
        "password": group.password,
        **options,
    }


def celery_broker(url: str, *, sentinel_timeout: float) -> tuple[str, dict]:
    """Celery's broker URL for ``url``, and the transport options it needs on top.

    kombu's ``sentinel://`` transport: one ``sentinel://`` URL per sentinel, joined by
    ``;``, and the group's name in the ``master_name`` transport option.
    """
    group = parse(url)
    if group is None:
        return url, {}
    userinfo = ""
    if group.password is not None or group.username is not None:
        userinfo = quote(group.username or "", safe="")
        if group.password is not None:
            userinfo += ":" + quote(group.password, safe="")
        userinfo += "@"
    broker = ";".join(
        f"sentinel://{userinfo}{f'[{h}]' if ':' in h else h}:{p}/{group.db}"
        for h, p in group.sentinels
    )
    options = {
        "master_name": group.master,
        "sentinel_kwargs": sentinel_kwargs(group, timeout=sentinel_timeout),
    }
    return broker, options
