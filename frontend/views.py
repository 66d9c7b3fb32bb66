from decimal import Decimal

from django.shortcuts import render

from markets.selectors import active_symbols


def _decimals(tick_size: Decimal) -> int:
    """Decimal places a price of this tick size is shown with (0.00001 -> 5)."""
    return max(0, -tick_size.normalize().as_tuple().exponent)


def dashboard(request):
    """Called for GET /: the live dashboard, with the known symbols for search completion."""
    # Rendered into the page rather than fetched, so completion works without
    # another request and the page has no dependency on a JSON API.
    known = [
        {
            "ticker": s.ticker,
            "name": s.name,
            "asset_class": s.asset_class,
            "decimals": _decimals(s.tick_size),
        }
        for s in active_symbols()
    ]
    return render(
        request,
        "frontend/dashboard.html",
        {"known_symbols": known, "ws_path": "/ws/prices/"},
    )
