"""Operations over the real stack (issue 11): /metrics scraped by a real Prometheus, and
/api/health/ telling the truth when delivery breaks.

One stack (uvicorn, Celery worker and beat, Redis) with PROMETHEUS_MULTIPROC_DIR set;
the web process reaches Redis for the channel layer through tests/tcp_proxy.py, and
BTC-USD is fed by a fake Coinbase. A client stays subscribed throughout. Then:

- promtool checks deploy/prometheus.yml and deploy/alerts.yml;
- a real Prometheus (Debian's; scripts/ensure-prometheus.sh) scrapes the stack every
  second, the web's /metrics and the worker's own endpoint (WORKER_METRICS_PORT, the
  ``ticker-worker`` job of deploy/prometheus.yml), and its HTTP API returns non-zero
  published and delivered tick counts, and published ticks from the worker's target;
- every metric the Grafana dashboard and the alert rules name is in /metrics;
- three real faults, each timed from injection to ``degraded`` and back to ``ok``:
  the producer stopped (SIGSTOP of the Celery worker), the receive path frozen
  (SIGSTOP of the proxy), and the exchange closing every connection.

Timings are printed, not asserted beyond generous bounds.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from tests.fake_exchanges import FakeCoinbase
from tests.realstack import RealStack
from tickerproject.stack import free_port, wait_for_port

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

BASE_DIR = Path(__file__).resolve().parent.parent
DEPLOY = BASE_DIR / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "ticker.json"
RULES = DEPLOY / "alerts.yml"
SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD"]
# Generous: a busy 2-core machine runs the whole stack and this test.
DEGRADE_WITHIN_S = 30.0
RECOVER_WITHIN_S = 60.0


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def health(stack: RealStack) -> tuple[int, dict]:
    try:
        status, body = get(f"{stack.http_url}/api/health/")
    except OSError as exc:
        return 0, {"problems": [repr(exc)]}
    return status, json.loads(body)


def wait_for(predicate, timeout: float, interval: float = 0.2):
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        result = predicate()
        if result:
            return time.monotonic() - started, result
        time.sleep(interval)
    return None, None


def referenced_metrics() -> set[str]:
    text = RULES.read_text() + DASHBOARD.read_text()
    return set(re.findall(r"\bticker_[a-z0-9_]+", text))


def exposed_names(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


class ClosingCoinbase(FakeCoinbase):
    """A fake Coinbase that, while ``closing``, closes every connection at once."""

    closing = False

    async def session(self, ws) -> None:
        if self.closing:
            await ws.close(1011, "going away")
            return
        await super().session(ws)


class Subscriber(threading.Thread):
    """A client subscribed to SYMBOLS (latest mode) that reconnects when closed."""

    def __init__(self, stack: RealStack) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.stopping = threading.Event()
        self.ticks = 0
        self.closes: list[int | None] = []

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                with connect(self.stack.ws_url, origin=self.stack.origin, open_timeout=10) as ws:
                    ws.send(json.dumps({"action": "subscribe", "symbols": SYMBOLS, "id": 1,
                                        "mode": "latest", "snapshot": 0}))  # fmt: skip
                    while not self.stopping.is_set():
                        try:
                            frame = json.loads(ws.recv(timeout=1))
                        except TimeoutError:
                            continue
                        if frame.get("type") == "tick":
                            self.ticks += 1
            except Exception as exc:  # closed or refused: note it and connect again
                self.closes.append(getattr(getattr(exc, "rcvd", None), "code", None))
                self.stopping.wait(0.5)


@pytest.fixture(scope="module")
def ops_stack(tmp_path_factory, django_db_blocker):
    workdir = tmp_path_factory.mktemp("ops")
    redis_port = urllib.parse.urlsplit(settings.REDIS_URL).port or 6379
    proxy = subprocess.Popen(
        [sys.executable, str(BASE_DIR / "tests" / "tcp_proxy.py"), str(redis_port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    proxy_port = int(proxy.stdout.readline())
    fake = ClosingCoinbase(products={"BTC-USD": 97000.0})
    with fake.threaded():

        async def stream() -> None:
            fake.start_stream(4)

        fake.call(stream)
        prom_dir = workdir / "prom"
        prom_dir.mkdir()
        stack = RealStack(
            workdir,
            PROMETHEUS_MULTIPROC_DIR=str(prom_dir),
            LOG_FORMAT="json",
            TICK_RATE="4",
            COINBASE_WS_URL=fake.url,
            HEALTH_DELIVERY_MARGIN_SECONDS="1.5",
        )
        stack.proxy = proxy
        stack.fake = fake
        try:
            stack.prepare_database()
            stack.manage("feeds", "set", "BTC-USD", "coinbase")
            # The web process's channel layer goes through the proxy; all else is direct.
            stack._spawn(
                "web",
                [sys.executable, "-m", "tickerproject.serve"],
                extra_env={
                    "HOST": "127.0.0.1",
                    "PORT": str(stack.port),
                    "CHANNEL_LAYER_REDIS_URL": f"redis://127.0.0.1:{proxy_port}/0",
                },
            )
            wait_for_port(stack.port, timeout=30)
            # The worker also serves its own metrics, as under docker-compose. Here it
            # shares the web's multiprocess directory (make run's shape), so its endpoint
            # serves every process's figures, the web's too: the Prometheus test only
            # asks that the worker's target is up and its series arrive.
            stack.worker_metrics_port = free_port()
            stack._spawn(
                "worker",
                stack.procfile_argv("worker"),
                extra_env={
                    "WORKER_NAME": f"worker-{stack.prefix}",
                    "WORKER_METRICS_PORT": str(stack.worker_metrics_port),
                },
            )
            stack.start_beat()
            client = Subscriber(stack)
            client.start()
            stack.client = client
            elapsed, _ = wait_for(lambda: health(stack)[0] == 200, 90, interval=0.5)
            assert elapsed is not None, f"never healthy: {health(stack)}"
            print(f"\nstack healthy after {elapsed:.1f} s")
            yield stack
        finally:
            if "client" in vars(stack):
                stack.client.stopping.set()
            for proc in [*stack.procs.values(), proxy]:
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGCONT)
            stack.stop_all()
            proxy.terminate()
            proxy.wait(timeout=10)
            proxy.stdout.close()


def test_promtool_accepts_the_config_and_rules(tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: scripts/ensure-prometheus.sh installs it"
    # promtool wants the token file docker-compose mounts as a secret: the shipped config,
    # with only that path pointed at a file of ours.
    token = tmp_path / "metrics_token"
    token.write_text("test-token\n")
    config = (DEPLOY / "prometheus.yml").read_text()
    assert "/run/secrets/metrics_token" in config
    (tmp_path / "prometheus.yml").write_text(
        config.replace("/run/secrets/metrics_token", str(token))
    )
    shutil.copy(RULES, tmp_path / "alerts.yml")
    checks = (["check", "config", str(tmp_path / "prometheus.yml")], ["check", "rules", str(RULES)])
    for args in checks:
        done = subprocess.run([promtool, *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


FEED_STALLED_TEST = """
rule_files:
  - {rules}
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # A worker's watchdog gives its symbols up once, at minute 5.
      - series: 'ticker_feed_stalls_total{{job="ticker-worker", instance="w1:9100"}}'
        values: '0 0 0 0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1'
    alert_rule_test:
      - eval_time: 4m
        alertname: TickerFeedStalled
        exp_alerts: []
      - eval_time: 6m
        alertname: TickerFeedStalled
        exp_alerts:
          - exp_labels: {{severity: page}}
            exp_annotations:
              summary: A producer stalled and gave its symbols up in the last 10 minutes
              description: >-
                See the worker log ('drafts waiting but nothing published') and the feed
                faults by step on /metrics: a publish call that hangs is the usual cause.
      - eval_time: 17m
        alertname: TickerFeedStalled
        exp_alerts: []
