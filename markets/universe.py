"""The default instrument universe seeded into a fresh database."""

from decimal import Decimal
from typing import NamedTuple


class Instrument(NamedTuple):
    ticker: str
    name: str
    asset_class: str
    quote_currency: str
    tick_size: Decimal
    start_price: Decimal
    annual_volatility: float


def _i(ticker, name, asset_class, quote, tick, price, vol) -> Instrument:
    return Instrument(ticker, name, asset_class, quote, Decimal(tick), Decimal(price), vol)


DEFAULT_UNIVERSE: tuple[Instrument, ...] = (
    _i("BTC-USD", "Bitcoin", "crypto", "USD", "0.01", "97000.00", 0.55),
    _i("ETH-USD", "Ether", "crypto", "USD", "0.01", "3400.00", 0.70),
    _i("SOL-USD", "Solana", "crypto", "USD", "0.01", "180.00", 0.90),
    _i("XRP-USD", "XRP", "crypto", "USD", "0.0001", "1.4000", 0.85),
    _i("ADA-USD", "Cardano", "crypto", "USD", "0.0001", "0.7500", 0.90),
    _i("DOGE-USD", "Dogecoin", "crypto", "USD", "0.00001", "0.38000", 1.10),
    _i("LTC-USD", "Litecoin", "crypto", "USD", "0.01", "95.00", 0.75),
    _i("AAPL", "Apple Inc.", "equity", "USD", "0.01", "232.00", 0.25),
    _i("MSFT", "Microsoft Corp.", "equity", "USD", "0.01", "425.00", 0.24),
    _i("NVDA", "NVIDIA Corp.", "equity", "USD", "0.01", "140.00", 0.50),
    _i("AMZN", "Amazon.com Inc.", "equity", "USD", "0.01", "205.00", 0.32),
    _i("GOOGL", "Alphabet Inc. Class A", "equity", "USD", "0.01", "170.00", 0.30),
    _i("META", "Meta Platforms Inc.", "equity", "USD", "0.01", "560.00", 0.38),
    _i("TSLA", "Tesla Inc.", "equity", "USD", "0.01", "340.00", 0.60),
    _i("JPM", "JPMorgan Chase & Co.", "equity", "USD", "0.01", "245.00", 0.22),
    _i("EUR-USD", "Euro / US Dollar", "fx", "USD", "0.00001", "1.05500", 0.07),
    _i("GBP-USD", "British Pound / US Dollar", "fx", "USD", "0.00001", "1.26500", 0.08),
    _i("USD-JPY", "US Dollar / Japanese Yen", "fx", "JPY", "0.001", "154.500", 0.10),
    _i("USD-CHF", "US Dollar / Swiss Franc", "fx", "CHF", "0.00001", "0.88500", 0.08),
    _i("AUD-USD", "Australian Dollar / US Dollar", "fx", "USD", "0.00001", "0.65200", 0.10),
    _i("USD-CAD", "US Dollar / Canadian Dollar", "fx", "CAD", "0.00001", "1.40000", 0.06),
    _i("XAU-USD", "Gold / US Dollar", "fx", "USD", "0.01", "2650.00", 0.15),
)
