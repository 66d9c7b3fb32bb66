from django.contrib import admin

from .models import AlertEvent, EvaluatorCursor, PriceAlert


@admin.register(PriceAlert)
class PriceAlertAdmin(admin.ModelAdmin):
    list_display = ["symbol", "direction", "price", "user", "active", "repeat", "fired_count"]
    list_filter = ["active", "direction", "repeat"]
    search_fields = ["symbol", "user__username", "note"]
    readonly_fields = ["armed_after_seq", "epoch", "last_side", "fired_count", "last_fired"]


@admin.register(AlertEvent)
class AlertEventAdmin(admin.ModelAdmin):
    list_display = ["symbol", "direction", "threshold", "price", "seq", "user", "fired_at"]
    search_fields = ["symbol", "user__username"]


@admin.register(EvaluatorCursor)
class EvaluatorCursorAdmin(admin.ModelAdmin):
    list_display = ["symbol", "epoch", "last_seq", "updated"]
    readonly_fields = ["symbol", "epoch", "last_seq", "updated"]
