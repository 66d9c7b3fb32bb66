"""ticker_http_requests_total and ticker_http_request_duration_seconds, per route.

The route is the URL pattern that matched (``api/symbols/<ticker>/``, not the path),
so the number of series stays bounded; a request no pattern matched counts as
``unmatched``. It works sync and async without a thread hop (Django's
``sync_and_async_middleware``); django-prometheus' middleware would add one per
request under ASGI, and names of its own.
"""

import time

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from . import metrics

UNMATCHED = "unmatched"
# Any other method is counted as "other": a client must not make series at will.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetricsMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self._acall(request)
        started = time.perf_counter()
        response = self.get_response(request)
        _count(request, response.status_code, time.perf_counter() - started)
        return response

    async def _acall(self, request):
        started = time.perf_counter()
        response = await self.get_response(request)
        _count(request, response.status_code, time.perf_counter() - started)
        return response


def _count(request, status: int, seconds: float) -> None:
    match = getattr(request, "resolver_match", None)
    route = match.route if match is not None and match.route else UNMATCHED
    method = request.method if request.method in METHODS else "other"
    metrics.HTTP_REQUESTS.labels(route, method, str(status)).inc()
    metrics.HTTP_LATENCY.labels(route).observe(seconds)
