from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models

from .symbols import SYMBOL_MAX_LENGTH, SYMBOL_PATTERN


class AssetClass(models.TextChoices):
    CRYPTO = "crypto", "Crypto"
    EQUITY = "equity", "Equity"
    FX = "fx", "FX"


class FeedSource(models.TextChoices):
    """Where a symbol's ticks come from (feeds/sources/<name>.py; docs/feeds.md)."""

    SIMULATED = "simulated", "Simulated"
    REPLAY = "replay", "Replay a file"
    COINBASE = "coinbase", "Coinbase Exchange"
    BINANCE = "binance", "Binance spot"


# The options each source reads from Symbol.source_options, with their JSON types.
# feeds.sources applies the defaults and checks what only it can (a file that exists).
SOURCE_OPTIONS: dict[str, dict[str, tuple[type, ...]]] = {
    FeedSource.SIMULATED: {},
    FeedSource.REPLAY: {
        "file": (str,),
        "format": (str,),
        "speed": (int, float),
        "loop": (bool,),
        "symbol": (str,),
    },
    FeedSource.COINBASE: {"product_id": (str,)},
    FeedSource.BINANCE: {"symbol": (str,)},
}
REPLAY_FORMATS = ("auto", "csv", "ndjson", "binance")


def source_options_errors(source: str, options: object) -> list[str]:
    """What is wrong with ``options`` for ``source``; empty when they are usable."""
    if source not in SOURCE_OPTIONS:
        return [f"unknown source {source!r}"]
    if not isinstance(options, dict):
        return ["source options must be a JSON object"]
    allowed = SOURCE_OPTIONS[source]
    errors = []
    for key, value in options.items():
        if key not in allowed:
            names = ", ".join(allowed) or "none"
            errors.append(f"{source} takes no option {key!r} (options: {names})")
        elif not isinstance(value, allowed[key]) or (
            bool not in allowed[key] and isinstance(value, bool)
        ):
            errors.append(f"option {key!r} has the wrong type")
    if source == FeedSource.REPLAY:
        if not options.get("file"):
            errors.append("replay needs a file")
        speed = options.get("speed", 1)
        if isinstance(speed, int | float) and not 0 < speed <= 1_000_000:
            errors.append("speed must be above 0 and at most 1000000")
        if options.get("format", "auto") not in REPLAY_FORMATS:
            errors.append(f"format must be one of {', '.join(REPLAY_FORMATS)}")
    return errors


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
    # Entitlements (markets.entitlements): public when both are empty; otherwise only
    # users in the group or holding the permission (or superusers) may see its prices.
    required_group = models.ForeignKey(
        "auth.Group",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Only members of this group may see this symbol.",
    )
    required_permission = models.ForeignKey(
        "auth.Permission",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Only users with this permission may see this symbol.",
    )
    # The feed (feeds/) produces the symbol from this source; a change is picked up by
    # the producing worker within seconds, and seq carries on.
    source = models.CharField(
        max_length=16, choices=FeedSource.choices, default=FeedSource.SIMULATED
    )
    source_options = models.JSONField(
        default=dict,
        blank=True,
        help_text="Settings of the source, see docs/feeds.md.",
    )

    class Meta:
        ordering = ["ticker"]

    def __str__(self) -> str:
        return self.ticker

    def clean(self) -> None:
        super().clean()
        errors = source_options_errors(self.source, self.source_options)
        if errors:
            raise ValidationError({"source_options": errors})


class CandleInterval(models.TextChoices):
    """Intervals whose closed candles are persisted (1s candles live in Redis only)."""

    ONE_MINUTE = "1m", "1 minute"
    FIVE_MINUTES = "5m", "5 minutes"
    ONE_HOUR = "1h", "1 hour"


class Candle(models.Model):
    """A closed OHLCV candle copied from Redis by markets.tasks.persist_candles."""

    symbol = models.ForeignKey(Symbol, on_delete=models.CASCADE, related_name="candles")
    interval = models.CharField(max_length=3, choices=CandleInterval.choices)
    start = models.DateTimeField(help_text="Start of the bucket (inclusive), UTC.")
    open = models.DecimalField(max_digits=20, decimal_places=8)
    high = models.DecimalField(max_digits=20, decimal_places=8)
    low = models.DecimalField(max_digits=20, decimal_places=8)
    close = models.DecimalField(max_digits=20, decimal_places=8)
    volume = models.DecimalField(max_digits=30, decimal_places=8)
    tick_count = models.PositiveIntegerField()
    first_seq = models.BigIntegerField()
    last_seq = models.BigIntegerField()

    class Meta:
        ordering = ["symbol", "interval", "start"]
        constraints = [
            # Also the index behind every range read (symbol, interval, start).
            models.UniqueConstraint(
                fields=["symbol", "interval", "start"], name="candle_unique_bucket"
            )
        ]

    def __str__(self) -> str:
        return f"{self.symbol_id} {self.interval} {self.start:%Y-%m-%d %H:%M}"
