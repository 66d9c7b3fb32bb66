"""Signing in, the server-side watchlist and refused access, in real headless Chromium
against a real stack (uvicorn + Celery worker and beat + Redis) with WS_REQUIRE_AUTH=1."""

import json

import pytest

from tests.realstack import real_stack
from tests.test_browser_dashboard import (
    BROWSER_TICK_RATE,
    CHROMIUM_ARGS,
    DEFAULT_WATCHLIST,
    PageWatch,
    chromium_or_fail,
    wait_for_row_ticks,
    wait_until,
)

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.slow]

PASSWORD = "a long browser-test password"
SETUP = f"""
from django.contrib.auth.models import Group, User
from markets.models import Symbol
pro = Group.objects.create(name="pro")
Symbol.objects.filter(ticker="DOGE-USD").update(required_group=pro)
User.objects.create_user("alice", password={PASSWORD!r})
"""


def shell(stack, code: str) -> str:
    """Run ``code`` in the stack's database, as an operator's admin change would."""
    imports = (
        "from django.contrib.auth.models import Group, User\n"
        "from django.contrib.sessions.models import Session\n"
    )
    return stack.shell(imports + code)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with real_stack(
        tmp_path_factory.mktemp("login-stack"),
        TICK_RATE=BROWSER_TICK_RATE,
        WS_REQUIRE_AUTH="1",
        ENTITLEMENT_RECHECK_SECONDS="1",
    ) as s:
        s.shell(SETUP)
        yield s


@pytest.fixture(scope="module")
def browser():
    executable = chromium_or_fail()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield b
        b.close()


def new_page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(20_000)
    return context, page, PageWatch(page)


def sign_in(page, stack) -> None:
    """Open the dashboard; WS_REQUIRE_AUTH sends us to the login form, which we fill."""
    page.goto(stack.http_url + "/")
    assert page.url == f"{stack.http_url}/accounts/login/?next=/"
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(stack.http_url + "/")
    page.wait_for_selector("#conn-badge[data-state='live']")


def server_watchlist(context, stack) -> list[str]:
    """The watchlist as the server has it, asked with the browser's own session."""
    response = context.request.get(stack.http_url + "/api/me/watchlist")
    assert response.status == 200, response.text()
    return response.json()["symbols"]


def rows(page) -> list[str]:
    return page.eval_on_selector_all(
        "#watchlist-rows tr", "rows => rows.map(r => r.dataset.symbol)"
    )


def test_sign_in_keep_the_watchlist_on_the_server_and_sign_out(browser, stack):
    # A wrong password is refused on the page itself.
    context, page, watch = new_page(browser)
    page.goto(stack.http_url + "/accounts/login/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "wrong")
    page.click("button[type=submit]")
    assert "correct username and password" in page.text_content(".login-errors")

    sign_in(page, stack)
    assert page.text_content("#account-name") == "alice"
    assert page.is_visible("#sign-out")
    # A first sign-in adopts this browser's list (the default one) and saves it.
    wait_until(page, lambda: server_watchlist(context, stack) == DEFAULT_WATCHLIST,
               what="the first list to be saved")  # fmt: skip
    wait_for_row_ticks(page, "BTC-USD")

    page.fill("#symbol-search", "nvda")
    page.press("#symbol-search", "Enter")
    wait_for_row_ticks(page, "NVDA")
    page.click("tr[data-symbol='MSFT'] .remove")
    expected = [s for s in DEFAULT_WATCHLIST if s != "MSFT"] + ["NVDA"]
    wait_until(page, lambda: server_watchlist(context, stack) == expected,
               what="the edited list on the server")  # fmt: skip
    # This browser's own stored list is still the anonymous one.
    stored = json.loads(page.evaluate("() => localStorage.getItem('ticker.dashboard.v1')"))
    assert stored["symbols"] == DEFAULT_WATCHLIST
    assert watch.unexpected_errors() == []

    # A fresh browser (no localStorage) sees the server's list after signing in.
    other_context, other, other_watch = new_page(browser)
    sign_in(other, stack)
    wait_until(other, lambda: rows(other) == expected, what="the saved list in a fresh browser")
    wait_for_row_ticks(other, "NVDA")
    subscribe = other_watch.sent("subscribe")[0]
    assert subscribe["symbols"] == expected
    assert other_watch.unexpected_errors() == []
    other_context.close()

    # Signing out is a POST from the header; the dashboard then wants a sign-in again.
    page.click("#sign-out")
    page.wait_for_url(f"{stack.http_url}/accounts/login/?next=/")
    assert context.request.get(stack.http_url + "/api/me/").status == 401
    assert watch.unexpected_errors() == []
    context.close()


def test_forbidden_symbols_are_refused_then_withdrawn_then_the_session_is_revoked(browser, stack):
    context, page, watch = new_page(browser)
    sign_in(page, stack)
    wait_for_row_ticks(page, "BTC-USD")

    # Not entitled: the server refuses it, the row goes and a toast says which.
    page.fill("#symbol-search", "DOGE-USD")
    page.press("#symbol-search", "Enter")
    toast = page.wait_for_selector(".toast-error:has-text('Not permitted')")
    assert "DOGE-USD" in toast.text_content()
    wait_until(page, lambda: "DOGE-USD" not in rows(page), what="DOGE-USD to leave the list")
    [error] = watch.received("error")
    assert error["code"] == "forbidden" and error["symbols"] == ["DOGE-USD"]

    # Entitled: it streams. The right withdrawn: the server drops it and we say so.
    shell(stack, "User.objects.get(username='alice').groups.add(Group.objects.get(name='pro'))")
    page.fill("#symbol-search", "DOGE-USD")
    page.press("#symbol-search", "Enter")
    wait_for_row_ticks(page, "DOGE-USD")
    shell(stack, "User.objects.get(username='alice').groups.clear()")
    toast = page.wait_for_selector(".toast-error:has-text('Access withdrawn')")
    assert "DOGE-USD" in toast.text_content()
    wait_until(page, lambda: "DOGE-USD" not in rows(page), what="DOGE-USD to be dropped")
    assert any(m.get("reason") == "forbidden" for m in watch.received("unsubscribed"))
    wait_for_row_ticks(page, "BTC-USD", after=None)

    # Every session ended on the server: the stream closes with 4403, no retrying, and why.
    shell(stack, "Session.objects.all().delete()")
    page.wait_for_selector("#conn-badge[data-state='forbidden']")
    assert page.is_visible("#access-banner")
    assert "closed the price stream" in page.text_content("#access-text")
    assert page.text_content("#access-link") == "Sign in again"
    sockets = len(watch.sockets)
    page.wait_for_timeout(3000)
    assert len(watch.sockets) == sockets  # it did not reconnect by itself
    assert watch.unexpected_errors() == []
    context.close()
