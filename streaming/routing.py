from django.urls import path

# The price protocol (streaming.consumer) with the user's price alerts (streaming.alerts).
from .alerts import PriceStreamWithAlerts

websocket_urlpatterns = [
    path("ws/prices/", PriceStreamWithAlerts.as_asgi()),
]
