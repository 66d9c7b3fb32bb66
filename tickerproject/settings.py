"""Django settings, read from the environment (see the configuration table in README.md)."""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url

from markets.sentinel import celery_broker as celery_sentinel_broker
from markets.sentinel import channel_host as redis_channel_host
from markets.sentinel import parse as parse_sentinel_url
from markets.sentinel import retry_policy as redis_retry_policy
from markets.sentinel import split_urls
from markets.sentinel import with_defaults as with_sentinel_passwords
from telemetry.logs import logging_config

from .env import env_bool, env_float, env_int, env_list, env_str, load_env_file
from .gctune import parse_thresholds

BASE_DIR = Path(__file__).resolve().parent.parent

# A checkout's .env.dev (DEBUG=1 and its own SECRET_KEY, written by `make install`) fills in
# what the environment leaves unset; a deployment has none (tickerproject/env.py).
load_env_file()

# --- Security (README, "Security"). Off unless asked: the development file asks; a
# deployment does not.
DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY", "")
if not SECRET_KEY:
    raise RuntimeError(
        "SECRET_KEY must be set: in a deployment, "
        "export a long random SECRET_KEY (python -c 'import secrets; "
        "print(secrets.token_urlsafe(50))'); for local development, run `make install` "
        "in the checkout: it writes .env.dev with DEBUG=1 and a new key"
    )
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])

# TLS terminated by a reverse proxy. Trust its scheme header only when the proxy sets
# (and overwrites) it, e.g. SECURE_PROXY_SSL_HEADER=X-Forwarded-Proto.
_PROXY_SSL_HEADER = env_str("SECURE_PROXY_SSL_HEADER", "")
if _PROXY_SSL_HEADER:
    SECURE_PROXY_SSL_HEADER = (f"HTTP_{_PROXY_SSL_HEADER.upper().replace('-', '_')}", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# Cookies are HTTPS-only wherever plain HTTP is redirected to HTTPS, unless told otherwise.
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", SECURE_SSL_REDIRECT)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", SECURE_SSL_REDIRECT)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# Origins (scheme://host[:port]) allowed to POST forms, e.g. https://ticker.example.com.
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# The largest HTTP request body, in bytes (deploy/nginx.conf's client_max_body_size): past
# it, 413 before the body is read, on every route (tickerproject/bodylimit.py).
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 1024 * 1024, minimum=1024)
# Headers on every response (SecurityMiddleware, XFrameOptionsMiddleware; the CSP below).
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = env_str("SECURE_REFERRER_POLICY", "same-origin")
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Error pages and reports never show settings, and redact the URLs and keys they hold
# wherever else they turn up (tickerproject/errors.py).
DEFAULT_EXCEPTION_REPORTER_FILTER = "tickerproject.errors.NoSettingsExceptionReporterFilter"
DEFAULT_EXCEPTION_REPORTER = "tickerproject.errors.RedactingExceptionReporter"
# The largest WebSocket frame or message a client may send, read here only: uvicorn and
# daphne refuse a bigger one with 1009 from its header (tickerproject/serve.py, README
# "Frame size"), and the consumer checks again (streaming/protocol.py).
WS_MAX_MESSAGE_BYTES = env_int("WS_MAX_MESSAGE_BYTES", 64 * 1024, minimum=1024)

# Not "daphne": its app only swaps runserver for daphne, and importing it loads Twisted
# (a third of every process's start-up). ASGI_SERVER=daphne runs the daphne command.
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "csp",
    # Serves the API docs page's Swagger UI from local static files, not a CDN.
    "ninja",
    "accounts",
    "alerts",
    "markets",
    "feeds",
    "frontend",
    "loadtest",
    "ops",
    # Counts failed sign-ins and locks them out (accounts/throttle.py).
    "axes",
]

MIDDLEWARE = [
    # First, so it times every request and sees every status (ticker_http_*).
    "telemetry.middleware.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as axes asks: turns a locked-out sign-in into its page (429).
    "axes.middleware.AxesMiddleware",
]

