"""tickerproject.gctune: the web process's collector settings."""

import gc

import pytest

from tickerproject.gctune import parse_thresholds, tune


def test_thresholds_are_three_positive_integers_or_default():
    assert parse_thresholds("10000,10,10") == (10000, 10, 10)
    assert parse_thresholds(" 700, 10 ,10") == (700, 10, 10)
    assert parse_thresholds("default") is None
    for bad in ("", "10000", "1,2", "a,b,c", "0,10,10", "1,2,3,4"):
        with pytest.raises(ValueError, match="GC_THRESHOLDS"):
            parse_thresholds(bad)


@pytest.fixture
def restore_gc():
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_tune_freezes_what_is_loaded_and_sets_the_thresholds(settings, restore_gc):
    gc.unfreeze()
    settings.GC_THRESHOLDS = (12345, 11, 9)
    loaded = [object()]  # a list: tracked by the collector
    tune()
    assert gc.get_threshold() == (12345, 11, 9)
    assert gc.get_freeze_count() > 1000
    assert not any(o is loaded for o in gc.get_objects())  # frozen, so no longer walked
    # Cyclic garbage made afterwards is still collected.
    cycle = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1


def test_default_leaves_the_collector_alone(settings, restore_gc):
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    settings.GC_THRESHOLDS = None
    tune()
    assert gc.get_threshold() == (700, 10, 10) and gc.get_freeze_count() == 0
