"""The Content-Security-Policy in real headless Chromium: nothing on any page violates it.

The stack runs as deployed (DEBUG off, its own SECRET_KEY). Each page records every
`securitypolicyviolation` event from its first script on, and every console message;
the dashboard loads, subscribes, draws a line chart and candles (Plotly adds its style
rules at run time) and answers a hover; the admin, the API docs (Swagger UI) and the
sign-in page are used too.
"""

import secrets
import subprocess
import sys

import pytest

from tests.realstack import BASE_DIR, real_stack
from tests.test_browser_dashboard import (
    BROWSER_TICK_RATE,
    DEFAULT_WATCHLIST,
    PageWatch,
    browser,  # noqa: F401  (a fixture)
    chart_points,
    wait_for_row_ticks,
    wait_until,
)

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.slow]

ADMIN_PASSWORD = secrets.token_urlsafe(16)
# Runs before any page script: keeps every CSP violation the page reports.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__cspViolations.push({
    directive: e.effectiveDirective, blocked: e.blockedURI,
    source: e.sourceFile, line: e.lineNumber, sample: e.sample,
  });
});
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with real_stack(
        tmp_path_factory.mktemp("csp-stack"),
        TICK_RATE=BROWSER_TICK_RATE,
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(50),
    ) as s:
        subprocess.run(
            [sys.executable, "manage.py", "createsuperuser", "--noinput",
             "--username", "admin", "--email", "admin@example.com"],
            env={**s.env, "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD},
            cwd=BASE_DIR, check=True, capture_output=True,
        )  # fmt: skip
        yield s


class CspWatch(PageWatch):
    """PageWatch plus every CSP violation and every console message mentioning the CSP."""

    def __init__(self, page) -> None:
        self.csp_console: list[str] = []
        self.error_locations: list[str] = []
        super().__init__(page)
        page.add_init_script(RECORD_VIOLATIONS)

    def _on_console(self, msg) -> None:
        super()._on_console(msg)
        if msg.type == "error":
            self.error_locations.append(f"{msg.text} at {msg.location.get('url')}")
        if "Content Security Policy" in msg.text or "Content-Security-Policy" in msg.text:
            self.csp_console.append(msg.text)

    def violations(self) -> list:
        recorded = self.page.evaluate("() => window.__cspViolations || null")
        assert recorded is not None, "the violation recorder did not run"
        return [*recorded, *self.csp_console]


@pytest.fixture
def context(browser, stack):  # noqa: F811  (browser is the imported fixture)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    yield context
    context.close()


def test_dashboard_runs_under_the_csp_without_a_violation(context, stack):
    page = context.new_page()
    page.set_default_timeout(20_000)
    watch = CspWatch(page)
    response = page.goto(stack.http_url + "/")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp

    page.wait_for_selector("#conn-badge[data-state='live']")
    wait_until(page, lambda: watch.received("subscribed"), what="subscribed")
    for symbol in DEFAULT_WATCHLIST:
        wait_for_row_ticks(page, symbol)
    before = chart_points(page)
    wait_until(page, lambda: chart_points(page) >= before + 10, 15, "the chart to gain points")

    # Plotly's own style rules went in through CSSOM, into an (allowed) empty <style>.
    plotly_rules = page.evaluate(
        """() => { const s = document.getElementById('plotly.js-style-global');
                   return s && s.sheet ? s.sheet.cssRules.length : -1; }"""
    )
    assert plotly_rules > 0, "Plotly could not add its style rules"
    modebar_shown = page.evaluate(
        """() => { const m = document.querySelector('.modebar');
                   return !!m && getComputedStyle(m).position === 'absolute'; }"""
    )
    assert modebar_shown, "Plotly's modebar is not styled"

    # Hover (Plotly's hover label) and candles with volume.
    box = page.locator("#chart .nsewdrag").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.8, box["y"] + box["height"] / 2)
    page.wait_for_selector("#chart .hoverlayer *", state="attached")
    page.click("#mode-toggle [data-mode='1s']")
    wait_until(
        page,
        lambda: page.evaluate(
            """() => { const d = document.getElementById('chart').data;
                       return d[0].type === 'candlestick' && d[0].x.length >= 2; }"""
        ),
        15,
        "1s candles",
    )

    assert not (v := watch.violations()), v
    assert watch.console_errors == [], watch.error_locations


def test_admin_api_docs_and_sign_in_run_under_the_csp(context, stack):
    page = context.new_page()
    page.set_default_timeout(20_000)
    watch = CspWatch(page)

    # The API docs: Swagger UI from local static files renders the operations.
    response = page.goto(stack.http_url + "/api/docs")
    assert "content-security-policy" in response.headers
    page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)
    page.click(".swagger-ui .opblock-summary >> nth=0")
    page.wait_for_selector(".swagger-ui .opblock-body")
    assert not (v := watch.violations()), v

    # The dashboard's sign-in page.
    page.goto(stack.http_url + "/accounts/login/")
    page.wait_for_selector("form")
    assert not (v := watch.violations()), v

    # The admin: sign in, the index, a change list and a change form.
    page.goto(stack.http_url + "/admin/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", ADMIN_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    assert not (v := watch.violations()), v
    page.goto(stack.http_url + "/admin/markets/symbol/")
    page.wait_for_selector("#result_list")
    page.click("#result_list tbody th a >> nth=0")
    page.wait_for_selector("form")
    assert not (v := watch.violations()), v
    # The admin's pages name no icon, so Chromium asks for /favicon.ico: a 404, no CSP matter.
    errors = [e for e in watch.error_locations if not e.endswith("/favicon.ico")]
    assert errors == []


def test_the_recorder_sees_a_violation(context, stack):
    """The check above is not vacuous: an inline style attribute is reported."""
    page = context.new_page()
    watch = CspWatch(page)
    page.goto(stack.http_url + "/no-such-page/")
    page.evaluate(
        "() => document.body.insertAdjacentHTML('beforeend', '<p style=\"color:red\">x</p>')"
    )
    wait_until(page, lambda: watch.violations(), 5, "a CSP violation to be reported")
    assert any(
        isinstance(v, dict) and v["directive"] == "style-src-attr" for v in watch.violations()
    )