# Content-Security-Policy on every page (django-csp): scripts, styles, images, fonts and
# connections from this origin only; no inline script or style, no eval, no framing.
# Elements' .style set from script (CSSOM) is not inline style and stays allowed. The one
# exception is the dashboard's: Plotly's own <style> elements, by hash (frontend/csp.py).
# The admin and the API docs (ninja's Swagger UI, from local static files) need none;
# images may be data: URIs (favicons, Swagger UI's icons). `connect-src 'self'` admits the
# page's own ws:// and wss:// origin in current browsers (CSP Level 3).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "style-src-elem": ["'self'"],
        "style-src-attr": ["'none'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

ROOT_URLCONF = "tickerproject.urls"
ASGI_APPLICATION = "tickerproject.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=60,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default serves a web process and a Celery worker at once. A write
    # that began as a read could fail at once with "database is locked" (seen as a 500
    # on POST /api/alerts/ under load): take the write lock when a transaction begins,
    # wait for it up to 20 s, and let readers go on during a write (WAL).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "frontend.finders.PlotlyJsFinder",
]
# Serve straight from the finders so `make run` needs no collectstatic step.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# --- Redis: one server carries the channel layer, the Celery broker and market state.
# Beyond one Redis: REDIS_SHARD_URLS lists several hosts. The channel layer shards its
# groups across them, market data is sharded by symbol (markets.redis.shard_index);
# the Celery broker and keys of no symbol stay on REDIS_URL (the first shard unless set).
# Any of them may be a Sentinel-managed group, redis+sentinel://host:port,.../master[/db]
# (markets/sentinel.py); REDIS_SENTINELS names REDIS_URL's group the short way.
REDIS_SHARD_URLS = split_urls(env_str("REDIS_SHARD_URLS", ""))
# Sentinel: the sentinels (host:port,host:port,...) and the name they monitor the primary
# under. The data nodes' password (REDIS_PASSWORD) and the sentinels' own
# (REDIS_SENTINEL_PASSWORD) apply to every redis+sentinel:// URL that names none.
_SENTINELS = env_str("REDIS_SENTINELS", "")
_REDIS_PASSWORD = env_str("REDIS_PASSWORD", "") or None
_SENTINEL_PASSWORD = env_str("REDIS_SENTINEL_PASSWORD", "") or None
if _SENTINELS:
    if os.environ.get("REDIS_URL"):
        raise ValueError("set REDIS_SENTINELS or REDIS_URL, not both")
    REDIS_URL = f"redis+sentinel://{_SENTINELS}/{env_str('REDIS_SENTINEL_MASTER', 'mymaster')}/0"
else:
    REDIS_URL = env_str(
        "REDIS_URL", REDIS_SHARD_URLS[0] if REDIS_SHARD_URLS else "redis://127.0.0.1:6379/0"
    )


def _redis_url(url: str) -> str:
    # Parsed here, so a malformed one stops every process at start with its reason.
    url = with_sentinel_passwords(
        url, password=_REDIS_PASSWORD, sentinel_password=_SENTINEL_PASSWORD
    )
    parse_sentinel_url(url)
    return url


REDIS_URL = _redis_url(REDIS_URL)
REDIS_SHARD_URLS = [_redis_url(url) for url in REDIS_SHARD_URLS] or [REDIS_URL]
# Every key this deployment writes starts with this, so parallel runs can share one server.
REDIS_PREFIX = env_str("REDIS_PREFIX", "ticker")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # make test runs the suite in parallel processes (pytest-xdist): each gets keys of its
    # own, and so does every process it starts, which inherits this REDIS_PREFIX (and not
    # the worker id, which would add a second suffix).
    REDIS_PREFIX = f"{REDIS_PREFIX}-{os.environ.pop('PYTEST_XDIST_WORKER')}"
    os.environ["REDIS_PREFIX"] = REDIS_PREFIX

