import pytest

from markets.symbols import InvalidSymbol, is_valid_symbol, symbol_group_name


@pytest.mark.parametrize("symbol", ["BTC-USD", "AAPL", "BRK.B", "ES_F", "X", "A" * 20])
def test_valid_symbols_name_one_group_each(symbol):
    assert is_valid_symbol(symbol)
    assert symbol_group_name(symbol) == f"ticks.{symbol}"


@pytest.mark.parametrize(
    "symbol",
    ["", "btc-usd", "A" * 21, "BTC USD", "BTC/USD", "ticks.*", "É", "A\n", None, 5, ["AAPL"]],
)
def test_hostile_strings_never_become_group_names(symbol):
    assert not is_valid_symbol(symbol)
    with pytest.raises(InvalidSymbol):
        symbol_group_name(symbol)


def test_group_names_fit_the_channel_layer_rules():
    from channels.layers import BaseChannelLayer

    layer = BaseChannelLayer()
    assert layer.require_valid_group_name(symbol_group_name("A" * 20))
