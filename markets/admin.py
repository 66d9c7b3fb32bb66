from django.contrib import admin

from .models import Candle, Symbol


@admin.register(Symbol)
class SymbolAdmin(admin.ModelAdmin):
    list_display = (
        "ticker",
        "name",
        "asset_class",
        "quote_currency",
        "tick_size",
        "start_price",
        "annual_volatility",
        "active",
        "required_group",
        "required_permission",
        "source",
    )
    list_filter = ("asset_class", "active", "required_group", "source")
    search_fields = ("ticker", "name")
    list_select_related = ("required_group", "required_permission__content_type")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "ticker",
                    "name",
                    "asset_class",
                    "quote_currency",
                    "tick_size",
                    "start_price",
                    "annual_volatility",
                    "active",
                )
            },
        ),
        (
            "Entitlements",
            {
                "description": (
                    "Public when both are empty. Otherwise only superusers, members of the "
                    "group and holders of the permission (either suffices) may see its "
                    "prices, on the WebSocket and the REST API. Open connections follow a "
                    "change within seconds."
                ),
                "fields": ("required_group", "required_permission"),
            },
        ),
        (
            "Feed source",
            {
                "description": (
                    "Where its ticks come from. Options as JSON, e.g. "
                    '{"product_id": "BTC-USD"} (coinbase), {"symbol": "btcusdt"} (binance), '
                    '{"file": "feeds/samples/btc-usd.csv", "speed": 10, "loop": true} '
                    "(replay); see docs/feeds.md. The producing worker switches within "
                    "seconds, and seq carries on."
                ),
                "fields": ("source", "source_options"),
            },
        ),
    )


@admin.register(Candle)
class CandleAdmin(admin.ModelAdmin):
    list_display = ("symbol", "interval", "start", "open", "high", "low", "close", "volume")
    list_filter = ("interval", "symbol")
    date_hierarchy = "start"
