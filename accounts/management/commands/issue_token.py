"""manage.py issue_token USERNAME [--name NAME] [--expires-days N]: prints the token last.

An operator's tool: it issues for any user, as accounts.services.OPERATOR. Whoever can
run it holds the deployment's settings (database, SECRET_KEY) and could run
``createsuperuser`` or ``manage.py shell`` too, so an acting-user option (``--as``)
would be a check that its only users can step round; the admin, reachable from the
network, is where the rule on who may issue for whom matters (accounts.services).
"""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts.services import OPERATOR, issue_token


def positive_days(value: str) -> float:
    days = float(value)
    if not days > 0 or days > 36500:
        raise ValueError(value)
    return days


class Command(BaseCommand):
    help = (
        "Create an API token for a user and print it as the last line. The token is "
        "shown only this once (only its digest is stored)."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="A label to tell tokens apart.")
        parser.add_argument(
            "--expires-days",
            type=positive_days,
            default=None,
            help="Days until the token expires (default: never).",
        )

    def handle(self, *args, username: str, name: str, expires_days: float | None, **options):
        if len(name) > 100:
            raise CommandError("--name is at most 100 characters")
        user_model = get_user_model()
        user = user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username}).first()
        if user is None:
            raise CommandError(
                f"unknown user: {username!r} (create one with createsuperuser or the admin)"
            )
        if not user.is_active:
            raise CommandError(f"user {username!r} is inactive: a token of theirs would not work")
        issued = issue_token(user=user, by=OPERATOR, name=name, expires_days=expires_days)
        expires = issued.token.expires.isoformat() if issued.token.expires else "never"
        self.stderr.write(
            f"Token {issued.token.prefix}… for {username} (name: {name or '-'}, "
            f"expires: {expires}). It is shown only now; store it safely."
        )
        self.stdout.write(issued.secret)
