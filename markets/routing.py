from django.urls import path

from .consumers import PriceStreamConsumer

websocket_urlpatterns = [
    path("ws/prices/", PriceStreamConsumer.as_asgi()),
]
