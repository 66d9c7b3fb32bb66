from django.conf import settings
from django.db import models
from django.utils import timezone


class ApiToken(models.Model):
    """A bearer token for programs: stored as a SHA-256 digest, its secret shown once.

    The secret is 256 random bits, so a fast digest is enough: there is nothing to
    brute-force, unlike a password (the same reasoning as GitHub's and knox's tokens).
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, blank=True)
    # The first characters of the secret, so an operator can tell tokens apart.
    prefix = models.CharField(max_length=12, editable=False)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    expires = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    revoked = models.DateTimeField(null=True, blank=True, help_text="Set to revoke the token.")

    class Meta:
        ordering = ["-created"]
        # accounts.services.token_owners_for: without it (or superuser), a user who may
        # add tokens adds them for themselves only.
        permissions = [("issue_token_for_others", "Can issue API tokens for other users")]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name or 'unnamed'}, {self.user})"

    def is_usable(self, now=None) -> bool:
        now = now or timezone.now()
        return (
            self.revoked is None
            and (self.expires is None or self.expires > now)
            and self.user.is_active
        )


class Watchlist(models.Model):
    """A user's dashboard watchlist: an ordered list of tickers (accounts.services)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="watchlist"
    )
    # Well-formed, distinct tickers in the user's order, at most MAX_SYMBOLS_PER_CONNECTION;
    # accounts.services.save_watchlist is the one writer and checks all three.
    symbols = models.JSONField(default=list)
    updated = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"watchlist of {self.user}"
