"""Error pages and reports that never show settings (settings.DEFAULT_EXCEPTION_REPORTER*).

Django's debug page lists every setting and hides only names that look secret, so
REDIS_URL and CELERY_BROKER_URL (and any password in them) were shown in full. Here:

- the settings section is always empty, with DEBUG on or off;
- any value a setting holds that grants access (SECRET_KEY, the Redis and broker URLs,
  DATABASE_URL, database and Redis passwords, the sentinels' password) is replaced
  wherever else it turns up on the page or in the text report: a frame's local
  variables, the exception's message, request headers.
"""

from urllib.parse import urlsplit

from django.conf import settings
from django.utils.html import escape
from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter

from markets import sentinel

from .env import env_str

# Shorter strings would blank out ordinary words all over a page.
_MIN_SECRET_LENGTH = 4


def secret_values() -> list[str]:
    """The strings no error page or report may contain, longest first."""
    found: set[str] = set()
    for name in ("SECRET_KEY", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        value = getattr(settings, name, None)
        if isinstance(value, str):
            found.add(value)
    found.update(v for v in getattr(settings, "SECRET_KEY_FALLBACKS", []) if isinstance(v, str))
    found.update(v for v in getattr(settings, "REDIS_SHARD_URLS", []) if isinstance(v, str))
    database_url = env_str("DATABASE_URL", "")
    if database_url:
        found.add(database_url)
    for db in settings.DATABASES.values():
        if db.get("PASSWORD"):
            found.add(str(db["PASSWORD"]))
    for url in list(found):
        if "://" in url:
            try:
                password = urlsplit(url).password
            except ValueError:
                password = None
            if password:
                found.add(password)
        # A Sentinel URL's passwords as given (percent-decoded), the sentinels' one too.
        group = sentinel.parse(url) if sentinel.is_sentinel_url(url) else None
        if group is not None:
            found.update(p for p in (group.password, group.sentinel_password) if p)
    return sorted((v for v in found if len(v) >= _MIN_SECRET_LENGTH), key=len, reverse=True)


def redact(text: str, substitute: str = SafeExceptionReporterFilter.cleansed_substitute) -> str:
    for value in secret_values():
        # As written in a text report, and as escaped on the HTML page.
        text = text.replace(value, substitute).replace(escape(value), substitute)
    return text


class NoSettingsExceptionReporterFilter(SafeExceptionReporterFilter):
    """Shows no settings at all, and honours sensitive_* markers even with DEBUG on."""

    def get_safe_settings(self):
        return {}

    def is_active(self, request):
        return True


class RedactingExceptionReporter(ExceptionReporter):
    """The debug page and the text report, with every secret value replaced."""

    def get_traceback_html(self):
        return redact(super().get_traceback_html())

    def get_traceback_text(self):
        return redact(super().get_traceback_text())
