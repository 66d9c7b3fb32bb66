"""Who may read what operators read: /metrics, and /api/health/'s full report.

One rule for both: the client addresses in METRICS_ALLOWED_IPS (loopback by default),
or a request bearing ``Authorization: Bearer <METRICS_TOKEN>`` when a token is set.
The address is REMOTE_ADDR, which uvicorn sets from X-Forwarded-For only for a proxy in
FORWARDED_ALLOW_IPS (docs/deployment.md), so a client cannot name itself loopback.
"""

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpRequest


def operator_allowed(request: HttpRequest) -> bool:
    """Whether ``request`` comes from an allowed address or bears the metrics token."""
    token = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer "):
        return hmac.compare_digest(header[7:].encode(), token.encode())
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    networks = [ipaddress.ip_network(n, strict=False) for n in settings.METRICS_ALLOWED_IPS]
    return any(address in network for network in networks)