# Timeouts and retries of every Redis client (markets.redis, the channel layer, Celery's
# broker), chosen rather than left to the libraries (docs/deployment.md, "Redis Sentinel"):
# redis-py 8 defaults socket_timeout to 5 s, which equals the core layer's 5 s BZPOPMIN
# and closes idle consumers with 1011 (channels_redis#422); it must exceed it.
REDIS_SOCKET_TIMEOUT = env_float("REDIS_SOCKET_TIMEOUT", 30.0, minimum=10.0)
REDIS_CONNECT_TIMEOUT = env_float("REDIS_CONNECT_TIMEOUT", 5.0, minimum=0.1)
# A command that failed on its connection (dropped, refused, a demoted primary) is tried
# again this many times, 20-250 ms apart (markets.sentinel.retry_policy); a timeout is not.
REDIS_RETRIES = env_int("REDIS_RETRIES", 3, minimum=0)
# How long one sentinel may take to say where the primary is before the next is asked.
REDIS_SENTINEL_TIMEOUT = env_float("REDIS_SENTINEL_TIMEOUT", 1.0, minimum=0.05)
_REDIS_HOST = {
    "socket_timeout": REDIS_SOCKET_TIMEOUT,
    "socket_connect_timeout": REDIS_CONNECT_TIMEOUT,
    "retry": redis_retry_policy(REDIS_RETRIES),
    # redis-py 8 caps a pool at 100 and raises past it; every group_add of a burst
    # of subscribers needs its own connection.
    "max_connections": env_int("REDIS_MAX_CONNECTIONS", 2000, minimum=10),
}
# The channel layer's Redis hosts: REDIS_SHARD_URLS unless set (the fault tests put a
# proxy in between). channels_redis shards groups across them by a hash of the name.
_CHANNEL_HOSTS = [
    redis_channel_host(_redis_url(url), sentinel_timeout=REDIS_SENTINEL_TIMEOUT, **_REDIS_HOST)
    for url in (split_urls(env_str("CHANNEL_LAYER_REDIS_URL", "")) or REDIS_SHARD_URLS)
]
# channels_redis forgets a group member after this; streaming.hub renews well before.
CHANNEL_GROUP_EXPIRY = env_int("CHANNEL_GROUP_EXPIRY", 86400, minimum=4)
CHANNEL_GROUP_RENEW_SECONDS = env_float(
    "CHANNEL_GROUP_RENEW_SECONDS", CHANNEL_GROUP_EXPIRY / 4, minimum=1.0
)
# "pubsub": one PUBLISH per group and fan-out inside each web process.
# "core": channels_redis' default layer, which writes a copy per group member to Redis,
# with the publisher's batched send (markets.layer.TickerChannelLayer.group_send_many).
CHANNEL_LAYER = env_str("CHANNEL_LAYER", "core")
if CHANNEL_LAYER == "pubsub":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": _CHANNEL_HOSTS, "prefix": f"{REDIS_PREFIX}:asgi"},
        }
    }
elif CHANNEL_LAYER == "core":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "markets.layer.TickerChannelLayer",
            "CONFIG": {
                "hosts": _CHANNEL_HOSTS,
                "prefix": f"{REDIS_PREFIX}:asgi",
                "capacity": env_int("CHANNEL_CAPACITY", 1000, minimum=10),
                "expiry": 10,
                # Each web process renews its groups every CHANNEL_GROUP_RENEW_SECONDS.
                "group_expiry": CHANNEL_GROUP_EXPIRY,
            },
        }
    }
else:
    raise ValueError(f"CHANNEL_LAYER={CHANNEL_LAYER!r}: use 'pubsub' or 'core'")

# --- Celery
# A Sentinel group's broker is kombu's sentinel:// transport (markets.sentinel.celery_broker);
# results are ignored (CELERY_TASK_IGNORE_RESULT), so there is no result backend to set.
CELERY_BROKER_URL, _BROKER_SENTINEL_OPTIONS = celery_sentinel_broker(
    REDIS_URL, sentinel_timeout=REDIS_SENTINEL_TIMEOUT
)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "global_keyprefix": f"{REDIS_PREFIX}:celery:",
    "socket_timeout": REDIS_SOCKET_TIMEOUT,
    "socket_connect_timeout": REDIS_CONNECT_TIMEOUT,
    **_BROKER_SENTINEL_OPTIONS,
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {
    "supervise-feed": {
        "task": "feeds.tasks.run_feed",
        "schedule": env_float("FEED_SUPERVISE_SECONDS", 5.0, minimum=0.5),
        # A missed beat is replaced by the next one; never let them pile up.
        "options": {"expires": env_float("FEED_SUPERVISE_SECONDS", 5.0, minimum=0.5)},
    },
}

