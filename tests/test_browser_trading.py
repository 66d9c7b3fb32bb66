"""The dashboard as a trader uses it, in real headless Chromium against a real stack:
candle history from the REST API that matches the API candle for candle, the
crosshair readout and session levels, sorting and the keyboard, phone and tablet
layouts (with screenshots), and price alerts delivered to an open dashboard."""

import json
import re
import time

import pytest

from tests.clienthelpers import issued_token
from tests.realstack import real_stack
from tests.test_browser_dashboard import (
    ARTIFACTS,
    BROWSER_TICK_RATE,
    CHROMIUM_ARGS,
    DEFAULT_WATCHLIST,
    STORAGE_KEY,
    PageWatch,
    chromium_or_fail,
    wait_for_row_ticks,
    wait_until,
)

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.slow]

PASSWORD = "a long trading-test password"
TEN = [*DEFAULT_WATCHLIST, "SOL-USD", "NVDA", "TSLA", "GBP-USD", "XAU-USD"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with real_stack(tmp_path_factory.mktemp("trading-stack"), TICK_RATE=BROWSER_TICK_RATE) as s:
        s.shell(
            "from django.contrib.auth.models import User\n"
            f"User.objects.create_user('trader', password={PASSWORD!r})"
        )
        s.token = issued_token(s, "trader")
        s.started_at = time.monotonic()
        yield s


@pytest.fixture(scope="module")
def browser():
    executable = chromium_or_fail()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_page(browser, stack, *, width=1280, height=800, symbols=None, mode="line", **ctx):
    context = browser.new_context(viewport={"width": width, "height": height}, **ctx)
    if symbols is not None:
        prefs = json.dumps({"symbols": symbols, "selected": symbols[0], "mode": mode})
        context.add_init_script(
            f"localStorage.setItem({json.dumps(STORAGE_KEY)}, {json.dumps(prefs)})"
        )
    page = context.new_page()
    page.set_default_timeout(20_000)
    watch = PageWatch(page)
    page.goto(stack.http_url + "/")
    page.wait_for_selector("#conn-badge[data-state='live']")
    return context, page, watch


def api(stack, path: str):
    import urllib.request

    with urllib.request.urlopen(stack.http_url + path, timeout=10) as r:
        return json.loads(r.read())


PAGE_CANDLES = """([symbol, name]) => {
  const s = window.tickerDashboard.store.get(symbol).candles[name];
  return {seeded: s.seeded, lastSeq: s.lastSeq, candles: s.candles};
}"""


def same_candle(page_c: dict, api_c: dict) -> bool:
    return (
        page_c["t"] == api_c["start"]
        and page_c["firstSeq"] == api_c["first_seq"]
        and page_c["lastSeq"] == api_c["last_seq"]
        and page_c["count"] == api_c["ticks"]
        and [page_c[k] for k in ("open", "high", "low", "close")]
        == [api_c[k] for k in ("open", "high", "low", "close")]
        and abs(page_c["volume"] - api_c["volume"]) <= 1e-9 * max(1.0, api_c["volume"])
    )


def compare(page, stack, symbol: str, name: str, interval: str, *, closed_only: bool) -> int:
    """Every page candle of ``name`` that the API also has, equal field for field."""
    state = page.evaluate(PAGE_CANDLES, [symbol, name])
    candles = state["candles"]
    assert candles, f"no {name} candles on the page"
    served = api(
        stack,
        f"/api/symbols/{symbol}/candles?interval={interval}&start={candles[0]['t']}&limit=1000",
    )["candles"]
    by_start = {c["start"]: c for c in served}
    compared = 0
    # A series built from ticks alone begins with the snapshot's oldest tick, mid-bucket:
    # its first candle is partial by construction.
    for c in candles if state["seeded"] else candles[1:]:
        a = by_start.get(c["t"])
        if a is None or (closed_only and not a["closed"]) or a["last_seq"] > state["lastSeq"]:
            continue  # the API has ticks the page had not seen when it was read
        assert same_candle(c, a), (name, c, a)
        compared += 1
    return compared


def test_timeframes_load_history_and_match_the_api(browser, stack):
    # Let the stack build some history before the page opens.
    time.sleep(max(0, 8 - (time.monotonic() - stack.started_at)))
    context, page, watch = open_page(browser, stack, symbols=["BTC-USD", "ETH-USD"], mode="1m")
    try:
        symbol = "BTC-USD"
        opened_at = time.time() * 1000
        wait_until(page, lambda: page.evaluate(PAGE_CANDLES, [symbol, "1m"])["seeded"],
                   what="1m history from the API")  # fmt: skip
        # Every timeframe in turn: the ones with server history load it, the stream goes on.
        seq = wait_for_row_ticks(page, symbol)
        for mode in ["1s", "5s", "5m", "1h", "1D", "line", "1m"]:
            page.click(f"#mode-toggle [data-mode='{mode}']")
            page.wait_for_function(
                f"() => document.getElementById('chart-panel').dataset.mode === '{mode}'"
            )
            if mode in ("5m", "1h", "1D"):
                wait_until(page, lambda m=mode: page.evaluate(PAGE_CANDLES, [symbol, m])["seeded"],
                           what=f"{mode} history")  # fmt: skip
                wait_until(page, lambda: page.evaluate(
                    "() => document.getElementById('chart').data?.[0]?.type === 'candlestick'"),
                    what=f"{mode} candles drawn")  # fmt: skip
        seq = wait_for_row_ticks(page, symbol, after=seq)
        stats = page.evaluate("() => window.tickerDashboard.client.stats")
        # Switching sends nothing to the server: one subscribe of the ticks per socket (a
        # busy machine may see a 4008 and a resume, which the client handles) and one of
        # the selected symbol's book, and no gap.
        assert stats["gaps"] == 0
        subscribes = watch.sent("subscribe")
        books = [c for c in subscribes if "book" in c.get("streams", [])]
        assert len(subscribes) - len(books) == len(watch.sockets) == len(books)
        assert watch.sent("unsubscribe") == []

        # History + live agree with the API for the timeframes the server keeps.
        for name in ("5m", "1h"):
            assert compare(page, stack, symbol, name, name, closed_only=False) >= 0
        # 1s: built from the snapshot and live ticks, every closed second equal.
        page.wait_for_timeout(3000)
        assert compare(page, stack, symbol, "1s", "1s", closed_only=True) >= 3
        # 1m: wait for the minute that was forming when the page opened to close; it was
        # built from the API's partial candle plus live ticks.
        minute_end = opened_at - opened_at % 60000 + 60000
        wait_until(page, lambda: time.time() * 1000 > minute_end + 2500, 75,
                   "the page's first minute to close")  # fmt: skip
        state = page.evaluate(PAGE_CANDLES, [symbol, "1m"])
        assert any(c["t"] == minute_end - 60000 for c in state["candles"])
        assert compare(page, stack, symbol, "1m", "1m", closed_only=True) >= 1
        # 1D: the session day, rolled up from the API's hours.
        day = page.evaluate(PAGE_CANDLES, [symbol, "1D"])["candles"][-1]
        hours = api(stack, f"/api/symbols/{symbol}/candles?interval=1h&start={day['t']}")["candles"]
        assert day["open"] == hours[0]["open"] and day["firstSeq"] == hours[0]["first_seq"]
        assert watch.console_errors == []
    finally:
        context.close()


def test_crosshair_readout_session_levels_sort_and_keyboard(browser, stack):
    context, page, watch = open_page(browser, stack, symbols=TEN, mode="1m")
    try:
        for symbol in TEN:
            wait_for_row_ticks(page, symbol)
        page.wait_for_function("() => document.getElementById('sel-session').textContent")
        assert re.search(
            r"Session \(UTC day\) O [\d,.]+ +H [\d,.]+ +L", page.text_content("#sel-session")
        )
        wait_until(page, lambda: page.evaluate(
            "() => (document.getElementById('chart').layout?.shapes ?? []).length === 3"),
            what="session levels on the chart")  # fmt: skip
        # The crosshair: hovering a candle shows its OHLCV.
        box = page.locator("#chart .nsewdrag").first.bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.97, box["y"] + box["height"] * 0.5)
        page.wait_for_function(
            "() => /O .*H .*L .*C .*V /.test(document.getElementById('readout').textContent)"
        )
        spikes = page.evaluate("() => document.getElementById('chart').layout.xaxis.showspikes")
        assert spikes is True

        # Sort by change % (descending), then by symbol.
        page.click(".wl-table th[data-sort='change'] button")
        assert page.get_attribute(".wl-table th[data-sort='change']", "aria-sort") == "descending"
        # Prices move on: re-sort and read the rows and their values in one go.
        order, pcts = page.evaluate(
            """() => { const d = window.tickerDashboard; d._resort();
                       const rows = [...document.querySelectorAll('#watchlist-rows tr')]
                         .map(r => r.dataset.symbol);
                       return [rows, rows.map(s => d.store.get(s).changePct)]; }"""
        )
        known = [p for p in pcts if p is not None]
        assert known == sorted(known, reverse=True) and pcts[: len(known)] == known
        page.click(".wl-table th[data-sort='symbol'] button")
        order = page.eval_on_selector_all(
            "#watchlist-rows tr", "rs => rs.map(r => r.dataset.symbol)"
        )
        assert order == sorted(TEN)
        page.click(".wl-table th[data-sort='volume'] button")
        assert page.get_attribute(".wl-table th[data-sort='volume']", "aria-sort") == "descending"

        # Keyboard: "/" focuses the search, Enter adds; arrows move the selection. The
        # rows go back to the symbol order first: by volume they re-sort as ticks come,
        # so the row below the selection could change between reading and pressing.
        page.click(".wl-table th[data-sort='symbol'] button")
        page.click("#sel-ticker")
        page.keyboard.press("/")
        assert page.evaluate("() => document.activeElement.id") == "symbol-search"
        page.keyboard.type("doge")
        page.keyboard.press("Enter")
        wait_for_row_ticks(page, "DOGE-USD")
        assert page.text_content("#sel-ticker") == "DOGE-USD"
        page.click("#sel-ticker")
        order = page.eval_on_selector_all(
            "#watchlist-rows tr", "rs => rs.map(r => r.dataset.symbol)"
        )
        i = order.index("DOGE-USD")
        page.keyboard.press("ArrowDown")
        assert page.text_content("#sel-ticker") == order[min(i + 1, len(order) - 1)]
        page.keyboard.press("ArrowUp")
        page.keyboard.press("ArrowUp")
        assert page.text_content("#sel-ticker") == order[max(i - 1, 0)]
        assert watch.console_errors == []
    finally:
        context.close()


