"""API tokens on the REST API of a real ASGI server (uvicorn, as `make run` starts it),
with WS_REQUIRE_AUTH=1: real sockets, a real SQLite file, tokens made by the real
issue_token command and revoked as the admin does it.

No feed runs: these tests are about who may call what, not about prices.
"""

import http.client
import http.cookiejar
import json
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest

from tests.clienthelpers import issued_token
from tests.realstack import BASE_DIR, RealStack
from tests.test_api_live import SCHEMATHESIS_TIMEOUT, run_schemathesis

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SETUP = """
from django.contrib.auth.models import Group, User
from markets.models import Symbol
pro = Group.objects.create(name="pro")
Symbol.objects.filter(ticker="DOGE-USD").update(required_group=pro)
User.objects.create_user("alice").groups.add(pro)
User.objects.create_user("bob")
User.objects.create_user("fuzz")
from django.contrib.auth.models import Permission
staffer = User.objects.create_user("staffer", password=PASSWORD, is_staff=True)
staffer.user_permissions.add(
    *Permission.objects.filter(codename__in=["add_apitoken", "view_apitoken"])
)
User.objects.create_superuser("admin", password=PASSWORD)
"""
PASSWORD = "correct horse battery staple"


def manage(stack: RealStack, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        env=stack.env, cwd=BASE_DIR, check=check, capture_output=True, text=True,
    )  # fmt: skip


