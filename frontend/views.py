from decimal import Decimal

from csp.decorators import csp_update
from django.conf import settings
from django.contrib.auth import get_user
from django.contrib.auth import views as auth_views
from django.contrib.auth.views import redirect_to_login
from django.shortcuts import render
from django.urls import reverse

from markets.entitlements import forbidden_tickers
from markets.selectors import active_symbols

from .csp import plotly_style_hashes


def _decimals(tick_size: Decimal) -> int:
    """Decimal places a price of this tick size is shown with (0.00001 -> 5)."""
    return max(0, -tick_size.normalize().as_tuple().exponent)


# Plotly's own <style> elements, by hash, on this page only (frontend/csp.py).
@csp_update({"style-src-elem": plotly_style_hashes()})
def dashboard(request):
    """Called for GET /: the live dashboard, with the known symbols for search completion.

    With WS_REQUIRE_AUTH it is for signed-in users only: others are sent to the login page.
    """
    if settings.WS_REQUIRE_AUTH and not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    symbols = active_symbols()
    # Completion offers only what this user may watch (markets.entitlements). It gets
    # the user model instance itself: rights_of reads its class, not a lazy wrapper's.
    user = get_user(request)
    hidden = set(forbidden_tickers(user=user, tickers=[s.ticker for s in symbols]))
    # Rendered into the page rather than fetched, so completion works without
    # another request and the page has no dependency on a JSON API.
    known = [
        {
            "ticker": s.ticker,
            "name": s.name,
            "asset_class": s.asset_class,
            "decimals": _decimals(s.tick_size),
            "source": s.source,
        }
        for s in symbols
        if s.ticker not in hidden
    ]
    return render(
        request,
        "frontend/dashboard.html",
        {
            "known_symbols": known,
            "ws_path": "/ws/prices/",
            # Polled for each symbol's feed source state (source-status.js).
            "symbols_url": reverse("api:list_symbols"),
            # The signed-in user's watchlist lives on the server (accounts.api).
            "watchlist_url": reverse("api:get_watchlist"),
            # ... and so are the user's price alerts (alerts.api).
            "alerts_url": reverse("api:list_alerts"),
        },
    )


class LoginView(auth_views.LoginView):
    """Django's own login view, in the dashboard's look."""

    template_name = "frontend/login.html"
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        # Without WS_REQUIRE_AUTH the dashboard is open, so offer the way back to it.
        context["dashboard_is_open"] = not settings.WS_REQUIRE_AUTH
        return context
