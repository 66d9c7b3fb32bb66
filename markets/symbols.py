"""What a symbol may look like, and the channel-layer group that carries its ticks.

This module is the single home of both rules: nothing else builds a group name.
"""

import re

SYMBOL_MAX_LENGTH = 20
SYMBOL_PATTERN = re.compile(rf"[A-Z0-9._-]{{1,{SYMBOL_MAX_LENGTH}}}")
GROUP_PREFIX = "ticks."


class InvalidSymbol(ValueError):
    """Raised for a string that is not a well-formed ticker."""


def is_valid_symbol(value: object) -> bool:
    return isinstance(value, str) and SYMBOL_PATTERN.fullmatch(value) is not None


def symbol_group_name(symbol: str) -> str:
    """The channel-layer group for one symbol's ticks, e.g. ``ticks.BTC-USD``."""
    if not is_valid_symbol(symbol):
        # Never let a hostile string near the channel layer's key space.
        raise InvalidSymbol(f"not a valid symbol: {symbol!r}")
    return GROUP_PREFIX + symbol
