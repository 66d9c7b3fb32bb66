"""The dashboard's market depth (issue 21) in real headless Chromium over a real stack.

The stack (web server, Celery worker and beat, Redis) runs the simulated source, which
keeps an order book per symbol. The page watches the selected symbol's book over the
WebSocket and checks every frame's prev_seq and checksum; here the ladder, the depth chart
and the trade tape are read back from the page and held against that checked book, at
desktop (1280 px) and phone (390 px) width, with every CSP violation recorded from the
first script on. A symbol switched to a replay (no book) says so in the ladder. Saves
test-artifacts/dashboard-depth-1280x800.png and -390x844.png (the panel alone); the
images in docs/img/ of the same names are such screenshots.
"""

import json
import subprocess
import sys
from decimal import Decimal

import pytest

from tests.realstack import BASE_DIR, real_stack
from tests.test_browser_csp import RECORD_VIOLATIONS
from tests.test_browser_dashboard import (
    ARTIFACTS,
    BROWSER_TICK_RATE,
    DEFAULT_WATCHLIST,
    STORAGE_KEY,
    PageWatch,
    browser,  # noqa: F401  (a fixture)
    wait_until,
)

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.slow]

ETH_SAMPLE = "feeds/samples/eth-usd.ndjson"
LEVELS = 10  # rows per side of the ladder (frontend/static/frontend/ladder-view.js)
# What the page sends for the selected symbol (frontend/static/frontend/app.js).
BOOK_SUBSCRIBE = {"streams": ["ticks", "book"], "depth": 20, "max_rate": 10}

