from decimal import Decimal

from django.core.validators import MinValueValidator, RegexValidator
from django.db import models

from .symbols import SYMBOL_MAX_LENGTH, SYMBOL_PATTERN


class AssetClass(models.TextChoices):
    CRYPTO = "crypto", "Crypto"
    EQUITY = "equity", "Equity"
    FX = "fx", "FX"


class Symbol(models.Model):
    """A tradable instrument the feed prices and clients can subscribe to."""

    ticker = models.CharField(
        max_length=SYMBOL_MAX_LENGTH,
        unique=True,
        validators=[RegexValidator(f"^{SYMBOL_PATTERN.pattern}$")],
    )
    name = models.CharField(max_length=100)
    asset_class = models.CharField(max_length=10, choices=AssetClass.choices)
    quote_currency = models.CharField(max_length=3)
    tick_size = models.DecimalField(
        max_digits=18, decimal_places=8, validators=[MinValueValidator(Decimal("0.00000001"))]
    )
    start_price = models.DecimalField(
        max_digits=18, decimal_places=8, validators=[MinValueValidator(Decimal("0.00000001"))]
    )
    annual_volatility = models.FloatField(
        help_text="Annualised volatility of the simulated feed, e.g. 0.6 for 60%.",
        validators=[MinValueValidator(0.0)],
    )
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["ticker"]

    def __str__(self) -> str:
        return self.ticker
