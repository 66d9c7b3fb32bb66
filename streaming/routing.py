from django.urls import path

from .consumer import PriceStreamConsumer

websocket_urlpatterns = [
    path("ws/prices/", PriceStreamConsumer.as_asgi()),
]
