"""Failed sign-ins are throttled by django-axes (settings: the "Sign-in throttling" block).

axes counts failed logins in the database, per account and per client address, for the
site's sign-in page and the admin's alike (both go through ``authenticate``), and refuses
every further attempt, a right password too, until the lock expires or an operator lifts
it (``manage.py axes_reset_username``, ``axes_reset_ip``, ``axes_reset``, or deleting the
attempt in the admin). This module holds the two hooks it is given.
"""

import math

from django.conf import settings
from django.shortcuts import render


def client_address(request) -> str | None:
    """The address attempts are counted under: the peer's, as the ASGI server set it.

    uvicorn (--proxy-headers) replaces it with X-Forwarded-For only for the proxies in
    FORWARDED_ALLOW_IPS, so a client cannot choose it; axes would otherwise read that
    header itself wherever django-ipware happens to be installed.
    """
    return request.META.get("REMOTE_ADDR")


def locked_out(request, *args, **kwargs):
    """Called by axes for a locked-out attempt: the sign-in page's look, status 429."""
    minutes = math.ceil(settings.AXES_COOLOFF_TIME.total_seconds() / 60)
    context = {"failure_limit": settings.AXES_FAILURE_LIMIT, "minutes": minutes}
    return render(request, "accounts/locked_out.html", context, status=429)
