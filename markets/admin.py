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
    )
    list_filter = ("asset_class", "active")
    search_fields = ("ticker", "name")


@admin.register(Candle)
class CandleAdmin(admin.ModelAdmin):
    list_display = ("symbol", "interval", "start", "open", "high", "low", "close", "volume")
    list_filter = ("interval", "symbol")
    date_hierarchy = "start"
