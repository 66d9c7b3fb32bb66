"""Operator endpoints: /metrics, /healthz, /readyz and the /ops/ page (docs/operations.md).

- /metrics: the Prometheus text of every process (telemetry.exposition) plus each
  symbol's feed status read from Redis (markets.feedmetrics); only for the addresses in
  METRICS_ALLOWED_IPS (loopback by default) or a request bearing METRICS_TOKEN.
- /healthz (liveness): this process answers.
- /readyz (readiness): Redis and the database answer and this process's fan-out
  receive loop is running (or not started yet: it starts with the first subscriber).
- /ops/ (staff only): the same figures, live; /ops/data.json is what it polls, parsed
  from the very /metrics text, so there is no second bookkeeping.
"""

import asyncio
import os
import time

from asgiref.sync import sync_to_async
from django.contrib.auth.views import redirect_to_login
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from prometheus_client.parser import text_string_to_metric_families

from markets.feedmetrics import feed_families
from markets.redis import ping_all
from telemetry import exposition, probes
from telemetry import metrics as own_metrics
from telemetry.access import operator_allowed

PROBE_TIMEOUT_SECONDS = 2.0


async def exposition_text() -> tuple[bytes, str]:
    """Every process's metrics and the feed status, as one exposition."""
    own_metrics.flush()  # this process's latest counts, without waiting for its timer
    extra = []
    try:
        extra.append(await asyncio.wait_for(feed_families(), PROBE_TIMEOUT_SECONDS))
    except Exception:  # Redis or the database away: the rest of the scrape still says so
        own_metrics.REDIS_ERRORS.labels("metrics").inc()
    return exposition.render(extra)


@never_cache
async def metrics(request: HttpRequest) -> HttpResponse:
    if not operator_allowed(request):
        return HttpResponse("forbidden\n", status=403, content_type="text/plain")
    body, content_type = await exposition_text()
    return HttpResponse(body, content_type=content_type)


@never_cache
async def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok", "pid": os.getpid()})


async def _probe(coro) -> dict:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(coro, PROBE_TIMEOUT_SECONDS)
    except Exception as exc:  # whatever failed is what readiness reports
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:200]}
    return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 3)}


@sync_to_async
def _select_one() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


@never_cache
async def readyz(request: HttpRequest) -> JsonResponse:
    redis_check, db_check = await asyncio.gather(_probe(ping_all()), _probe(_select_one()))
    delivery = probes.delivery()
    loop = delivery.receive_loop if delivery is not None else "idle"
    ready = redis_check["ok"] and db_check["ok"] and loop in ("running", "idle")
    if not redis_check["ok"]:
        own_metrics.REDIS_ERRORS.labels("readyz").inc()
    body = {
        "status": "ready" if ready else "not ready",
        "pid": os.getpid(),
        "redis": redis_check,
        "database": db_check,
        "receive_loop": loop,
    }
    return JsonResponse(body, status=200 if ready else 503)


async def _staff(request: HttpRequest) -> bool:
    user = await request.auser()
    return user.is_active and user.is_staff


@never_cache
async def ops_page(request: HttpRequest) -> HttpResponse:
    if not await _staff(request):
        return redirect_to_login(request.get_full_path())
    return await sync_to_async(render)(request, "ops/ops.html", {})


@never_cache
async def ops_data(request: HttpRequest) -> JsonResponse:
    if not await _staff(request):
        return JsonResponse({"error": "staff only"}, status=403)
    body, _ = await exposition_text()
    return JsonResponse(summarize(body.decode()))


def summarize(text: str) -> dict:
    """The /ops/ page's figures from an exposition text (totals; the page takes rates)."""
    out: dict = {
        "at_ms": int(time.time() * 1000),
        "connections": 0.0,
        "published": 0.0,
        "delivered_ticks": 0.0,
        "delivered_frames": 0.0,
        "received": 0.0,
        "slow_closes": 0.0,
        "lag_buckets": {},
        "closes": {},
        "receive_loops": {},
        "symbols": {},
    }

    def sym(name: str) -> dict:
        return out["symbols"].setdefault(name, {"subscribers": 0.0})

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            name, labels, value = s.name, s.labels, s.value
            if name == "ticker_ws_connections":
                out["connections"] += value
            elif name == "ticker_ticks_published_total":
                out["published"] += value
                entry = sym(labels["symbol"])
                entry["published"] = entry.get("published", 0) + value
            elif name == "ticker_ticks_delivered_total":
                out["delivered_ticks"] += value
            elif name == "ticker_frames_delivered_total":
                out["delivered_frames"] += value
            elif name == "ticker_ticks_received_total":
                out["received"] += value
            elif name == "ticker_slow_consumer_closes_total":
                out["slow_closes"] += value
            elif name == "ticker_delivery_lag_seconds_bucket":
                out["lag_buckets"][labels["le"]] = out["lag_buckets"].get(labels["le"], 0) + value
            elif name == "ticker_ws_closes_total":
                key = f"{labels['code']} {labels['by']}"
                out["closes"][key] = out["closes"].get(key, 0) + value
            elif name == "ticker_receive_loop_up":
                out["receive_loops"][labels.get("pid", "?")] = value
            elif name == "ticker_subscriptions":
                sym(labels["symbol"])["subscribers"] += value
            elif name == "ticker_feed_last_tick_age_seconds":
                sym(labels["symbol"])["age_s"] = value
            elif name == "ticker_feed_source_up":
                entry = sym(labels["symbol"])
                entry.update(source=labels["source"], state=labels["state"], up=value)
            elif name == "ticker_feed_producer":
                sym(labels["symbol"])["producer"] = labels["worker"] if value else None
            elif name == "ticker_feed_ticks_per_second":
                sym(labels["symbol"])["ticks_per_s"] = value
    return out
