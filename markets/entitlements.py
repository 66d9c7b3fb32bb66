"""Who may see which symbol: the one home of the entitlement rule.

A symbol is public unless it names a ``required_group`` or a ``required_permission``.
A restricted symbol is visible to superusers, to members of its group and to holders
of its permission (either suffices). A token's rights are its user's. Everything here
is synchronous: async callers run it in a thread and cache the result for a few
seconds (streaming.rights), which bounds how late a revoked right takes effect.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser

from .models import Symbol


@dataclass(frozen=True, slots=True)
class Restriction:
    group_id: int | None
    permission: str | None  # "app_label.codename"


@dataclass(frozen=True, slots=True)
class Rights:
    """What one user may see, read once from the database."""

    superuser: bool
    group_ids: frozenset[int]
    permissions: frozenset[str]

    def allows(self, restriction: Restriction | None) -> bool:
        if restriction is None or self.superuser:
            return True
        return (restriction.group_id is not None and restriction.group_id in self.group_ids) or (
            restriction.permission is not None and restriction.permission in self.permissions
        )


NO_RIGHTS = Rights(superuser=False, group_ids=frozenset(), permissions=frozenset())


def restrictions() -> dict[str, Restriction]:
    """The restriction of every restricted symbol, by ticker (public ones are absent)."""
    rows = Symbol.objects.filter(required_group__isnull=False) | Symbol.objects.filter(
        required_permission__isnull=False
    )
    out = {}
    for ticker, group_id, app_label, codename in rows.values_list(
        "ticker",
        "required_group_id",
        "required_permission__content_type__app_label",
        "required_permission__codename",
    ):
        permission = f"{app_label}.{codename}" if codename else None
        out[ticker] = Restriction(group_id=group_id, permission=permission)
    return out


def rights_of(user: AbstractBaseUser | None) -> Rights:
    """The rights of ``user`` as the database says now (anonymous: none)."""
    if user is None or not user.is_authenticated or not user.is_active:
        return NO_RIGHTS
    # get_user_model, not type(user): request.user is a lazy wrapper.
    fresh = get_user_model()._default_manager.filter(pk=user.pk, is_active=True).first()
    if fresh is None:
        return NO_RIGHTS
    return Rights(
        superuser=fresh.is_superuser,
        group_ids=frozenset(fresh.groups.values_list("id", flat=True)),
        permissions=frozenset(fresh.get_all_permissions()),
    )


def unentitled(
    pairs: Iterable[tuple[AbstractBaseUser, str]],
    *,
    restricted: Mapping[str, Restriction] | None = None,
) -> set[tuple[int, str]]:
    """Those (user, ticker) pairs whose user may not see the ticker now, as (user pk,
    ticker): the restrictions read once (unless given) and each user's rights once."""
    restricted = restrictions() if restricted is None else restricted
    rights: dict[int, Rights] = {}
    out: set[tuple[int, str]] = set()
    for user, ticker in pairs:
        restriction = restricted.get(ticker)
        if restriction is None:
            continue
        if user.pk not in rights:
            rights[user.pk] = rights_of(user)
        if not rights[user.pk].allows(restriction):
            out.add((user.pk, ticker))
    return out


def forbidden_tickers(*, user: AbstractBaseUser | None, tickers: Iterable[str]) -> list[str]:
    """Those of ``tickers`` that ``user`` may not see, in the order given."""
    restricted = restrictions()
    wanted = [t for t in tickers if t in restricted]
    if not wanted:
        return []
    rights = rights_of(user)
    return [t for t in wanted if not rights.allows(restricted[t])]
