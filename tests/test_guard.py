"""streaming.guard without sockets: rights on subscribe and the periodic recheck."""

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import AnonymousUser, Group, Permission, User

from accounts.services import issue_token, revoke_token
from markets.models import Symbol
from streaming.auth import ANONYMOUS, Identity, identify_token
from streaming.guard import Guard
from streaming.protocol import CloseCode

pytestmark = pytest.mark.usefixtures("async_symbols", "close_hub")


class FakeConnection:
    """What the guard uses of a Connection: identity, subs, books, symbols, unsubscribe,
    send, end."""

    def __init__(self, identity: Identity, symbols: list[str]) -> None:
        self.identity = identity
        self.subs = dict.fromkeys(symbols)
        self.books = None
        self.close_code = None
        self.sent: list[dict] = []

    def symbols(self) -> list[str]:
        return sorted(self.subs)

    def unsubscribe(self, symbols: list[str]) -> None:
        for s in symbols:
            self.subs.pop(s, None)

    def send(self, message: dict) -> None:
        self.sent.append(message)

    def end(self, code: int) -> None:
        self.close_code = code


@sync_to_async
def restrict(ticker: str, *, group: str | None = None, perm: str | None = None) -> None:
    update = {}
    if group:
        update["required_group"] = Group.objects.get_or_create(name=group)[0]
    if perm:
        update["required_permission"] = Permission.objects.get(codename=perm)
    Symbol.objects.filter(ticker=ticker).update(**update)


@sync_to_async
def user_with_token(name: str, *, groups=(), perms=()) -> tuple[User, str]:
    user = User.objects.create(username=name)
    for g in groups:
        user.groups.add(Group.objects.get_or_create(name=g)[0])
    for p in perms:
        user.user_permissions.add(Permission.objects.get(codename=p))
    return user, issue_token(user=user, by=user).secret


async def identity_of(secret: str) -> Identity:
    identity = await sync_to_async(identify_token)(secret)
    assert identity is not None
    return identity


def guard() -> Guard:
    from streaming.known import known_symbols

    # No caching between calls, of rights or of the symbol table: each read is fresh.
    known_symbols().ttl = 0.0
    return Guard(interval=0.0)


async def test_public_symbols_are_allowed_to_anyone_and_restricted_ones_need_the_right():
    await restrict("AAPL", group="nasdaq")
    await restrict("MSFT", perm="view_candle")
    _, member_secret = await user_with_token("member", groups=["nasdaq"])
    _, holder_secret = await user_with_token("holder", perms=["view_candle"])
    g = guard()
    wanted = ["AAPL", "MSFT", "BTC-USD"]
    assert await g.forbidden(ANONYMOUS, wanted) == ["AAPL", "MSFT"]
    assert await g.forbidden(await identity_of(member_secret), wanted) == ["MSFT"]
    assert await g.forbidden(await identity_of(holder_secret), wanted) == ["AAPL"]


async def test_superusers_see_everything():
    await restrict("AAPL", group="nasdaq")
    admin, secret = await user_with_token("root")
    admin.is_superuser = True
    await sync_to_async(admin.save)()
    assert await guard().forbidden(await identity_of(secret), ["AAPL"]) == []


async def test_a_round_closes_revoked_tokens_and_drops_only_lost_symbols():
    await restrict("AAPL", group="nasdaq")
    keeper, keeper_secret = await user_with_token("keeper", groups=["nasdaq"])
    loser, loser_secret = await user_with_token("loser", groups=["nasdaq"])
    g = guard()
    keep = FakeConnection(await identity_of(keeper_secret), ["AAPL", "BTC-USD"])
    lose = FakeConnection(await identity_of(loser_secret), ["AAPL", "BTC-USD"])
    anon = FakeConnection(ANONYMOUS, ["BTC-USD"])
    for c in (keep, lose, anon):
        g.connections.add(c)

    await g.check()
    assert [c.sent for c in (keep, lose, anon)] == [[], [], []]

    await sync_to_async(loser.groups.clear)()
    await g.check()
    assert lose.sent == [
        {"type": "unsubscribed", "id": None, "symbols": ["AAPL"], "reason": "forbidden"}
    ]
    assert list(lose.subs) == ["BTC-USD"] and lose.close_code is None
    assert keep.sent == [] and list(keep.subs) == ["AAPL", "BTC-USD"]

    token = await sync_to_async(lambda: keeper.api_tokens.get())()
    await sync_to_async(revoke_token)(token=token)
    await g.check()
    assert keep.close_code == CloseCode.FORBIDDEN
    assert anon.close_code is None and g.revoked == 1 and g.dropped == 1


async def test_a_deactivated_user_is_closed_and_a_symbol_restricted_later_drops_anonymous_subs():
    user, secret = await user_with_token("leaver")
    g = guard()
    conn = FakeConnection(await identity_of(secret), ["BTC-USD"])
    anon = FakeConnection(Identity(user=AnonymousUser()), ["ETH-USD", "BTC-USD"])
    g.connections.update({conn, anon})
    user.is_active = False
    await sync_to_async(user.save)()
    await restrict("ETH-USD", group="crypto-pro")
    await g.check()
    assert conn.close_code == CloseCode.FORBIDDEN
    assert anon.sent[-1]["symbols"] == ["ETH-USD"] and list(anon.subs) == ["BTC-USD"]


async def test_cached_rights_allow_at_once_but_a_refusal_is_read_fresh():
    await restrict("AAPL", group="nasdaq")
    user, secret = await user_with_token("newcomer")
    identity = await identity_of(secret)
    g = guard()
    g.interval = 3600.0  # the rights, once read, stay cached for the whole test
    assert await g.forbidden(identity, ["AAPL", "BTC-USD"]) == ["AAPL"]

    # Granted after the rights were cached: the refusal is re-read, so it works at once.
    await sync_to_async(lambda: user.groups.add(Group.objects.get(name="nasdaq")))()
    assert await g.forbidden(identity, ["AAPL"]) == []

    # Taken away: an allow from the cache stands until the next round drops it.
    await sync_to_async(user.groups.clear)()
    assert await g.forbidden(identity, ["AAPL"]) == []
    conn = FakeConnection(identity, ["AAPL"])
    g.connections.add(conn)
    await g.check()
    assert list(conn.subs) == [] and conn.sent[-1]["reason"] == "forbidden"
    assert await g.forbidden(identity, ["AAPL"]) == ["AAPL"]