# --- Market data
TICK_RATE = env_float("TICK_RATE", 2.0, minimum=0.01)
FEED_SEED = env_int("FEED_SEED", 0)
# Producer lease TTL: a dead producer's symbols wait this long (plus the takeover poll)
# for a new one; renewed every third of it (docs/feeds.md, "Failover").
FEED_LEASE_SECONDS = env_float("FEED_LEASE_SECONDS", 3.0, minimum=1.0)
HISTORY_DEPTH = env_int("HISTORY_DEPTH", 10_000, minimum=100)
# Order books (issue 21; docs/feeds.md, "Order books"): Redis keeps each symbol's current
# top 50 and about this many of its latest updates, for web processes to catch up from.
BOOK_LOG_DEPTH = env_int("BOOK_LOG_DEPTH", 1000, minimum=10)
# Book updates per second of each simulated symbol; 0: as many as its ticks (TICK_RATE).
SIM_BOOK_RATE = env_float("SIM_BOOK_RATE", 0.0, minimum=0.0)
MAX_SYMBOLS_PER_CONNECTION = env_int("MAX_SYMBOLS_PER_CONNECTION", 50, minimum=1)
# How stale a web process's set of subscribable (active) symbols may be.
SYMBOLS_CACHE_SECONDS = env_float("SYMBOLS_CACHE_SECONDS", 2.0, minimum=0.0)

# --- Feed sources (feeds/sources/; docs/feeds.md): each Symbol names its source.
# Coinbase Exchange market-data WebSocket (tests point it at a fake server on 127.0.0.1).
COINBASE_WS_URL = env_str("COINBASE_WS_URL", "wss://ws-feed.exchange.coinbase.com")
# Binance spot WebSocket base; the adapter adds /stream?streams=<symbol>@trade/...
BINANCE_WS_URL = env_str("BINANCE_WS_URL", "wss://stream.binance.com:9443")
# Binance spot REST base: the book's snapshot is GET <this>/api/v3/depth (docs/feeds.md).
BINANCE_REST_URL = env_str("BINANCE_REST_URL", "https://api.binance.com")
# How often every worker's feed looks for symbols without a producer (its takeover delay).
FEED_TAKEOVER_POLL_SECONDS = env_float("FEED_TAKEOVER_POLL_SECONDS", 0.5, minimum=0.05)
# The feed's progress watchdog: a feed whose drafts have waited this long with nothing
# published logs it, counts it, reports its symbols "stalled" and gives their leases up,
# so another producer takes over (feeds.services; docs/operations.md).
FEED_STALL_SECONDS = env_float("FEED_STALL_SECONDS", 5.0, minimum=0.5)

# --- Delivery (streaming/): each connection's outbox holds at most this many bytes of
# live ticks, and no live tick is written more than MAX_TICK_AGE_MS after its ts; past
# either an "all" connection is closed with 4008 and "latest" ones are conflated.
OUTBOX_MAX_BYTES = env_int("OUTBOX_MAX_BYTES", 1024 * 1024, minimum=4096)
MAX_TICK_AGE_MS = env_int("MAX_TICK_AGE_MS", 1000, minimum=50)
# Keepalive (tickerproject/serve.py hands both to the server): a ping after this many
# seconds, and a client that has not answered it this many seconds later is closed (4008
# with uvicorn, a dropped connection with daphne).
WS_PING_INTERVAL = env_int("WS_PING_INTERVAL", 20, minimum=1)
WS_PING_TIMEOUT = env_int("WS_PING_TIMEOUT", 20, minimum=1)
# Once the server has sent a close (4008 included), the client has this many seconds to
# read up to it and answer before its TCP connection is reset (tickerproject/uvicorn_ws).
WS_CLOSE_TIMEOUT = env_int("WS_CLOSE_TIMEOUT", 10, minimum=1)
# The web process's garbage collector (tickerproject.gctune): the startup heap frozen and
# young collections rarer, so a full collection does not pause every tick in flight.
GC_THRESHOLDS = parse_thresholds(env_str("GC_THRESHOLDS", "10000,10,10"))
# A web process leaves a symbol's group after nobody has watched it this long.
FEED_IDLE_SECONDS = env_float("FEED_IDLE_SECONDS", 30.0, minimum=0.1)

