from django.contrib import admin

from .models import Symbol


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