"""


def test_a_producer_that_stalled_fires_an_alert_for_ten_minutes(tmp_path):
    """The watchdog's count (issue 22) pages: once a stall is counted, and not after."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: scripts/ensure-prometheus.sh installs it"
    test = tmp_path / "feed_stalled_test.yml"
    test.write_text(FEED_STALLED_TEST.format(rules=RULES))
    done = subprocess.run([promtool, "test", "rules", str(test)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_metrics_name_everything_the_dashboard_and_rules_use(ops_stack):
    # One connection opened and closed by the client, so closes have a series too.
    with connect(ops_stack.ws_url, origin=ops_stack.origin, open_timeout=10) as ws:
        ws.send(json.dumps({"action": "ping", "id": 1}))
        ws.recv(timeout=10)
    time.sleep(1.5)  # the web process flushes its counts every second
    status, body = get(f"{ops_stack.http_url}/metrics")
    assert status == 200
    text = body.decode()
    missing = sorted(referenced_metrics() - exposed_names(text))
    assert not missing, f"named in deploy/ but not in /metrics: {missing}"
    # Multiprocess mode: the worker's publish counts are served by the web process.
    assert "ticker_ticks_published_total{" in text
    assert 'ticker_lease_changes_total{event="taken"}' in text
    # And by the worker's own endpoint (compose's ticker-worker job scrapes it).
    status, body = get(f"http://127.0.0.1:{ops_stack.worker_metrics_port}/metrics")
    assert status == 200
    worker_text = body.decode()
    assert "ticker_ticks_published_total{" in worker_text
    assert 'ticker_lease_changes_total{event="taken"}' in worker_text


def test_a_real_prometheus_scrapes_published_and_delivered_ticks(ops_stack, tmp_path):
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus missing: scripts/ensure-prometheus.sh installs it"
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {RULES}\n"
        "scrape_configs:\n  - job_name: ticker\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{ops_stack.port}']\n"
        "  - job_name: ticker-worker\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{ops_stack.worker_metrics_port}']\n"
    )
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen(
        [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for_port(port, timeout=30)
        api = f"http://127.0.0.1:{port}/api/v1/query?query="

        def query(expr: str) -> list:
            status, body = get(api + urllib.parse.quote(expr))
            return json.loads(body)["data"]["result"] if status == 200 else []

        def counts():
            # The web's job: the worker's endpoint serves the same shared directory.
            pub = query('sum(ticker_ticks_published_total{job="ticker"})')
            dlv = query('sum(ticker_ticks_delivered_total{job="ticker"})')
            if pub and dlv and float(pub[0]["value"][1]) > 0 and float(dlv[0]["value"][1]) > 0:
                return float(pub[0]["value"][1]), float(dlv[0]["value"][1])
            return None

        def from_worker():
            pub = query('sum(ticker_ticks_published_total{job="ticker-worker"})')
            return float(pub[0]["value"][1]) if pub and float(pub[0]["value"][1]) > 0 else None

        elapsed, found = wait_for(counts, 60, interval=1)
        assert found, (tmp_path / "prometheus.log").read_text()[-2000:]
        worker_elapsed, worker_published = wait_for(from_worker, 60, interval=1)
        assert worker_published, (tmp_path / "prometheus.log").read_text()[-2000:]
        worker_up = query('up{job="ticker-worker"}')
        assert worker_up and worker_up[0]["value"][1] == "1", worker_up
        worker_series = query('count by (__name__) ({job="ticker-worker", __name__=~"ticker_.+"})')
        worker_names = sorted(r["metric"]["__name__"] for r in worker_series)
        assert "ticker_lease_changes_total" in worker_names, worker_names
        series = query('count by (__name__) ({job="ticker", __name__=~"ticker_.+"})')
        names = sorted(r["metric"]["__name__"] for r in series)
        up = query('up{job="ticker"}')
        _, rules_body = get(f"http://127.0.0.1:{port}/api/v1/rules")
        groups = json.loads(rules_body)["data"]["groups"]
        rule_health = [r["health"] for g in groups for r in g["rules"]]
        print(
            f"\nPrometheus scraped after {elapsed:.1f} s: published {found[0]:.0f}, "
            f"delivered {found[1]:.0f} ticks; up={up[0]['value'][1] if up else None}; "
            f"{len(names)} ticker_ series names: {', '.join(names)}; rule health {rule_health}"
        )
        print(
            f"worker target (job ticker-worker) up, {worker_published:.0f} ticks published "
            f"after {worker_elapsed:.1f} s more; {len(worker_names)} ticker_ series names: "
            f"{', '.join(worker_names)}"
        )
        assert up and up[0]["value"][1] == "1"
        assert all(h == "ok" for h in rule_health), rule_health
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def _fault(stack: RealStack, name: str, inject, remove, problem: str) -> tuple[float, float]:
    status, body = health(stack)
    assert status == 200, body
    inject()
    started = time.monotonic()
    try:
        degraded, body = wait_for(
            lambda: (
                (h := health(stack))[0] == 503
                and any(problem in p for p in h[1]["problems"])
                and h[1]
            ),
            DEGRADE_WITHIN_S,
        )
    finally:
        remove()
    removed = time.monotonic()
    recovered, _ = wait_for(lambda: health(stack)[0] == 200, RECOVER_WITHIN_S)
    print(
        f"\n{name}: degraded {degraded if degraded is None else round(degraded, 1)} s after "
        f"injection ({(body or {}).get('problems')}); ok again "
        f"{recovered if recovered is None else round(recovered, 1)} s after removal "
        f"(held {removed - started:.1f} s)"
    )
    assert degraded is not None, f"{name}: never degraded: {health(stack)}"
    assert recovered is not None, f"{name}: never recovered: {health(stack)}"
    return degraded, recovered


def test_frozen_receive_path_is_degraded_then_recovers(ops_stack):
    proxy = ops_stack.proxy
    _fault(
        ops_stack,
        "receive path frozen (SIGSTOP of the channel-layer proxy)",
        lambda: os.kill(proxy.pid, signal.SIGSTOP),
        lambda: os.kill(proxy.pid, signal.SIGCONT),
        "no tick reached this process",
    )


def test_stopped_producer_is_degraded_then_recovers(ops_stack):
    worker = ops_stack.procs["worker"]
    _fault(
        ops_stack,
        "producer stopped (SIGSTOP of the Celery worker)",
        lambda: os.kill(worker.pid, signal.SIGSTOP),
        lambda: os.kill(worker.pid, signal.SIGCONT),
        "feed source",
    )


def test_exchange_that_closes_is_degraded_then_recovers(ops_stack):
    fake = ops_stack.fake

    def inject() -> None:
        fake.closing = True
        fake.call(fake.drop)

    def remove() -> None:
        fake.closing = False

    _fault(ops_stack, "exchange closes every connection", inject, remove, "BTC-USD: feed source")


def test_json_logs_carry_connection_ids_and_lifecycle_lines(ops_stack):
    lines = [ln for ln in ops_stack.log("web").splitlines() if ln.startswith("{")]
    records = [json.loads(ln) for ln in lines]
    assert records, ops_stack.log("web")[-2000:]
    for record in records:
        assert {"timestamp", "level", "logger", "process", "message"} <= set(record)
    opened = [r for r in records if r["message"].startswith("websocket open")]
    assert opened and all(r.get("connection") for r in opened)
    # uvicorn's own per-WebSocket lines are dropped in favour of ours.
    assert not any('"WebSocket /ws/prices/"' in r["message"] for r in records)
    worker = [json.loads(ln) for ln in ops_stack.log("worker").splitlines() if ln.startswith("{")]
    assert worker, ops_stack.log("worker")[-2000:]


OPS_PASSWORD = "a long operations-test password"


@pytest.mark.browser
def test_ops_page_is_staff_only_and_shows_the_figures(ops_stack):
    """/ops/ in real Chromium: anonymous and non-staff are refused; staff see the live
    figures with no CSP violation; saves test-artifacts/ops.png (docs/img/ops.png is one)."""
    from tests.test_browser_dashboard import CHROMIUM_ARGS, PageWatch, chromium_or_fail

    ops_stack.shell(
        "from django.contrib.auth.models import User\n"
        f"User.objects.create_user('ops', password={OPS_PASSWORD!r}, is_staff=True)\n"
        f"User.objects.create_user('viewer', password={OPS_PASSWORD!r})\n"
    )
    status, _ = get(f"{ops_stack.http_url}/ops/data.json")
    assert status == 403
    executable = chromium_or_fail()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            for user, allowed in (("viewer", False), ("ops", True)):
                context = browser.new_context(viewport={"width": 1280, "height": 860})
                page = context.new_page()
                page.set_default_timeout(20_000)
                watch = PageWatch(page)  # console errors: a CSP violation would be one
                page.goto(f"{ops_stack.http_url}/ops/")
                assert "/accounts/login/" in page.url
                page.fill("input[name=username]", user)
                page.fill("input[name=password]", OPS_PASSWORD)
                page.click("button[type=submit]")
                page.wait_for_load_state()
                if not allowed:
                    assert "/accounts/login/" in page.url or page.locator("#symbols").count() == 0
                    context.close()
                    continue
                page.wait_for_url(f"{ops_stack.http_url}/ops/")
                # Two polls: the rates need a previous sample.
                page.wait_for_function(
                    "() => document.querySelectorAll('#symbols tr').length > 0 && "
                    "document.getElementById('delivered-rate').textContent !== '\\u2013'"
                )
                time.sleep(2.5)
                assert int(page.text_content("#connections")) >= 1
                rows = page.eval_on_selector_all("#symbols tr", "rs => rs.length")
                assert rows >= len(SYMBOLS)
                assert "coinbase" in page.text_content("#symbols")
                # Saved beside the other test screenshots; docs/img/ops.png is one of them,
                # copied by hand, so a test run never changes the tree.
                (BASE_DIR / "test-artifacts").mkdir(exist_ok=True)
                page.screenshot(path=str(BASE_DIR / "test-artifacts" / "ops.png"))
                assert not watch.unexpected_errors(), watch.unexpected_errors()
                context.close()
        finally:
            browser.close()
