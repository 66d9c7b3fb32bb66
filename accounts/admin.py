from django.conf import settings
from django.contrib import admin
from django.template.response import TemplateResponse

from .models import ApiToken, Watchlist
from .services import issue_token, revoke_token, token_owners_for


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens: listed by prefix, created with their secret shown once, revoked in bulk."""

    list_display = ("prefix", "name", "user", "created", "expires", "revoked", "usable")
    list_filter = (("revoked", admin.EmptyFieldListFilter), "created")
    search_fields = ("prefix", "name", "user__username")
    list_select_related = ("user",)
    actions = ["revoke_selected"]

    def get_fields(self, request, obj=None):
        if obj is None:  # the secret is made by accounts.services, never typed in
            return ("user", "name", "expires")
        return ("user", "name", "prefix", "created", "expires", "revoked")

    def get_readonly_fields(self, request, obj=None):
        return ("user", "prefix", "created") if obj is not None else ()

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        """Called for the add form's user field: only the users the signed-in one may
        issue tokens for (accounts.services), so a choice outside them is refused."""
        if db_field.name == "user":
            kwargs["queryset"] = token_owners_for(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_changeform_initial_data(self, request):
        return {"user": request.user.pk, **super().get_changeform_initial_data(request)}

    @admin.display(boolean=True)
    def usable(self, token: ApiToken) -> bool:
        return token.is_usable()

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke_selected(self, request, queryset):
        tokens = list(queryset.filter(revoked__isnull=True).select_related("user"))
        for token in tokens:
            revoke_token(token=token)
        self.message_user(
            request,
            f"Revoked {len(tokens)} token(s). Open WebSocket connections using them are "
            f"closed (4403) within {settings.ENTITLEMENT_RECHECK_SECONDS:g} s.",
        )

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        # The rule again, in the service: the form's choices are not the only way in.
        issued = issue_token(user=obj.user, by=request.user, name=obj.name, expires=obj.expires)
        # The admin goes on with ``obj`` (its log entry, the response): make it the token.
        for field in ApiToken._meta.concrete_fields:
            setattr(obj, field.attname, getattr(issued.token, field.attname))
        obj._state.adding = False
        obj._state.db = issued.token._state.db
        request._issued_token_secret = issued.secret

    def response_add(self, request, obj, post_url_continue=None):
        """The one page that shows a new token's secret; it is stored only as a digest."""
        secret = getattr(request, "_issued_token_secret", None)
        if secret is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Token created: copy its secret now",
            "token": obj,
            "secret": secret,
        }
        response = TemplateResponse(request, "admin/accounts/apitoken/issued.html", context)
        response["Cache-Control"] = "no-store"
        return response


@admin.register(Watchlist)
class WatchlistAdmin(admin.ModelAdmin):
    list_display = ("user", "size", "updated")
    search_fields = ("user__username",)
    readonly_fields = ("updated",)

    @admin.display(description="symbols")
    def size(self, watchlist: Watchlist) -> int:
        return len(watchlist.symbols)
