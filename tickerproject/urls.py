from django.contrib import admin
from django.urls import include, path

from accounts.api import router as me_router
from alerts.api import router as alerts_router
from markets.api import api
from streaming.asyncapi import asyncapi_json

# The caller's own account (/api/me/): accounts' router on markets' API, wired here so
# markets never needs to know about per-user data.
api.add_router("/me/", me_router)
# Price alerts (/api/alerts/), per user; markets does not know about them either.
api.add_router("/alerts/", alerts_router)

urlpatterns = [
    path("admin/", admin.site.urls),
    # The WebSocket protocol's AsyncAPI document, beside the REST API's OpenAPI schema.
    path("api/asyncapi.json", asyncapi_json, name="asyncapi"),
    path("api/", api.urls),
    # /metrics, /healthz, /readyz and the staff-only /ops/ page (ops/views.py).
    path("", include("ops.urls")),
    path("", include("frontend.urls")),
]
