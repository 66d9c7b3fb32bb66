"""Helpers of the client-library and AsyncAPI tests over a real stack (tests/realstack.py)."""


def shell(stack, code: str) -> str:
    """Run ``code`` in the stack's Django (its own database); what it printed."""
    return stack.shell(code).strip()


def issued_token(stack, username: str, *extra: str) -> str:
    """A token of ``username`` from the issue_token command (in the stack's shell): the
    last line it prints. test_accounts_live.py runs the command as a process of its own."""
    return stack.call_command("issue_token", username, *extra).strip().splitlines()[-1]


USER = """
from django.contrib.auth.models import User, Group
user, _ = User.objects.get_or_create(username={name!r})
"""


def make_token(stack, username: str) -> tuple[str, int]:
    """A new API token of ``username`` (made if need be): (secret, token pk)."""
    out = shell(
        stack,
        USER.format(name=username)
        + "from accounts.services import issue_token\n"
        + "t = issue_token(user=user, by=user, name='test')\n"
        + "print(t.token.pk, t.secret)",
    )
    pk, secret = out.split()[-2:]
    return secret, int(pk)


def revoke_token(stack, pk: int) -> None:
    shell(
        stack,
        "from accounts.models import ApiToken\n"
        "from accounts.services import revoke_token\n"
        f"revoke_token(token=ApiToken.objects.get(pk={pk}))",
    )