# Everything the three panels show, and the book the page holds, read in one turn of the
# page's event loop, so both are of the same moment.
READ_DEPTH = """() => {
  const d = window.tickerDashboard;
  const symbol = d.prefs.selected;
  const replica = d.client.book(symbol);
  const rows = (id) => [...document.querySelectorAll(`#${id} .lrow:not(.empty)`)].map((r) => ({
    price: r.querySelector('.lp').textContent, size: r.querySelector('.ls').textContent,
    total: r.querySelector('.lt').textContent,
    scale: new DOMMatrix(getComputedStyle(r.querySelector('.lbar')).transform).a,
  }));
  const box = (sel) => { const b = document.querySelector(sel).getBoundingClientRect();
                         return { top: b.top, bottom: b.bottom, left: b.left, right: b.right }; };
  const gd = document.getElementById('depth-chart');
  const tape = [...document.querySelectorAll('#tape-rows .trow:not([hidden])')].map((r) => ({
    seq: Number(r.dataset.seq), side: r.dataset.side, time: r.querySelector('.tt').textContent,
    price: r.querySelector('.tp').textContent, size: r.querySelector('.ts').textContent,
    color: getComputedStyle(r.querySelector('.tp')).color,
  }));
  return {
    symbol, state: document.getElementById('ladder').dataset.state,
    note: document.getElementById('ladder-note').textContent,
    noteShown: !document.getElementById('ladder-note').hidden,
    ladderShown: document.querySelector('.ladder-grid').getClientRects().length > 0,
    depthNote: (n => n.hidden ? null : n.textContent)(document.getElementById('depth-note')),
    asks: rows('ladder-asks').reverse(), bids: rows('ladder-bids'),
    spread: document.getElementById('ladder-spread').textContent,
    mid: document.getElementById('ladder-mid').textContent,
    drawnVersion: d.ladder.version, depthVersion: d.depthChart.drawnVersion,
    book: replica && { version: replica.version, seq: replica.seq, synced: replica.synced,
                       available: replica.available,
                       bids: replica.book.bids, asks: replica.book.asks },
    stats: d.client.stats,
    depth: gd.data ? {
      traces: gd.data.map((t) => ({ x: [...t.x], y: [...t.y], shape: t.line.shape })),
      mid: gd.layout.shapes?.[0]?.x0 ?? null, draws: d.depthChart.draws } : null,
    tape,
    boxes: { chart: box('#chart-panel'), panel: box('#book-panel'), ladder: box('#ladder'),
             depth: box('.book-box.depth'), tape: box('.book-box.tape') },
    scrollWidth: document.documentElement.scrollWidth,
    fontPx: parseFloat(getComputedStyle(document.querySelector('#ladder-bids .lp')).fontSize),
    colors: { up: getComputedStyle(document.body).getPropertyValue('--up').trim(),
              down: getComputedStyle(document.body).getPropertyValue('--down').trim() },
  };
}"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with real_stack(
        tmp_path_factory.mktemp("book-stack"), TICK_RATE=BROWSER_TICK_RATE, SIM_BOOK_RATE="0"
    ) as s:
        # ETH-USD becomes a replay of trades (no book) for the last test; switched now, in
        # the background, so the switch is done by then. Nothing else here selects it.
        s.replay_switch = subprocess.Popen(
            [sys.executable, "manage.py", "feeds", "set", "ETH-USD", "replay",
             "--file", ETH_SAMPLE, "--speed", "5", "--loop"],
            env=s.env, cwd=BASE_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            yield s
        finally:
            s.replay_switch.wait(timeout=60)


class DepthWatch(PageWatch):
    """PageWatch plus the CSP violations the page reported."""

    def __init__(self, page) -> None:
        super().__init__(page)
        page.add_init_script(RECORD_VIOLATIONS)

    def violations(self) -> list:
        recorded = self.page.evaluate("() => window.__cspViolations || null")
        assert recorded is not None, "the violation recorder did not run"
        return recorded


def open_page(browser, stack, *, width: int, height: int, selected: str):  # noqa: F811
    context = browser.new_context(viewport={"width": width, "height": height})
    prefs = json.dumps({"symbols": DEFAULT_WATCHLIST, "selected": selected, "mode": "line"})
    context.add_init_script(f"localStorage.setItem({json.dumps(STORAGE_KEY)}, {json.dumps(prefs)})")
    page = context.new_page()
    page.set_default_timeout(20_000)
    watch = DepthWatch(page)
    response = page.goto(stack.http_url + "/")
    assert "'unsafe-inline'" not in response.headers["content-security-policy"]
    page.wait_for_selector("#conn-badge[data-state='live']")
    return context, page, watch


def read(page) -> dict:
    return page.evaluate(READ_DEPTH)


def drawn(page, *, after: int = 0) -> dict:
    """The panels once the ladder and the depth chart show the book the page holds (the
    one it checked), newer than ``after``. Both redraw in animation frames, the depth
    chart no sooner than 100 ms after its last draw, so this polls for such a moment."""
    return wait_until(
        page,
        lambda: (
            (s := read(page))["state"] == "live"
            and s["book"]["synced"]
            and s["drawnVersion"] == s["depthVersion"] == s["book"]["version"] > after
            and s
        ),
        20,
        f"the ladder to show a book newer than version {after}",
    )


def assert_ladder_is_the_book(s: dict) -> None:
    """The ladder shows the checked book's best levels, its strings as they came, exact
    running totals, bars in proportion to them, and the spread and mid."""
    book_bids, book_asks = s["book"]["bids"], s["book"]["asks"]
    assert len(book_bids) >= LEVELS and len(book_asks) >= LEVELS, s["book"]
    for rows, levels in ((s["bids"], book_bids), (s["asks"], book_asks)):
        assert [[r["price"], r["size"]] for r in rows] == levels[:LEVELS]
        total = Decimal(0)
        for row in rows:
            total += Decimal(row["size"])
            assert Decimal(row["total"]) == total, row
    prices = [Decimal(r["price"]) for r in s["bids"]] + [Decimal(r["price"]) for r in s["asks"]]
    assert prices[:LEVELS] == sorted(prices[:LEVELS], reverse=True)  # bids best first
    assert prices[LEVELS:] == sorted(prices[LEVELS:])  # asks best first
    best_bid, best_ask = Decimal(s["bids"][0]["price"]), Decimal(s["asks"][0]["price"])
    assert best_bid < best_ask
    assert Decimal(s["spread"]) == best_ask - best_bid
    assert Decimal(s["mid"]) == (best_bid + best_ask) / 2
    deepest = max(Decimal(s["bids"][-1]["total"]), Decimal(s["asks"][-1]["total"]))
    for row in s["bids"] + s["asks"]:
        assert abs(row["scale"] - float(Decimal(row["total"]) / deepest)) < 1e-3, row
    assert max(r["scale"] for r in s["bids"] + s["asks"]) == pytest.approx(1, abs=1e-3)


def assert_depth_chart_is_the_book(s: dict) -> None:
    bids, asks = s["book"]["bids"], s["book"]["asks"]
    chart = s["depth"]
    assert chart is not None, "no depth chart"
    bid_trace, ask_trace = chart["traces"]
    assert (bid_trace["shape"], ask_trace["shape"]) == ("vh", "hv")
    assert bid_trace["x"] == sorted(float(p) for p, _ in bids)
    assert ask_trace["x"] == [float(p) for p, _ in asks]
    assert bid_trace["y"][-1] == pytest.approx(float(Decimal(bids[0][1])))
    assert bid_trace["y"][0] == pytest.approx(float(sum(Decimal(q) for _, q in bids)))
    assert ask_trace["y"][-1] == pytest.approx(float(sum(Decimal(q) for _, q in asks)))
    assert bid_trace["x"][-1] < chart["mid"] < ask_trace["x"][0]


def assert_tape(s: dict) -> None:
    tape = s["tape"]
    assert len(tape) >= 5, tape
    seqs = [r["seq"] for r in tape]
    assert seqs == sorted(seqs, reverse=True), seqs  # newest first
    for row in tape:
        assert row["time"].count(":") == 2 and row["price"] and row["size"], row


def test_ladder_depth_chart_and_tape_render_and_update_at_desktop_and_phone_width(browser, stack):  # noqa: F811
    context, page, watch = open_page(browser, stack, width=1280, height=800, selected="BTC-USD")
    try:
        first = drawn(page)
        assert first["symbol"] == "BTC-USD"
        book_commands = [c for c in watch.sent("subscribe") if "streams" in c]
        assert book_commands and all(
            {k: c[k] for k in BOOK_SUBSCRIBE} == BOOK_SUBSCRIBE and c["symbols"] == ["BTC-USD"]
            for c in book_commands
        ), book_commands
        # (A page faster than the producer's first book gets a "no book yet" snapshot first.)
        snapshot = next(f for f in watch.received("book") if f["symbol"] == "BTC-USD" and f["bids"])
        assert snapshot["depth"] == 20 and len(snapshot["bids"]) == 20
        # The ticks were held already: the book's subscribe brought no second tick snapshot.
        tick_snapshots = [f for f in watch.received("snapshot") if f["symbol"] == "BTC-USD"]
        assert 1 <= len(tick_snapshots) <= len(watch.sockets), tick_snapshots
        assert_ladder_is_the_book(first)
        assert_depth_chart_is_the_book(first)

        # All three follow the stream: a newer book in the ladder and the depth chart, and
        # newer trades on the tape, coloured by their aggressor side.
        later = drawn(page, after=first["book"]["version"])
        later = wait_until(
            page,
            lambda: (
                (s := drawn(page, after=first["book"]["version"]))["depth"]["draws"]
                > first["depth"]["draws"]
                # At least five trades: on a stack that just started, the tape may
                # have moved on from its first four.
                and len(s["tape"]) >= 5
                and s["tape"][0]["seq"] > (first["tape"][0]["seq"] if first["tape"] else 0)
                and s
            ),
            20,
            "the depth chart and the tape to update, with five trades or more",
        )
        assert later["book"]["seq"] > first["book"]["seq"]
        assert_ladder_is_the_book(later)
        assert_depth_chart_is_the_book(later)
        assert_tape(later)
        sides = {r["side"] for r in later["tape"]}
        assert sides <= {"buy", "sell", ""} and sides & {"buy", "sell"}, sides
        for row in later["tape"]:
            if row["side"]:
                want = later["colors"]["up" if row["side"] == "buy" else "down"]
                rgb = tuple(int(want[i : i + 2], 16) for i in (1, 3, 5))
                assert row["color"] == f"rgb({rgb[0]}, {rgb[1]}, {rgb[2]})", row
        # Desktop: the panel sits under the chart, the three side by side.
        b = later["boxes"]
        assert b["panel"]["top"] >= b["chart"]["bottom"]
        assert b["ladder"]["right"] <= b["depth"]["left"] + 1 <= b["tape"]["left"] + 1
        assert later["scrollWidth"] <= 1280
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-depth-1280x800.png"))  # docs/img/

        # Phone width: stacked under the chart in full width, readable, still live.
        page.set_viewport_size({"width": 390, "height": 844})
        phone = wait_until(
            page,
            lambda: (
                (s := drawn(page, after=later["book"]["version"]))["boxes"]["depth"]["top"]
                >= s["boxes"]["ladder"]["bottom"]
                and s
            ),
            20,
            "the panels to stack",
        )
        b = phone["boxes"]
        assert b["chart"]["bottom"] <= b["panel"]["top"]
        assert b["ladder"]["bottom"] <= b["depth"]["top"]
        assert b["depth"]["bottom"] <= b["tape"]["top"]
        for name in ("ladder", "depth", "tape"):
            assert b[name]["left"] >= 0 and b[name]["right"] <= 390, (name, b[name])
            assert b[name]["right"] - b[name]["left"] >= 350, (name, b[name])
        assert phone["scrollWidth"] <= 390
        assert phone["fontPx"] >= 12
        assert_ladder_is_the_book(phone)
        assert_depth_chart_is_the_book(phone)
        assert_tape(phone)
        page.locator("#book-panel").screenshot(path=str(ARTIFACTS / "dashboard-depth-390x844.png"))

        # Every frame checked out: no missed update, no checksum mismatch, no resync.
        stats = phone["stats"]
        assert stats["bookUpdates"] >= 2 and stats["bookResyncs"] == 0, stats
        assert stats["bookFaults"] == {}, stats

        # A book that is not the server's (a phantom bid just under the best, off the price
        # grid, so no update can touch it) is caught by the next update (too deep a side,
        # or the checksum), and the page resubscribes the book and holds the server's again.
        # The server may send a fresh book snapshot instead of the next update (one that
        # waited past MAX_TICK_AGE_MS behind a busy page, on a loaded machine): it replaces
        # the book, phantom and all, with no fault to catch. Then the phantom goes in again.
        best = phone["bids"][0]["price"]
        for _ in range(3):
            phantom = str(Decimal(best) - Decimal("0.001"))
            snapshots = len(watch.received("book"))
            page.evaluate(
                "(p) => window.tickerDashboard.client.book('BTC-USD').book.apply("
                "{bids: [[p, '1']]})",
                phantom,
            )
            caught, stats = wait_until(
                page,
                lambda n=snapshots: (
                    ("resync", s)
                    if (s := read(page)["stats"])["bookResyncs"]
                    else ("snapshot", s)
                    if len(watch.received("book")) > n
                    else None
                ),
                20,
                "the page to resubscribe the book",
            )
            if caught == "resync":
                break
            best = drawn(page, after=0)["bids"][0]["price"]
        assert caught == "resync", "three phantoms in a row were replaced by snapshots"
        assert stats["bookResyncs"] == 1 and set(stats["bookFaults"]) <= {"depth", "checksum"}
        healed = wait_until(
            page,
            lambda: (
                (s := drawn(page, after=0))["book"]["seq"] > phone["book"]["seq"]
                and len(watch.received("book")) > snapshots
                and s["stats"]["bookUpdates"] > stats["bookUpdates"]
                and s
            ),
            20,
            "a fresh snapshot and updates on it",
        )
        assert phantom not in [r["price"] for r in healed["bids"]]
        assert_ladder_is_the_book(healed)
        assert healed["stats"]["bookResyncs"] == 1, healed["stats"]
        drop = [c for c in watch.sent("unsubscribe") if c.get("streams") == ["book"]]
        assert [c["symbols"] for c in drop] == [["BTC-USD"]], drop
        assert [c for c in watch.sent("subscribe") if "streams" in c][-1]["depth"] == 20

        assert not (v := watch.violations()), v
        assert watch.console_errors == []
    finally:
        context.close()


def test_a_symbol_without_a_book_says_so_in_the_ladder(browser, stack):  # noqa: F811
    # A replay of trades has no book; its ticks go on, and the tape shows them.
    _, errors = stack.replay_switch.communicate(timeout=60)
    assert stack.replay_switch.returncode == 0, errors
    context, page, watch = open_page(browser, stack, width=390, height=844, selected="ETH-USD")
    try:
        s = wait_until(
            page,
            lambda: (s := read(page))["state"] == "none" and s["tape"] and s,
            30,
            "the ladder to say ETH-USD has no book",
        )
        # The reason is the source's own ("the replay source has no order book").
        assert s["note"].startswith("No order book for ETH-USD: ") and "replay" in s["note"]
        assert s["noteShown"] and not s["ladderShown"]
        assert s["depthNote"] == s["note"]
        assert s["book"]["available"] is False
        # Another symbol's book shows at once when it is selected, and back again.
        page.click("#watchlist-rows tr[data-symbol='BTC-USD']")
        other = drawn(page)
        assert other["symbol"] == "BTC-USD" and other["depthNote"] is None
        assert_ladder_is_the_book(other)
        page.click("#watchlist-rows tr[data-symbol='ETH-USD']")
        wait_until(page, lambda: read(page)["state"] == "none", 20, "ETH-USD's note again")
        # The book of a symbol no longer selected is unsubscribed, not left running.
        drops = [c for c in watch.sent("unsubscribe") if c.get("streams") == ["book"]]
        assert [c["symbols"] for c in drops] == [["ETH-USD"], ["BTC-USD"]], drops
        assert not (v := watch.violations()), v
        assert watch.console_errors == []
    finally:
        context.close()
