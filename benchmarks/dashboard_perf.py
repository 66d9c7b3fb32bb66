"""How busy the dashboard keeps the browser's main thread under a heavy tick stream.

    python benchmarks/dashboard_perf.py [--tick-rate 50] [--symbols 10] [--seconds 15]

It starts a real stack (daphne + Celery worker and beat + Redis, as the e2e tests
do) at the given TICK_RATE, opens the dashboard in headless Chromium with a
watchlist of ``--symbols`` symbols, lets it warm up, and then samples for
``--seconds`` in each chart mode. Then (unless --no-synthetic) it stops the stack,
whose processes compete with the browser for this machine's CPUs, and feeds the
page the nominal rate (TICK_RATE x symbols) of tick frames from inside the page,
through the same client parsing and rendering path, and samples again.
Each sample reports:

- main-thread busy time: Chromium's own counters from the DevTools protocol
  (Performance.getMetrics: TaskDuration, ScriptDuration, LayoutDuration,
  RecalcStyleDuration), as a share of wall time, and the main thread's CPU time
  (ThreadTime), which unlike wall time does not grow when other processes compete;
- frame rate: requestAnimationFrame callbacks per second;
- long tasks (over 50 ms) from a PerformanceObserver;
- ticks per second the page received, and chart redraws per second.

Without REDIS_URL it re-runs itself under ``python -m tickerproject.stack test``,
which provides an embedded Redis with a private key prefix. Only 127.0.0.1 is used;
every process started is stopped on exit.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SYMBOLS = [
    "BTC-USD", "ETH-USD", "AAPL", "MSFT", "EUR-USD",
    "SOL-USD", "NVDA", "TSLA", "GBP-USD", "XAU-USD",
    "AMZN", "GOOGL", "META", "JPM", "USD-JPY", "DOGE-USD",
]  # fmt: skip

# Counts animation frames and long tasks from inside the page.
PAGE_PROBE = """
window.__perf = { frames: 0, longTasks: 0, longTaskMs: 0 };
(function frame() { requestAnimationFrame(() => { window.__perf.frames += 1; frame(); }); })();
try {
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      window.__perf.longTasks += 1;
      window.__perf.longTaskMs += entry.duration;
    }
  }).observe({ type: "longtask", buffered: true });
} catch (e) {}
"""

PAGE_COUNTERS = """() => ({
  frames: window.__perf.frames,
  longTasks: window.__perf.longTasks,
  longTaskMs: window.__perf.longTaskMs,
  ticks: window.tickerDashboard.client.stats.ticks,
  draws: window.tickerDashboard.chart.draws,
  now: performance.now(),
})"""


def metrics(cdp) -> dict[str, float]:
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


def sample(page, cdp, seconds: float) -> dict[str, float]:
    m0, c0 = metrics(cdp), page.evaluate(PAGE_COUNTERS)
    page.wait_for_timeout(seconds * 1000)
    m1, c1 = metrics(cdp), page.evaluate(PAGE_COUNTERS)
    wall = m1["Timestamp"] - m0["Timestamp"]

    def share(name: str) -> float:
        return 100 * (m1[name] - m0[name]) / wall

    return {
        "seconds": wall,
        "busy_pct": share("TaskDuration"),
        # CPU time actually spent by the renderer's main thread and process: unlike
        # TaskDuration (wall time) it does not grow when other processes compete.
        "thread_cpu_pct": share("ThreadTime"),
        "process_cpu_pct": share("ProcessTime"),
        "script_pct": share("ScriptDuration"),
        "layout_style_pct": share("LayoutDuration") + share("RecalcStyleDuration"),
        "fps": (c1["frames"] - c0["frames"]) / wall,
        "ticks_per_s": (c1["ticks"] - c0["ticks"]) / wall,
        "chart_draws_per_s": (c1["draws"] - c0["draws"]) / wall,
        "long_tasks": c1["longTasks"] - c0["longTasks"],
        "long_task_ms": c1["longTaskMs"] - c0["longTaskMs"],
        "heap_mb": m1["JSHeapUsedSize"] / 1e6,
    }


# Feeds the page's protocol client exactly what a server at TICK_RATE would send
# (one JSON "tick" frame per tick, through the same parsing and rendering path),
# for measuring the page alone once the stack's processes are stopped.
SYNTHETIC_FEED = """([symbols, rate]) => {
  const client = window.tickerDashboard.client;
  const state = symbols.map((symbol) => ({ symbol, seq: 1e9, price: 100 }));
  let owed = 0;
  let last = performance.now();
  // Owed ticks follow elapsed time, so a late timer catches up instead of
  // quietly lowering the rate.
  window.__feed = setInterval(() => {
    const now = performance.now();
    owed += (rate * (now - last)) / 1000;
    last = now;
    for (; owed >= 1; owed -= 1) {
      for (const s of state) {
        s.seq += 1;
        s.price *= 1 + (Math.random() - 0.5) * 0.002;
        const price = Math.round(s.price * 100) / 100;
        client._onMessage(JSON.stringify({ type: "tick", symbol: s.symbol, seq: s.seq,
          ts: Date.now(), price, bid: price - 0.01, ask: price + 0.01, size: 1 }));
      }
    }
  }, 20);
}"""


def run(args: argparse.Namespace) -> dict:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tickerproject.settings")
    sys.path.insert(0, str(BASE_DIR))
    from tickerproject.env import ensure_dev_env_file

    # The checkout's .env.dev (DEBUG, SECRET_KEY), also when run directly: the settings
    # read it.
    ensure_dev_env_file()
    import django

    django.setup()
    from playwright.sync_api import sync_playwright

    from tests.realstack import real_stack

    symbols = SYMBOLS[: args.symbols]
    results: dict = {"tick_rate": args.tick_rate, "symbols": symbols, "runs": {}}
    with (
        tempfile.TemporaryDirectory(prefix="dashboard-perf-") as tmp,
        real_stack(Path(tmp), TICK_RATE=str(args.tick_rate)) as stack,
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        prefs = {"symbols": symbols, "selected": symbols[0], "mode": "line"}
        context.add_init_script(
            f"localStorage.setItem('ticker.dashboard.v1', {json.dumps(json.dumps(prefs))});"
        )
        context.add_init_script(PAGE_PROBE)
        page = context.new_page()
        page.goto(stack.http_url + "/")
        page.wait_for_selector("#conn-badge[data-state='live']", timeout=30_000)
        for symbol in symbols:
            page.wait_for_selector(f"tr[data-symbol='{symbol}']:not([data-seq=''])", timeout=30_000)
        cdp = context.new_cdp_session(page)
        cdp.send("Performance.enable", {"timeDomain": "timeTicks"})
        page.wait_for_timeout(args.warmup * 1000)
        for mode in args.modes:
            page.click(f"#mode-toggle [data-mode='{mode}']")
            page.wait_for_timeout(1000)
            results["runs"][f"stack/{mode}"] = sample(page, cdp, args.seconds)
        if args.synthetic:
            # The stack's processes share this machine's CPUs with the browser;
            # stop them and feed the page the nominal rate from inside itself.
            stack.stop_all()
            page.evaluate(SYNTHETIC_FEED, [symbols, args.tick_rate])
            page.wait_for_timeout(args.warmup * 1000)
            for mode in args.modes:
                page.click(f"#mode-toggle [data-mode='{mode}']")
                page.wait_for_timeout(1000)
                results["runs"][f"synthetic/{mode}"] = sample(page, cdp, args.seconds)
            page.evaluate("() => clearInterval(window.__feed)")
        browser.close()
    return results


def report(results: dict) -> None:
    n = len(results["symbols"])
    print(f"\nDashboard in headless Chromium, TICK_RATE={results['tick_rate']}, {n} symbols")
    print(f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end)")
    header = f"{'feed/mode':<15}{'ticks/s':>8}{'fps':>6}{'busy %':>8}{'cpu %':>7}{'script %':>9}"
    header += f"{'lay+sty %':>10}{'draws/s':>8}{'long tasks':>11}{'heap MB':>8}"
    print(header)
    for name, r in results["runs"].items():
        print(
            f"{name:<15}{r['ticks_per_s']:>8.0f}{r['fps']:>6.1f}{r['busy_pct']:>8.1f}"
            f"{r['thread_cpu_pct']:>7.1f}{r['script_pct']:>9.1f}{r['layout_style_pct']:>10.1f}"
            f"{r['chart_draws_per_s']:>8.1f}{r['long_tasks']:>11d}{r['heap_mb']:>8.1f}"
        )
    print(
        "stack = ticks from the real stack over the WebSocket; synthetic = the same frames fed "
        "in-page at the nominal rate with the stack stopped.\n"
        "busy % = main-thread TaskDuration / wall time; cpu % = main-thread ThreadTime / wall "
        "time; fps = requestAnimationFrame callbacks per second; long tasks = over 50 ms."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tick-rate", type=float, default=50)
    parser.add_argument("--symbols", type=int, default=10, choices=range(1, len(SYMBOLS) + 1))
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["line", "1s", "1m"],
        choices=["line", "1s", "5s", "1m", "5m", "1h", "1D"],
    )
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument(
        "--no-synthetic",
        dest="synthetic",
        action="store_false",
        help="skip the in-page feed at the nominal rate after the stack phase",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    if "REDIS_URL" not in os.environ:
        # Re-run under the launcher so an embedded Redis exists for the stack.
        script = os.path.abspath(sys.argv[0])
        cmd = [sys.executable, "-m", "tickerproject.stack", "test", "--", sys.executable, script]
        cmd += sys.argv[1:]
        os.chdir(BASE_DIR)
        os.execv(sys.executable, cmd)

    started = time.monotonic()
    results = run(args)
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(f"(took {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