def request(
    stack: RealStack, path: str, *, token: str | None = None, method: str = "GET", body=None
) -> tuple[int, dict, dict]:
    """Status, JSON body and headers of one request to the live server."""
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(stack.http_url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = RealStack(tmp_path_factory.mktemp("auth-api"), WS_REQUIRE_AUTH="1")
    stack.prepare_database()
    try:
        stack.shell(SETUP.replace("PASSWORD", repr(PASSWORD)))
        stack.start_web()
        yield stack
    finally:
        stack.stop_all()


def test_issue_token_prints_the_token_last_and_refuses_unknown_users(stack):
    run = manage(stack, "issue_token", "alice", "--name", "cli", "--expires-days", "30")
    token = run.stdout.strip().splitlines()[-1]
    assert token.startswith("tk_") and len(token) > 40
    assert token[:8] in run.stderr and "shown only now" in run.stderr
    status, me, _ = request(stack, "/api/me/", token=token)
    assert status == 200
    assert me["username"] == "alice" and me["token"]["name"] == "cli"
    assert me["token"]["expires"] is not None

    unknown = manage(stack, "issue_token", "nobody", check=False)
    assert unknown.returncode != 0
    assert "unknown user: 'nobody'" in unknown.stderr and unknown.stdout == ""


def test_a_valid_token_is_served_and_anything_else_is_401(stack):
    token = issued_token(stack, "bob")
    for path in ("/api/symbols/", "/api/symbols/BTC-USD/", "/api/symbols/BTC-USD/ticks",
                 "/api/symbols/BTC-USD/candles?interval=1m", "/api/me/watchlist"):  # fmt: skip
        status, body, _ = request(stack, path, token=token)
        assert status == 200, (path, body)
        status, body, headers = request(stack, path)
        assert status == 401 and body["code"] == "unauthorized", (path, body)
        assert headers["www-authenticate"] == 'Bearer realm="ticker"'
        status, body, _ = request(stack, path, token="tk_" + "A" * 43)
        assert status == 401 and body["code"] == "unauthorized", (path, body)
    # Always open: the health probe (503 here: no feed runs) and the schema.
    assert request(stack, "/api/health/")[0] == 503
    assert request(stack, "/api/openapi.json")[0] == 200


def test_revoked_and_expired_tokens_are_401(stack):
    revoked = issued_token(stack, "bob", "--name", "rev")
    expired = issued_token(stack, "bob", "--name", "exp")
    for token in (revoked, expired):
        assert request(stack, "/api/symbols/", token=token)[0] == 200
    # As the admin's action and an expiry in the past leave them.
    stack.shell(f"""
from datetime import timedelta
from django.utils import timezone
from accounts.models import ApiToken
from accounts.selectors import token_for_secret
from accounts.services import revoke_token
revoke_token(token=token_for_secret(secret={revoked!r}))
ApiToken.objects.filter(name="exp").update(expires=timezone.now() - timedelta(seconds=1))
""")  # fmt: skip
    for token in (revoked, expired):
        status, body, _ = request(stack, "/api/symbols/", token=token)
        assert status == 401 and "not valid" in body["message"], body


def test_a_restricted_symbol_is_403_for_the_unentitled_and_served_to_the_entitled(stack):
    bob, alice = issued_token(stack, "bob"), issued_token(stack, "alice")
    for path in ("/api/symbols/DOGE-USD/", "/api/symbols/DOGE-USD/ticks",
                 "/api/symbols/DOGE-USD/candles"):  # fmt: skip
        status, body, _ = request(stack, path, token=bob)
        assert status == 403, (path, body)
        assert body["code"] == "forbidden" and body["symbols"] == ["DOGE-USD"]
        assert "not entitled" in body["message"]
        assert request(stack, path, token=alice)[0] == 200, path
    bob_list = [s["ticker"] for s in request(stack, "/api/symbols/", token=bob)[1]]
    alice_list = [s["ticker"] for s in request(stack, "/api/symbols/", token=alice)[1]]
    assert "DOGE-USD" not in bob_list and "DOGE-USD" in alice_list
    assert set(alice_list) - set(bob_list) == {"DOGE-USD"}


def test_the_watchlist_is_saved_per_user(stack):
    alice, bob = issued_token(stack, "alice"), issued_token(stack, "bob")
    status, body, _ = request(
        stack, "/api/me/watchlist", token=alice, method="PUT", body={"symbols": ["NVDA", "SOL-USD"]}
    )
    assert status == 200 and body["symbols"] == ["NVDA", "SOL-USD"]
    assert request(stack, "/api/me/watchlist", token=alice)[1]["symbols"] == ["NVDA", "SOL-USD"]
    assert request(stack, "/api/me/watchlist", token=bob)[1]["symbols"] != ["NVDA", "SOL-USD"]
    status, body, _ = request(
        stack, "/api/me/watchlist", token=alice, method="PUT", body={"symbols": ["no good"]}
    )
    assert status == 422 and body["code"] == "bad_request"


@pytest.mark.timeout(SCHEMATHESIS_TIMEOUT + 180)  # the stack's start-up may be in it
def test_schemathesis_with_a_token_where_auth_is_required(stack, tmp_path):
    """Every operation with a valid token; ignored_auth checks each refuses one without.

    /api/health/ is left out: without a feed it is rightly 503 here (test_api_live.py
    covers it with one).
    """
    run = run_schemathesis(
        f"{stack.http_url}/api/openapi.json",
        tmp_path,
        token=issued_token(stack, "fuzz"),
        max_examples=15,
        extra=("--exclude-path", "/api/health/"),
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "No issues found" in run.stdout


class Browser:
    """A browser's cookies and CSRF token over real HTTP: sign in, then fill in forms."""

    def __init__(self, stack: RealStack) -> None:
        self.stack = stack
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str) -> tuple[int, str]:
        with self.opener.open(self.stack.http_url + path, timeout=10) as response:
            return response.status, response.read().decode()

    def post(self, path: str, fields: dict) -> tuple[int, str]:
        csrf = next(c.value for c in self.jar if c.name == "csrftoken")
        data = urllib.parse.urlencode({**fields, "csrfmiddlewaretoken": csrf}).encode()
        try:
            with self.opener.open(self.stack.http_url + path, data=data, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def sign_in_to_the_admin(self, username: str) -> None:
        self.get("/admin/login/")
        status, html = self.post(
            "/admin/login/?next=/admin/",
            {"username": username, "password": PASSWORD, "next": "/admin/"},
        )
        assert status == 200 and "Log out" in html, html[:2000]


def user_pk(stack: RealStack, username: str) -> int:
    out = stack.shell(f"""
from django.contrib.auth.models import User
print(User.objects.get(username={username!r}).pk)
""")  # fmt: skip
    return int(out.split()[-1])


def test_a_staff_user_who_may_add_tokens_adds_them_for_themselves_only(stack):
    """issue 20, finding 2: a staffer with only add/view_apitoken chose user=admin on the
    admin's add form, and the token read what only the superuser may."""
    admin, staffer = user_pk(stack, "admin"), user_pk(stack, "staffer")
    browser = Browser(stack)
    browser.sign_in_to_the_admin("staffer")
    status, form = browser.get("/admin/accounts/apitoken/add/")
    assert status == 200
    offered = {int(v) for v in re.findall(r'<option value="(\d+)"', form)}
    assert offered == {staffer}, offered

    add = {"user": admin, "name": "minted", "expires": ""}
    status, html = browser.post("/admin/accounts/apitoken/add/", add)
    assert status == 200 and "token-secret" not in html
    assert "Select a valid choice" in html
    count = stack.shell("""
from accounts.models import ApiToken
print(ApiToken.objects.filter(user__username="admin").count())
""").split()[-1]  # fmt: skip
    assert count == "0"

    status, html = browser.post("/admin/accounts/apitoken/add/", {**add, "user": staffer})
    secret = re.search(r'id="token-secret"[^>]*value="(tk_[^"]+)"', html).group(1)
    status, me, _ = request(stack, "/api/me/", token=secret)
    assert status == 200 and me["username"] == "staffer"
    assert request(stack, "/api/symbols/DOGE-USD/", token=secret)[0] == 403


def from_address(
    stack: RealStack, path: str, *, source: str, headers: dict | None = None
) -> tuple[int, dict]:
    """Status and JSON body of a GET sent from the local address ``source``."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", stack.port, timeout=10, source_address=(source, 0)
    )
    try:
        conn.request("GET", path, headers={"Accept": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_health_tells_anyone_its_verdict_and_staff_or_loopback_its_report(stack):
    """issue 20, finding 6: with WS_REQUIRE_AUTH=1 anyone read the restricted symbols,
    hosts, pids and errors in /api/health/."""
    # Loopback (what /metrics admits): the full report; 503, as no feed runs here.
    status, body = from_address(stack, "/api/health/", source="127.0.0.1")
    assert status == 503 and "DOGE-USD" in body["feed"] and body["problems"], body
    # Another address: the verdict alone. 127.0.0.2 is no proxy uvicorn trusts, so its
    # X-Forwarded-For is not believed; a forged loopback address changes nothing.
    brief = (503, {"status": "degraded"})
    bob, staffer = issued_token(stack, "bob"), issued_token(stack, "staffer")
    for headers in ({}, {"X-Forwarded-For": "127.0.0.1"}, {"Authorization": f"Bearer {bob}"}):
        assert from_address(stack, "/api/health/", source="127.0.0.2", headers=headers) == brief
    # Through a proxy it trusts (loopback), the client's own address is the one judged.
    forwarded = {"X-Forwarded-For": "203.0.113.9"}
    assert from_address(stack, "/api/health/", source="127.0.0.1", headers=forwarded) == brief
    # Staff, from anywhere: the report.
    status, body = from_address(
        stack, "/api/health/", source="127.0.0.2", headers={"Authorization": f"Bearer {staffer}"}
    )
    assert status == 503 and "DOGE-USD" in body["feed"], body
    # The liveness probes stay open to all, and say nothing of symbols.
    status, body = from_address(stack, "/healthz", source="127.0.0.2")
    assert status == 200 and body["status"] == "ok"


# --- Sign-in throttling (django-axes, accounts/throttle.py) and password rules: real
# logins over real sockets, each client from its own loopback address (127.0.1.x; uvicorn
# trusts X-Forwarded-For from 127.0.0.1 only, so each is its own client address).

THROTTLED = """
from django.contrib.auth.models import User
for name in ("carol", "dave", "erin"):
    User.objects.create_user(name, password={password!r}, is_staff=name == "erin")
User.objects.create_superuser("root2", password={password!r})
"""
LIMIT = 5  # LOGIN_FAILURE_LIMIT's default


class FormClient:
    """One browser at one client address: a login page's cookie and form, then a POST."""

    def __init__(self, stack: RealStack, source: str) -> None:
        self.stack, self.source = stack, source
        self.cookies: dict[str, str] = {}

    def send(self, method: str, path: str, fields: dict | None = None) -> tuple[int, str]:
        conn = http.client.HTTPConnection(
            "127.0.0.1", self.stack.port, timeout=10, source_address=(self.source, 0)
        )
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        body = None
        if fields is not None:
            body = urllib.parse.urlencode(fields)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            for header in response.headers.get_all("Set-Cookie") or ():
                name, _, rest = header.partition("=")
                self.cookies[name] = rest.split(";", 1)[0]
            return response.status, response.read().decode()
        finally:
            conn.close()

    def sign_in(self, path: str, username: str, password: str) -> tuple[int, str]:
        """GET the login page at ``path``, then POST the form: 302 signed in, 200 refused,
        429 locked out."""
        status, html = self.send("GET", path)
        assert status == 200, html[:500]
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
        fields = {"username": username, "password": password, "csrfmiddlewaretoken": token}
        return self.send("POST", path, {**fields, "next": "/"})


@pytest.fixture(scope="module")
def throttled_users(stack):
    stack.shell(THROTTLED.format(password=PASSWORD))


@pytest.fixture
def throttling(stack, throttled_users):
    """Every lock lifted after the test, as an operator would (`manage.py axes_reset`)."""
    yield
    stack.call_command("axes_reset")


@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
def test_failed_sign_ins_lock_the_account_from_any_address_until_reset(stack, throttling, path):
    """issue 20, finding 5: 40 wrong passwords in 16 s all answered 200, then the right
    one signed in; on the admin's login too."""
    account = "carol" if path == "/accounts/login/" else "erin"
    for i in range(LIMIT - 1):
        status, html = FormClient(stack, f"127.0.1.{10 + i}").sign_in(path, account, "wrong")
        assert status == 200, (i, html[:500])
    # The LIMIT-th failure, from yet another address, locks the account ...
    status, html = FormClient(stack, "127.0.1.20").sign_in(path, account, "wrong")
    assert status == 429 and "Too many sign-in attempts" in html, html[:500]
    assert "Try again in 15 minutes" in html
    # ... everywhere: the right password from a fresh address is refused as well.
    status, html = FormClient(stack, "127.0.1.21").sign_in(path, account, PASSWORD)
    assert status == 429, html[:500]
    # Another account from that address is not affected.
    status, _ = FormClient(stack, "127.0.1.21").sign_in(path, "root2", PASSWORD)
    assert status == 302

    # The documented reset lifts it.
    stack.call_command("axes_reset_username", account)
    status, _ = FormClient(stack, "127.0.1.21").sign_in(path, account, PASSWORD)
    assert status == 302


def test_failed_sign_ins_lock_the_address_out_for_every_account(stack, throttling):
    client = FormClient(stack, "127.0.1.30")
    # Guessing across accounts, known or not, is counted per address too.
    for username in ("carol", "dave", "nobody", "root2", "someone")[: LIMIT - 1]:
        assert client.sign_in("/accounts/login/", username, "wrong")[0] == 200
    status, html = client.sign_in("/accounts/login/", "nobody-else", "wrong")
    assert status == 429, html[:500]
    # From there no account signs in, a right password included, nor on the admin.
    assert client.sign_in("/accounts/login/", "dave", PASSWORD)[0] == 429
    assert client.sign_in("/admin/login/", "root2", PASSWORD)[0] == 429
    # Another address is not affected.
    assert FormClient(stack, "127.0.1.31").sign_in("/accounts/login/", "dave", PASSWORD)[0] == 302

    stack.call_command("axes_reset_ip", "127.0.1.30")
    assert client.sign_in("/accounts/login/", "dave", PASSWORD)[0] == 302


def test_signing_in_to_ones_own_account_clears_no_count(stack, throttling):
    """An attacker who holds an account signs in to it between guesses: were a success to
    clear its address's attempts, it would clear the guessed account's too."""
    attacker = FormClient(stack, "127.0.1.40")
    for _ in range(LIMIT - 1):
        assert attacker.sign_in("/accounts/login/", "dave", "wrong")[0] == 200
    assert attacker.sign_in("/accounts/login/", "root2", PASSWORD)[0] == 302
    # dave's LIMIT-th failure, from anywhere, still locks dave.
    assert FormClient(stack, "127.0.1.41").sign_in("/accounts/login/", "dave", "wrong")[0] == 429


def test_passwords_set_in_the_admin_must_pass_the_validators(stack, throttled_users):
    """Django's validators (AUTH_PASSWORD_VALIDATORS): length, common, numeric, similar."""
    admin = FormClient(stack, "127.0.1.50")
    assert admin.sign_in("/admin/login/", "root2", PASSWORD)[0] == 302
    _, form = admin.send("GET", "/admin/auth/user/add/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)

    def add(username: str, password: str) -> tuple[int, str]:
        return admin.send(
            "POST",
            "/admin/auth/user/add/",
            {
                "csrfmiddlewaretoken": token,
                "username": username,
                "usable_password": "true",
                "password1": password,
                "password2": password,
                "_save": "Save",
            },
        )

    refusals = {
        "short1x": "too short",
        "password1234": "too common",
        "9081726354": "entirely numeric",
        "frankiefrank": "too similar",
    }
    for password, why in refusals.items():
        status, html = add("frankiefrank", password)
        assert status == 200 and why in html, (password, html[-3000:])
    status, _ = add("frankiefrank", "plum-ladder-orbit-9")
    assert status == 302
