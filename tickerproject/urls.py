from django.contrib import admin
from django.urls import include, path

from accounts.api import router as me_router
from markets.api import api

# The caller's own account (/api/me/): accounts' router on markets' API, wired here so
# markets never needs to know about per-user data.
api.add_router("/me/", me_router)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("", include("frontend.urls")),
]