# --- Access (streaming.auth, streaming.guard): with WS_REQUIRE_AUTH a WebSocket must
# authenticate (session, Bearer header or an "auth" command within AUTH_TIMEOUT_SECONDS)
# and the REST API and dashboard need a session or token. Default off for a local demo.
WS_REQUIRE_AUTH = env_bool("WS_REQUIRE_AUTH", False)
AUTH_TIMEOUT_SECONDS = env_float("AUTH_TIMEOUT_SECONDS", 5.0, minimum=0.1)
# Open connections see a revoked token or right within this many seconds.
ENTITLEMENT_RECHECK_SECONDS = env_float("ENTITLEMENT_RECHECK_SECONDS", 2.0, minimum=0.1)
# Sign-in and sign-out pages: Django's own auth views (frontend/urls.py).
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"
# Passwords set through a form (the admin, `createsuperuser`, `changepassword`) must pass
# Django's four checks; PASSWORD_MIN_LENGTH sets the first.
AUTH_PASSWORD_VALIDATORS = [
    {
        "NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator",
    },
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": env_int("PASSWORD_MIN_LENGTH", 10, minimum=8)},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Sign-in throttling (django-axes; accounts/throttle.py, README "Users and tokens"):
# LOGIN_FAILURE_LIMIT failed sign-ins for one account, or from one client address, lock
# that account or address out of both login pages (the site's and the admin's) for
# LOGIN_LOCKOUT_MINUTES after the last failure, a right password included.
# `manage.py axes_reset_username NAME` / `axes_reset_ip ADDR` / `axes_reset` lift it.
AUTHENTICATION_BACKENDS = [
    # First: it refuses a locked-out attempt before any password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_float("LOGIN_LOCKOUT_MINUTES", 15.0, minimum=0.1))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
# A success clears nothing: it would clear its address's attempts, and with them those of
# an account guessed from there by someone signing in to their own account between guesses.
AXES_RESET_ON_SUCCESS = False
AXES_CLIENT_IP_CALLABLE = "accounts.throttle.client_address"
AXES_LOCKOUT_CALLABLE = "accounts.throttle.locked_out"
# Failures are what is counted; a row per successful sign-in would only grow.
AXES_DISABLE_ACCESS_LOG = True
AXES_VERBOSE = False  # no banner in every process's log

# --- Limits (streaming.limits; docs/protocol.md, "Limits"): what one client can make a
# web process do. Commands: a token bucket per connection; past it commands are dropped
# (one rate_limited error a second tells how many) and the connection is read no faster,
# and one that floods for WS_FLOOD_CLOSE_SECONDS is closed with 1008. Connections past a
# cap are closed with 1013. Subscriptions: MAX_SYMBOLS_PER_CONNECTION per connection and
# WS_MAX_SUBSCRIPTIONS_PER_USER per signed-in user across its connections (per process).
WS_COMMAND_RATE = env_float("WS_COMMAND_RATE", 20.0, minimum=0.1)
WS_COMMAND_BURST = env_int("WS_COMMAND_BURST", 50, minimum=1)
WS_FLOOD_CLOSE_SECONDS = env_float("WS_FLOOD_CLOSE_SECONDS", 10.0, minimum=0.5)
WS_MAX_CONNECTIONS_PER_IP = env_int("WS_MAX_CONNECTIONS_PER_IP", 100, minimum=1)
WS_MAX_CONNECTIONS = env_int("WS_MAX_CONNECTIONS", 10_000, minimum=1)
WS_MAX_SUBSCRIPTIONS_PER_USER = env_int("WS_MAX_SUBSCRIPTIONS_PER_USER", 500, minimum=1)

# --- Candles (markets.candles): Redis keeps this many buckets per symbol and interval
# (900 = 15 min of 1s candles, 15 h of 1m); closed 1m/5m/1h ones are also persisted.
CANDLE_REDIS_BUCKETS = env_int("CANDLE_REDIS_BUCKETS", 900, minimum=10)
CANDLE_PERSIST_SECONDS = env_float("CANDLE_PERSIST_SECONDS", 10.0, minimum=0.5)
CANDLE_PERSIST_BATCH = env_int("CANDLE_PERSIST_BATCH", 500, minimum=1)
# A bucket counts as closed this long after its end, so an in-flight tick still lands.
CANDLE_CLOSE_GRACE_MS = env_int("CANDLE_CLOSE_GRACE_MS", 2000, minimum=0)
CELERY_BEAT_SCHEDULE["persist-candles"] = {
    "task": "markets.tasks.persist_candles",
    "schedule": CANDLE_PERSIST_SECONDS,
    "options": {"expires": CANDLE_PERSIST_SECONDS},
}

# --- REST API (markets.api): the one place its limits live.
API_TICKS_DEFAULT_LIMIT = env_int("API_TICKS_DEFAULT_LIMIT", 100, minimum=1)
API_TICKS_MAX_LIMIT = env_int("API_TICKS_MAX_LIMIT", 1000, minimum=1)
API_CANDLES_DEFAULT_LIMIT = env_int("API_CANDLES_DEFAULT_LIMIT", 300, minimum=1)
API_CANDLES_MAX_LIMIT = env_int("API_CANDLES_MAX_LIMIT", 1000, minimum=1)
# A symbol is "live" when its last tick is at most this old; /api/health/ is degraded
# (503) when any active symbol's last tick is older than FEED_STALE_SECONDS.
FEED_LIVE_SECONDS = env_float("FEED_LIVE_SECONDS", 5.0, minimum=0.1)
FEED_STALE_SECONDS = env_float("FEED_STALE_SECONDS", 15.0, minimum=0.1)

# --- Price alerts (alerts/; docs/dashboard.md, "Price alerts"): judged server-side by one
# evaluator loop per Celery worker, one of which holds the lease at a time.
ALERTS_MAX_PER_USER = env_int("ALERTS_MAX_PER_USER", 100, minimum=1)
ALERT_EVALUATOR_LEASE_SECONDS = env_float("ALERT_EVALUATOR_LEASE_SECONDS", 3.0, minimum=0.5)
ALERT_SUPERVISE_SECONDS = env_float("ALERT_SUPERVISE_SECONDS", 5.0, minimum=0.5)
CELERY_BEAT_SCHEDULE["supervise-alerts"] = {
    "task": "alerts.tasks.run_evaluator",
    "schedule": ALERT_SUPERVISE_SECONDS,
    "options": {"expires": ALERT_SUPERVISE_SECONDS},
}
# Fired-alert history (alerts.retention): events older than ALERT_HISTORY_DAYS, and each
# user's beyond their newest ALERT_HISTORY_MAX_PER_USER, are deleted by a beat task every
# ALERT_HISTORY_PRUNE_SECONDS. 0 turns that limit off.
ALERT_HISTORY_DAYS = env_float("ALERT_HISTORY_DAYS", 30.0, minimum=0.0)
ALERT_HISTORY_MAX_PER_USER = env_int("ALERT_HISTORY_MAX_PER_USER", 1000, minimum=0)
ALERT_HISTORY_PRUNE_SECONDS = env_float("ALERT_HISTORY_PRUNE_SECONDS", 3600.0, minimum=1.0)
CELERY_BEAT_SCHEDULE["prune-alert-history"] = {
    "task": "alerts.tasks.prune_alert_history",
    "schedule": ALERT_HISTORY_PRUNE_SECONDS,
    "options": {"expires": ALERT_HISTORY_PRUNE_SECONDS},
}

# --- Operations (telemetry/, ops/; docs/operations.md).
# /metrics answers these client addresses (CIDRs) and any request with
# "Authorization: Bearer <METRICS_TOKEN>" when a token is set; nobody else (403).
METRICS_ALLOWED_IPS = env_list("METRICS_ALLOWED_IPS", ["127.0.0.1/32", "::1/128"])
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
# A Celery worker that shares no PROMETHEUS_MULTIPROC_DIR with a web process (its own
# container) serves its metrics itself on this port (0: not at all) and address.
WORKER_METRICS_PORT = env_int("WORKER_METRICS_PORT", 0, minimum=0)
WORKER_METRICS_ADDR = env_str("WORKER_METRICS_ADDR", "127.0.0.1")
# /api/health/: a symbol with subscribers in this process is "lagging" when it got no tick
# for its expected interval (1 / its source's tick rate) plus this, while its producer
# published one within that time.
HEALTH_DELIVERY_MARGIN_SECONDS = env_float("HEALTH_DELIVERY_MARGIN_SECONDS", 2.0, minimum=0.1)
# "plain" (the default) or "json": one JSON object per line (telemetry/logs.py).
LOG_FORMAT = env_str("LOG_FORMAT", "plain")
LOGGING = logging_config(fmt=LOG_FORMAT, level=env_str("LOG_LEVEL", "INFO"))
# Applies LOGGING and sends warnings and uncaught exceptions through it too.
LOGGING_CONFIG = "telemetry.logs.configure"
# Celery's workers log through the same configuration instead of their own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