@pytest.mark.parametrize(("width", "height"), [(390, 844), (768, 1024)])
def test_phone_and_tablet_layouts(browser, stack, width, height):
    context, page, watch = open_page(
        browser, stack, width=width, height=height, symbols=TEN, mode="1m",
        is_mobile=width < 600, has_touch=width < 600, device_scale_factor=2 if width < 600 else 1,
    )  # fmt: skip
    try:
        for symbol in TEN:
            wait_for_row_ticks(page, symbol)
        # No sideways scrolling, and every row shows its whole symbol and last price.
        assert page.evaluate("() => document.documentElement.scrollWidth") <= width
        cells = page.evaluate(
            """() => [...document.querySelectorAll('#watchlist-rows tr')].map(tr => {
                const over = (el) => el.scrollWidth > el.clientWidth + 1;
                const t = tr.querySelector('.c-sym .ticker'), l = tr.querySelector('.c-last');
                const tb = t.getBoundingClientRect(), lb = l.getBoundingClientRect();
                const sym = tr.querySelector('.c-sym').getBoundingClientRect();
                return {symbol: tr.dataset.symbol, ticker: t.textContent, tw: tb.width,
                        tRight: tb.right, symRight: sym.right,
                        last: l.textContent, lw: lb.width, lRight: lb.right,
                        clipped: l.scrollWidth > l.clientWidth + 1,
                        pctClipped: over(tr.querySelector('.c-pct'))};
            })"""
        )
        assert [c["symbol"] for c in cells] == TEN
        for c in cells:
            assert c["ticker"] == c["symbol"] and c["tw"] > 20, c
            assert c["tRight"] <= c["symRight"] + 0.5, f"{c['symbol']} is cut off: {c}"
            assert re.fullmatch(r"[\d,]+\.\d+", c["last"]) and not c["clipped"], c
            assert not c["pctClipped"], c
            assert c["lRight"] <= width, c
        # The chart stacks below the list.
        wl = page.locator(".watchlist").bounding_box()
        chart = page.locator("#chart-panel").bounding_box()
        assert chart["y"] >= wl["y"] + wl["height"] - 1
        assert chart["width"] >= width * 0.85
        page.wait_for_function(
            "() => document.getElementById('chart').data?.[0]?.type === 'candlestick'"
        )
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / f"dashboard-{width}x{height}.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 20_000
        assert watch.console_errors == []
    finally:
        context.close()


