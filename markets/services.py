"""Writes of market reference data."""

from django.db import transaction

from .models import Symbol
from .universe import DEFAULT_UNIVERSE, Instrument


@transaction.atomic
def seed_symbols(*, instruments: tuple[Instrument, ...] = DEFAULT_UNIVERSE) -> int:
    """Create the instruments that are missing; returns how many were created.

    Existing rows are left alone, so an operator's edits (say, deactivating a
    symbol in the admin) survive a re-seed.
    """
    created = 0
    for inst in instruments:
        _, was_created = Symbol.objects.get_or_create(
            ticker=inst.ticker,
            defaults={
                "name": inst.name,
                "asset_class": inst.asset_class,
                "quote_currency": inst.quote_currency,
                "tick_size": inst.tick_size,
                "start_price": inst.start_price,
                "annual_volatility": inst.annual_volatility,
            },
        )
        created += was_created
    return created
