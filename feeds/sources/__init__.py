"""Sources of ticks, one module each, behind the interface in base.py (docs/feeds.md)."""

from .base import Source, SourceContext, SourceStats, SymbolConfig
from .binance import BinanceSource
from .coinbase import CoinbaseSource
from .replay import ReplaySource
from .simulated import SimulatedSource

SOURCES: dict[str, type[Source]] = {
    cls.name: cls for cls in (SimulatedSource, ReplaySource, CoinbaseSource, BinanceSource)
}


def build_source(config: SymbolConfig, context: SourceContext) -> Source:
    """The source ``config`` names; an unknown name is a KeyError."""
    return SOURCES[config.source](config, context)


__all__ = ["SOURCES", "Source", "SourceContext", "SourceStats", "SymbolConfig", "build_source"]
