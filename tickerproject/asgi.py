"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tickerproject.settings")
# Django must be set up before anything imports models, so this comes first.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from streaming.auth import WebSocketAuthMiddleware  # noqa: E402
from streaming.limits import ConnectionLimits  # noqa: E402
from streaming.origin import SameOriginValidator  # noqa: E402
from streaming.routing import websocket_urlpatterns  # noqa: E402
from tickerproject.bodylimit import BodyLimit  # noqa: E402

application = ProtocolTypeRouter(
    {
        # A body over DATA_UPLOAD_MAX_MEMORY_SIZE is refused before Django reads it.
        "http": BodyLimit(django_asgi_app),
        # Outermost, so it counts every WebSocket and holds the server's own send.
        "websocket": ConnectionLimits(
            # The full Origin (scheme, host, port), as Django's CSRF check has it.
            SameOriginValidator(WebSocketAuthMiddleware(URLRouter(websocket_urlpatterns)))
        ),
    }
)

from tickerproject.gctune import tune  # noqa: E402

# Last: everything the application loaded is frozen out of the collector's walks.
tune()
