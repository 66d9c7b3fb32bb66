"""Accounts over HTTP, through Django's full URL and middleware stack: tokens on the REST
API, sessions with CSRF, the watchlist, entitlements, the login pages, the dashboard's
header, the admin and the issue_token command. (tests/test_accounts_live.py repeats the
token checks over a real server.)"""

import re
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from accounts.models import ApiToken, Watchlist
from accounts.selectors import token_for_secret, watchlist_of
from accounts.services import (
    OPERATOR,
    InvalidWatchlist,
    NotPermitted,
    clean_watchlist,
    digest_of,
    issue_token,
    revoke_token,
    save_watchlist,
)
from markets.models import Symbol

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "correct horse battery staple"


@pytest.fixture
def alice(symbols):
    return User.objects.create_user("alice", password=PASSWORD)


@pytest.fixture
def restricted(symbols):
    """DOGE-USD restricted to the group "pro"."""
    pro = Group.objects.create(name="pro")
    Symbol.objects.filter(ticker="DOGE-USD").update(required_group=pro)
    return pro


def bearer(secret: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code and body["message"], body
    return body


# --- services


def test_clean_watchlist_keeps_order_drops_repeats_and_refuses_the_rest(settings):
    assert clean_watchlist(["AAPL", "BTC-USD", "AAPL"]) == ["AAPL", "BTC-USD"]
    assert clean_watchlist([]) == []
    for bad in (["btc-usd"], ["A" * 21], [7], [None], ["<script>"]):
        with pytest.raises(InvalidWatchlist, match="not a valid symbol"):
            clean_watchlist(bad)
    settings.MAX_SYMBOLS_PER_CONNECTION = 3
    assert clean_watchlist(["A", "B", "C", "A"]) == ["A", "B", "C"]
    with pytest.raises(InvalidWatchlist, match="at most 3"):
        clean_watchlist(["A", "B", "C", "D"])


def test_save_watchlist_replaces_the_users_list(alice):
    assert watchlist_of(user=alice) is None
    save_watchlist(user=alice, symbols=["AAPL"])
    save_watchlist(user=alice, symbols=["NVDA", "AAPL"])
    assert watchlist_of(user=alice).symbols == ["NVDA", "AAPL"]
    assert Watchlist.objects.count() == 1


def test_issue_token_with_an_expiry_date(alice):
    at = timezone.now() + timedelta(days=3)
    issued = issue_token(user=alice, by=alice, expires=at)
    assert issued.token.expires == at
    with pytest.raises(ValueError):
        issue_token(user=alice, by=alice, expires=at, expires_days=1)


# --- REST API: tokens and sessions


def test_a_token_authenticates_every_endpoint(alice):
    issued = issue_token(user=alice, by=alice, name="ci")
    client = Client()
    me = client.get("/api/me/", **bearer(issued.secret))
    assert me.status_code == 200
    assert me.json() == {
        "username": "alice",
        "authenticated_by": "token",
        "token": {"name": "ci", "prefix": issued.token.prefix, "expires": None},
    }
    for path in ("/api/symbols/", "/api/symbols/BTC-USD/", "/api/symbols/BTC-USD/ticks"):
        assert client.get(path, **bearer(issued.secret)).status_code == 200, path


@pytest.mark.parametrize("ws_require_auth", [False, True])
def test_a_bad_token_is_401_even_where_anonymous_calls_are_served(alice, settings, ws_require_auth):
    settings.WS_REQUIRE_AUTH = ws_require_auth
    revoked = issue_token(user=alice, by=alice)
    revoke_token(token=revoked.token)
    expired = issue_token(user=alice, by=alice)
    ApiToken.objects.filter(pk=expired.token.pk).update(expires=timezone.now())
    inactive_user = User.objects.create_user("carol", is_active=False)
    inactive = issue_token(user=inactive_user, by=OPERATOR)
    client = Client()
    for header in (
        bearer("tk_" + "x" * 43),
        bearer(revoked.secret),
        bearer(expired.secret),
        bearer(inactive.secret),
        bearer("x" * 500),
        {"HTTP_AUTHORIZATION": "Basic YWxpY2U6cHc="},
        {"HTTP_AUTHORIZATION": "Bearer"},
    ):
        response = client.get("/api/symbols/", **header)
        body = assert_error(response, 401, "unauthorized")
        assert response["WWW-Authenticate"] == 'Bearer realm="ticker"', header
        assert "token" in body["message"] or "Authorization" in body["message"]


def test_a_token_in_the_url_is_not_read(alice, settings):
    settings.WS_REQUIRE_AUTH = True
    issued = issue_token(user=alice, by=alice)
    client = Client()
    for param in ("token", "access_token", "api_key"):
        response = client.get("/api/symbols/", {param: issued.secret})
        assert_error(response, 401, "unauthorized")


def test_ws_require_auth_closes_the_api_to_anonymous_callers_but_not_health_or_docs(
    alice, settings
):
    client = Client()
    assert client.get("/api/symbols/").status_code == 200  # open by default
    settings.WS_REQUIRE_AUTH = True
    for path in (
        "/api/symbols/",
        "/api/symbols/BTC-USD/",
        "/api/symbols/BTC-USD/ticks",
        "/api/symbols/BTC-USD/candles",
        "/api/me/watchlist",
    ):
        body = assert_error(client.get(path), 401, "unauthorized")
        assert "Bearer" in body["message"]
    assert client.get("/api/health/").status_code in (200, 503)
    assert client.get("/api/openapi.json").status_code == 200
    assert client.get("/api/docs").status_code == 200
    client.force_login(alice)
    assert client.get("/api/symbols/").status_code == 200


def test_health_gives_its_report_to_a_staff_session_and_its_verdict_to_others(alice):
    """From an address /metrics does not admit (the live test covers addresses and tokens)."""
    remote = {"REMOTE_ADDR": "203.0.113.9"}
    client = Client()
    assert set(client.get("/api/health/", **remote).json()) == {"status"}
    client.force_login(alice)
    assert set(client.get("/api/health/", **remote).json()) == {"status"}
    client.force_login(User.objects.create_user("staffer", is_staff=True))
    assert "feed" in client.get("/api/health/", **remote).json()


def test_the_schema_says_when_auth_is_optional(settings):
    client = Client()
    schema = client.get("/api/openapi.json").json()
    symbols = schema["paths"]["/api/symbols/"]["get"]["security"]
    assert symbols == [{"TokenAuth": []}, {"SessionAuth": []}, {}]
    assert "security" not in schema["paths"]["/api/health/"]["get"]
    me = schema["paths"]["/api/me/watchlist"]["put"]["security"]
    assert me == [{"TokenAuth": []}, {"SessionAuth": []}]
    schemes = schema["components"]["securitySchemes"]
    assert set(schemes) == {"TokenAuth", "SessionAuth"}
    assert schemes["TokenAuth"]["scheme"] == "bearer"
    settings.WS_REQUIRE_AUTH = True
    schema = client.get("/api/openapi.json").json()
    assert schema["paths"]["/api/symbols/"]["get"]["security"] == [
        {"TokenAuth": []},
        {"SessionAuth": []},
    ]


# --- the watchlist over REST


def test_watchlist_round_trip_with_a_token(alice):
    secret = issue_token(user=alice, by=alice).secret
    client = Client()
    assert client.get("/api/me/watchlist", **bearer(secret)).json() == {
        "symbols": [],
        "updated": None,
    }
    response = client.put(
        "/api/me/watchlist",
        {"symbols": ["NVDA", "AAPL", "NVDA"]},
        content_type="application/json",
        **bearer(secret),
    )
    assert response.status_code == 200, response.content
    assert response.json()["symbols"] == ["NVDA", "AAPL"]
    body = client.get("/api/me/watchlist", **bearer(secret)).json()
    assert body["symbols"] == ["NVDA", "AAPL"] and body["updated"] > 0


def test_watchlist_put_is_validated(alice, settings):
    secret = issue_token(user=alice, by=alice).secret
    client = Client()

    def put(payload):
        return client.put(
            "/api/me/watchlist", payload, content_type="application/json", **bearer(secret)
        )

    for payload in (
        {"symbols": ["btc usd"]},
        {"symbols": ["A" * 21]},
        {"symbols": "AAPL"},
        {"symbols": [1]},
        {},
        {"symbols": [f"S{i}" for i in range(settings.MAX_SYMBOLS_PER_CONNECTION + 1)]},
    ):
        assert_error(put(payload), 422, "bad_request")
    assert watchlist_of(user=alice) is None


def test_watchlist_needs_a_user_even_when_the_api_is_open():
    client = Client()
    assert_error(client.get("/api/me/watchlist"), 401, "unauthorized")
    assert_error(
        client.put("/api/me/watchlist", {"symbols": []}, content_type="application/json"),
        401,
        "unauthorized",
    )


def test_a_session_writes_the_watchlist_only_with_its_csrf_token(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)  # a signed-in session (axes wants a request to log in)
    assert client.get("/api/me/").json()["authenticated_by"] == "session"
    refused = client.put(
        "/api/me/watchlist", {"symbols": ["AAPL"]}, content_type="application/json"
    )
    assert_error(refused, 403, "csrf_failed")
    assert watchlist_of(user=alice) is None
    # The dashboard page carries the token (and sets the cookie).
    page = client.get("/").content.decode()
    csrf = re.search(r'data-csrf-token="([^"]+)"', page).group(1)
    ok = client.put(
        "/api/me/watchlist",
        {"symbols": ["AAPL"]},
        content_type="application/json",
        HTTP_X_CSRFTOKEN=csrf,
    )
    assert ok.status_code == 200, ok.content
    assert watchlist_of(user=alice).symbols == ["AAPL"]


# --- entitlements on REST


def test_a_restricted_symbol_is_403_and_left_out_of_the_list(alice, restricted):
    bob = User.objects.create_user("bob")
    bob_secret = issue_token(user=bob, by=bob).secret
    alice.groups.add(restricted)
    alice_secret = issue_token(user=alice, by=alice).secret
    client = Client()

    for who in ({}, bearer(bob_secret)):
        listed = [s["ticker"] for s in client.get("/api/symbols/", **who).json()]
        assert "DOGE-USD" not in listed and "BTC-USD" in listed
        for path in (
            "/api/symbols/DOGE-USD/",
            "/api/symbols/DOGE-USD/ticks",
            "/api/symbols/DOGE-USD/candles",
        ):
            body = assert_error(client.get(path, **who), 403, "forbidden")
            assert body["symbols"] == ["DOGE-USD"]
            assert "DOGE-USD" in body["message"]
    anonymous = client.get("/api/symbols/DOGE-USD/").json()["message"]
    assert "sign in" in anonymous
    assert (
        "not entitled"
        in client.get("/api/symbols/DOGE-USD/", **bearer(bob_secret)).json()["message"]
    )

    listed = [s["ticker"] for s in client.get("/api/symbols/", **bearer(alice_secret)).json()]
    assert "DOGE-USD" in listed
    assert client.get("/api/symbols/DOGE-USD/", **bearer(alice_secret)).status_code == 200
    # Unknown stays 404, for everyone.
    assert_error(client.get("/api/symbols/NOPE/", **bearer(bob_secret)), 404, "unknown_symbol")


def test_a_permission_or_superuser_also_entitles(symbols):
    from django.contrib.auth.models import Permission

    perm = Permission.objects.get(codename="view_candle")
    Symbol.objects.filter(ticker="AAPL").update(required_permission=perm)
    holder = User.objects.create_user("holder")
    holder.user_permissions.add(perm)
    root = User.objects.create_superuser("root", password=PASSWORD)
    client = Client()
    for user in (holder, root):
        secret = issue_token(user=user, by=user).secret
        assert client.get("/api/symbols/AAPL/", **bearer(secret)).status_code == 200


# --- login, logout and the dashboard


def test_login_page_logs_in_and_logout_is_a_post(alice):
    client = Client()
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="username"' in html and 'name="password"' in html
    assert "dashboard.css" in html and "account.css" in html
    wrong = client.post("/accounts/login/", {"username": "alice", "password": "nope"})
    assert wrong.status_code == 200 and "login-errors" in wrong.content.decode()
    ok = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert ok.status_code == 302 and ok["Location"] == "/"
    # Signed in already: the login page sends you on.
    assert client.get("/accounts/login/").status_code == 302
    assert client.get("/accounts/logout/").status_code == 405  # never a GET
    out = client.post("/accounts/logout/")
    assert out.status_code == 302 and out["Location"] == "/"
    assert client.get("/api/me/").status_code == 401


@pytest.mark.parametrize("path", ["/", "/accounts/login/"])
def test_pages_have_no_inline_script_or_style(alice, path):
    client = Client()
    client.force_login(alice)
    html = Client().get(path).content.decode() + client.get("/").content.decode()
    assert "style=" not in html
    assert "<style" not in html
    for tag in re.findall(r"<script[^>]*>", html):
        # Only external modules and JSON data islands, never inline code.
        assert "src=" in tag or 'type="application/json"' in tag, tag


def test_dashboard_header_shows_the_user_or_a_sign_in_link(alice, restricted):
    anonymous = Client().get("/").content.decode()
    assert 'id="sign-in"' in anonymous and 'href="/accounts/login/?next=/"' in anonymous
    assert "data-user" not in anonymous and "data-watchlist-url" not in anonymous
    assert '"DOGE-USD"' not in anonymous  # no completion for what you may not watch

    client = Client()
    client.force_login(alice)
    html = client.get("/").content.decode()
    assert '<span id="account-name" class="account-name" title="Signed in">alice</span>' in html
    assert 'action="/accounts/logout/"' in html and 'id="sign-out"' in html
    assert 'data-watchlist-url="/api/me/watchlist"' in html
    alice.groups.add(restricted)
    assert '"DOGE-USD"' in client.get("/").content.decode()


def test_ws_require_auth_sends_the_dashboard_to_the_login_page(alice, settings):
    settings.WS_REQUIRE_AUTH = True
    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"
    login = Client().get(response["Location"]).content.decode()
    assert "Back to the dashboard" not in login
    client = Client()
    client.force_login(alice)
    assert client.get("/").status_code == 200


# --- the admin and the command


def test_admin_shows_a_new_tokens_secret_once_and_revokes(alice):
    User.objects.create_superuser("root", password=PASSWORD)
    client = Client()
    client.force_login(User.objects.get(username="root"))
    response = client.post(
        "/admin/accounts/apitoken/add/", {"user": alice.pk, "name": "laptop", "expires": ""}
    )
    assert response.status_code == 200, response.content[:2000]
    html = response.content.decode()
    secret = re.search(r'id="token-secret"[^>]*value="(tk_[^"]+)"', html).group(1)
    assert "only time its secret is shown" in html
    assert "no-store" in response["Cache-Control"]
    token = ApiToken.objects.get()
    assert (token.user, token.name, token.digest) == (alice, "laptop", digest_of(secret))
    assert token_for_secret(secret=secret) == token

    listing = client.get("/admin/accounts/apitoken/").content.decode()
    change = client.get(f"/admin/accounts/apitoken/{token.pk}/change/").content.decode()
    for page in (listing, change):
        assert token.prefix in page and secret not in page and token.digest not in page

    client.post(
        "/admin/accounts/apitoken/",
        {"action": "revoke_selected", "_selected_action": [token.pk]},
    )
    token.refresh_from_db()
    assert token.revoked is not None
    assert token_for_secret(secret=secret) is None


def test_issuing_a_token_for_someone_else_takes_a_superuser_or_the_permission(alice):
    from django.contrib.auth.models import Permission

    root = User.objects.create_superuser("root", password=PASSWORD)
    staffer = User.objects.create_user("staffer", is_staff=True)
    for user in (alice, staffer, root):
        assert issue_token(user=user, by=user).token.user == user
    with pytest.raises(NotPermitted):
        issue_token(user=root, by=staffer)
    with pytest.raises(NotPermitted):
        issue_token(user=alice, by=staffer)
    assert issue_token(user=alice, by=root).token.user == alice
    assert issue_token(user=root, by=OPERATOR).token.user == root
    staffer.user_permissions.add(Permission.objects.get(codename="issue_token_for_others"))
    staffer = User.objects.get(pk=staffer.pk)  # its permission cache
    assert issue_token(user=alice, by=staffer).token.user == alice
    with pytest.raises(NotPermitted):  # a token would carry the superuser's rights
        issue_token(user=root, by=staffer)
    assert ApiToken.objects.filter(user=root).count() == 2


def test_symbol_admin_edits_entitlements(restricted):
    root = User.objects.create_superuser("root", password=PASSWORD)
    client = Client()
    client.force_login(root)
    doge = Symbol.objects.get(ticker="DOGE-USD")
    html = client.get(f"/admin/markets/symbol/{doge.pk}/change/").content.decode()
    assert 'name="required_group"' in html and 'name="required_permission"' in html
    listing = client.get("/admin/markets/symbol/").content.decode()
    assert "Required group" in listing and "pro" in listing


def test_issue_token_prints_the_token_last(alice):
    out, err = StringIO(), StringIO()
    call_command(
        "issue_token", "alice", "--name", "ci", "--expires-days", "7", stdout=out, stderr=err
    )
    secret = out.getvalue().strip().splitlines()[-1]
    token = token_for_secret(secret=secret)
    assert token is not None and token.user == alice and token.name == "ci"
    assert timedelta(days=6.99) < token.expires - timezone.now() <= timedelta(days=7)
    assert token.prefix in err.getvalue() and secret not in err.getvalue()

    out = StringIO()
    call_command("issue_token", "alice", stdout=out, stderr=StringIO())
    assert token_for_secret(secret=out.getvalue().strip()).expires is None


def test_issue_token_errors(alice):
    with pytest.raises(CommandError, match="unknown user: 'nobody'"):
        call_command("issue_token", "nobody", stdout=StringIO(), stderr=StringIO())
    User.objects.create_user("gone", is_active=False)
    with pytest.raises(CommandError, match="inactive"):
        call_command("issue_token", "gone", stdout=StringIO(), stderr=StringIO())
    for days in ("0", "-1", "nan", "abc"):
        with pytest.raises(CommandError):
            call_command(
                "issue_token", "alice", "--expires-days", days, stdout=StringIO(), stderr=StringIO()
            )
    assert not ApiToken.objects.exists()
