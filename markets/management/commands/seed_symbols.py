from django.core.management.base import BaseCommand

from markets.services import seed_symbols


class Command(BaseCommand):
    help = "Create the default instrument universe (idempotent)."

    def handle(self, *args, **options) -> None:
        created = seed_symbols()
        self.stdout.write(f"seed_symbols: {created} created")