def sign_in(page, stack) -> None:
    page.goto(stack.http_url + "/accounts/login/?next=/")
    page.fill("input[name=username]", "trader")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(stack.http_url + "/")
    page.wait_for_selector("#conn-badge[data-state='live']")


def rest(stack, method: str, path: str, body=None):
    import urllib.request

    request = urllib.request.Request(
        stack.http_url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {stack.token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read() or b"null")


def test_an_alert_set_over_rest_reaches_the_open_dashboard_as_a_toast(browser, stack):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.grant_permissions(["notifications"], origin=stack.http_url)
    page = context.new_page()
    page.set_default_timeout(20_000)
    watch = PageWatch(page)
    try:
        sign_in(page, stack)
        symbol = "BTC-USD"
        wait_for_row_ticks(page, symbol)
        # Two one-shot alerts a cent either side of the last price: the random walk
        # crosses one of them within a few ticks.
        last = rest(stack, "GET", f"/api/symbols/{symbol}/")["last_price"]
        made = [
            rest(stack, "POST", "/api/alerts/",
                 {"symbol": symbol, "direction": side, "price": round(last + cents, 2)})
            for side, cents in (("above", 0.01), ("below", -0.01))
        ]  # fmt: skip
        toast = page.wait_for_selector(".toast-alert", timeout=30_000)
        assert f"{symbol} crosses" in toast.text_content()
        tick_ts = int(toast.get_attribute("data-tick-ts"))
        shown_at = int(toast.get_attribute("data-shown-at"))
        latency = shown_at - tick_ts
        print(f"\nalert delivery latency (tick ts -> toast): {latency} ms")
        assert latency >= 0
        alert_frames = [f for f in watch.received("alert")]
        assert alert_frames and alert_frames[0]["symbol"] == symbol
        # It is in the history (REST and the panel), once per alert that fired.
        events = rest(stack, "GET", "/api/alerts/history")
        first = min(events, key=lambda e: e["event_id"])
        print(f"evaluator: tick ts -> stored {first['fired_at'] - first['ts']} ms")
        assert events and len({e["alert_id"] for e in events}) == len(events)
        page.wait_for_selector(f"#alert-history li[data-event-id='{events[-1]['event_id']}']")
        # Both may fire, the second between two reads here: the alerts' counts and the
        # history must agree once neither moves (one-shot alerts; bounded).
        made_ids = {m["id"] for m in made}
        deadline = time.monotonic() + 10
        while True:
            alerts = rest(stack, "GET", "/api/alerts/")
            fired = sum(a["fired_count"] for a in alerts if a["id"] in made_ids)
            events = rest(stack, "GET", "/api/alerts/history")
            if fired == len(events) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert fired == len(events), (alerts, events)

        # Set, edit and delete one from the dashboard itself.
        page.fill("#alert-symbol", "ETH-USD")
        page.select_option("#alert-direction", "above")
        # Selecting a symbol on the chart prefills the form, but not over a typed symbol.
        page.evaluate("() => window.tickerDashboard.select('BTC-USD')")
        assert page.input_value("#alert-symbol") == "ETH-USD"
        page.fill("#alert-price", "999999")
        page.click("#alert-add")
        item = page.wait_for_selector("#alert-list li:has(.alert-sym:text('ETH-USD'))")
        alert_id = item.get_attribute("data-alert-id")
        edit = f"#alert-list li[data-alert-id='{alert_id}'] .alert-edit-price"
        page.fill(edit, "888888")
        # The list is redrawn whenever an alert fires (these fire on every crossing): an
        # edit in progress survives it.
        page.evaluate("() => window.tickerDashboard._refreshAlerts()")
        assert page.input_value(edit) == "888888"
        page.click(f"#alert-list li[data-alert-id='{alert_id}'] .alert-save")
        wait_until(page, lambda: rest(stack, "GET", f"/api/alerts/{alert_id}")["price"] == 888888,
                   what="the edit on the server")  # fmt: skip
        page.click(f"#alert-list li[data-alert-id='{alert_id}'] .alert-delete")
        page.wait_for_selector(f"#alert-list li[data-alert-id='{alert_id}']", state="detached")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-alerts.png"))
        assert watch.console_errors == []
    finally:
        context.close()


def test_desktop_screenshot_signed_in_with_candles_and_alerts(browser, stack):
    """Saves test-artifacts/dashboard-desktop.png (docs/img/dashboard.png is one)."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    prefs = json.dumps({"symbols": TEN, "selected": "BTC-USD", "mode": "1m"})
    context.add_init_script(f"localStorage.setItem({json.dumps(STORAGE_KEY)}, {json.dumps(prefs)})")
    page = context.new_page()
    page.set_default_timeout(20_000)
    watch = PageWatch(page)
    try:
        sign_in(page, stack)
        rest(stack, "PUT", "/api/me/watchlist", {"symbols": TEN})
        page.reload()
        page.wait_for_selector("#conn-badge[data-state='live']")
        for symbol in TEN:
            wait_for_row_ticks(page, symbol)
        last = rest(stack, "GET", "/api/symbols/ETH-USD/")["last_price"]
        far = {"symbol": "ETH-USD", "direction": "above", "price": round(last * 1.02, 2)}
        rest(stack, "POST", "/api/alerts/", far)
        page.reload()
        page.wait_for_selector("#conn-badge[data-state='live']")
        for symbol in TEN:
            wait_for_row_ticks(page, symbol)
        page.wait_for_selector("#alert-list li")
        page.wait_for_function("() => document.getElementById('sel-session').textContent")
        box = page.locator("#chart .nsewdrag").first.bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.9, box["y"] + box["height"] * 0.4)
        page.wait_for_timeout(500)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-desktop.png"))
        assert watch.console_errors == []
    finally:
        context.close()
