"""The guard's loop is seen by /api/health/ (markets.health through telemetry.probes).

A real guard, its loop started the way a connection starts it (``watch``), its token
reads going to the test database. The database read of its rounds is made to fail for
real (a Django execute wrapper raising OperationalError on the token table, in the
thread the guard's reads run in); health must turn degraded naming the guard, and ok
again once the reads work. The rest of the report (Redis, the database probe) is real
too; no symbols are seeded, so nothing else can make it degraded.
"""

import asyncio
import logging
import time

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.db import OperationalError, connection

from accounts.services import issue_token
from markets import health
from streaming.auth import identify_token
from streaming.guard import LOOP_NAME, Guard
from telemetry import metrics, probes
from telemetry.loops import Rounds, supervise

pytestmark = pytest.mark.usefixtures("transactional_db", "close_hub")

PERIOD = 0.1


class FakeConnection:
    """What the guard uses of a Connection: identity, symbols, unsubscribe, send, end."""

    def __init__(self, identity) -> None:
        self.identity = identity
        self.subs = dict.fromkeys(["BTC-USD"])
        self.books: dict = {}
        self.close_code = None
        self.sent: list[dict] = []

    def symbols(self) -> list[str]:
        return sorted(self.subs)

    def unsubscribe(self, symbols) -> None:
        for s in symbols:
            self.subs.pop(s, None)

    def send(self, message: dict) -> None:
        self.sent.append(message)

    def end(self, code: int) -> None:
        self.close_code = code


async def watched_guard() -> tuple[Guard, FakeConnection]:
    user = await sync_to_async(User.objects.create)(username="watched")
    secret = (await sync_to_async(issue_token)(user=user, by=user)).secret
    identity = await sync_to_async(identify_token)(secret)
    guard = Guard(interval=PERIOD)
    conn = FakeConnection(identity)
    guard.watch(conn)
    return guard, conn


def sample(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


async def until(predicate, timeout: float = 10.0):
    """Poll an async ``predicate`` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        assert time.monotonic() < deadline, f"not within {timeout} s"
        await asyncio.sleep(0.02)


async def report_where(check) -> health.Report:
    async def probe():
        report = await health.report()
        return report if check(report) else None

    return await until(probe)


def guard_problems(report: health.Report) -> list[str]:
    return [p for p in report.problems if p.startswith(f"{LOOP_NAME} loop")]


class TokenTableDown:
    """Every query on the token table raises, in the thread the guard's reads run in."""

    def __init__(self) -> None:
        self.raised = 0

    def __call__(self, execute, sql, params, many, context):
        if "accounts_apitoken" in sql:
            self.raised += 1
            raise OperationalError("server closed the connection unexpectedly (injected)")
        return execute(sql, params, many, context)

    async def install(self) -> None:
        # database_sync_to_async runs in the thread-sensitive executor, like this call.
        # (``connection`` is per thread: looked up there, not here.)
        await sync_to_async(lambda: connection.execute_wrappers.append(self))()

    async def remove(self) -> None:
        await sync_to_async(lambda: connection.execute_wrappers.remove(self))()


async def test_a_failing_guard_turns_health_degraded_then_ok_again(caplog):
    caplog.set_level(logging.ERROR, logger="streaming.guard")
    guard, conn = await watched_guard()
    failures_before = sample("ticker_loop_failures_total", loop=LOOP_NAME)

    ok = await report_where(
        lambda r: r.loops.get(LOOP_NAME, {}).get("last_round_age_s") is not None
    )
    assert ok.ok, ok.problems
    entry = ok.loops[LOOP_NAME]
    assert entry["state"] == "running" and entry["period_s"] == PERIOD
    assert entry["failures"] == 0 and entry["error"] is None

    fault = TokenTableDown()
    await fault.install()
    injected = time.monotonic()
    try:
        degraded = await report_where(lambda r: guard_problems(r))
        to_degraded = time.monotonic() - injected
        assert not degraded.ok
        (problem,) = guard_problems(degraded)
        assert "no round completed for" in problem and "OperationalError" in problem, problem
        entry = degraded.loops[LOOP_NAME]
        assert entry["state"] == "failing" and entry["failures"] >= 3, entry
        assert "injected" in entry["error"]
        # Nothing else is wrong: the guard alone made it degraded.
        assert degraded.problems == [problem]
        assert fault.raised >= 3
        assert conn.close_code is None  # a failed read closes nobody
    finally:
        await fault.remove()
    removed = time.monotonic()

    recovered = await report_where(lambda r: r.ok)
    print(
        f"\nguard reads failing: degraded after {to_degraded:.2f} s ({problem}); "
        f"ok again {time.monotonic() - removed:.2f} s after they work (period {PERIOD} s)"
    )
    assert recovered.loops[LOOP_NAME]["state"] == "running"
    assert recovered.loops[LOOP_NAME]["failures"] == 0
    # Counted once per failed round, logged once with its traceback (then at the 10th, ...).
    failed_rounds = sample("ticker_loop_failures_total", loop=LOOP_NAME) - failures_before
    assert failed_rounds >= fault.raised >= 3
    logged = [r for r in caplog.records if "entitlement check failed" in r.getMessage()]
    assert logged and logged[0].exc_info is not None
    assert len(logged) == 1 + sum(1 for n in (10, 100, 1000) if failed_rounds >= n)
    await guard.aclose()


async def test_a_bug_that_escapes_the_loop_restarts_it_logged_once_and_counted(caplog):
    caplog.set_level(logging.ERROR, logger="streaming.guard")
    guard, _ = await watched_guard()
    restarts_before = sample("ticker_receive_loop_restarts_total", loop=LOOP_NAME)
    real = guard.rounds.succeeded
    bugs = 3

    def buggy() -> None:
        nonlocal bugs
        if bugs:
            bugs -= 1
            raise RuntimeError("bookkeeping bug (injected)")
        real()

    guard.rounds.succeeded = buggy  # outside the round's own try: the supervisor's to catch

    async def restarted_and_running():
        status = probes.loops().get(LOOP_NAME)
        return status is not None and status.restarts == 3 and status.state == "running"

    await until(restarted_and_running)
    assert sample("ticker_receive_loop_restarts_total", loop=LOOP_NAME) - restarts_before == 3
    logged = [r for r in caplog.records if "guard loop failed; restarting" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
    report = await health.report()
    assert report.ok, report.problems
    assert report.loops[LOOP_NAME]["restarts"] == 3
    await guard.aclose()


async def test_a_dead_guard_loop_is_degraded_at_once_while_connections_are_open():
    guard, conn = await watched_guard()
    await report_where(lambda r: r.loops.get(LOOP_NAME, {}).get("state") == "running")
    guard._task.cancel()  # dies, with a connection still open
    await asyncio.wait([guard._task])

    report = await health.report()
    assert report.loops[LOOP_NAME]["state"] == "stopped"
    assert guard_problems(report) == [f"{LOOP_NAME} loop: stopped"], report.problems

    # Nobody connected: nothing to enforce, nothing wrong.
    conn.close_code = 1000
    report = await health.report()
    assert report.loops[LOOP_NAME]["state"] == "idle" and report.ok, report.problems

    # The next connection starts it again.
    conn.close_code = None
    guard.watch(conn)
    await report_where(lambda r: r.ok and r.loops[LOOP_NAME]["state"] == "running")
    await guard.aclose()
    assert LOOP_NAME not in probes.loops()  # shut down on purpose: no longer reported


async def test_a_loop_that_fails_at_every_start_still_grows_old():
    """A restart does not reset the clock: the age runs from the last round or the start."""

    class Faults:
        def report(self, *args, exc=None) -> None:
            pass

    rounds = Rounds("flaky", period_s=0.05)

    async def crash() -> None:
        raise ValueError("fails at once")

    task = asyncio.get_running_loop().create_task(
        supervise("flaky", crash, faults=Faults(), rounds=rounds, first_delay=0.01, max_delay=0.02)
    )
    try:
        await until(lambda: _async(rounds.restarts >= 5))
        status = rounds.status(alive=True, busy=True)
        assert status.state == "restarting" and status.last_round_ms is None
        await asyncio.sleep(health.LOOP_STALE_MIN_SECONDS)
        at = int(time.time() * 1000)
        _, problem = health.loop_health("flaky", rounds.status(alive=True, busy=True), at)
        assert problem and "no round completed" in problem and "ValueError" in problem, problem
    finally:
        task.cancel()
        await asyncio.wait([task])


async def _async(value):
    return value


async def test_loop_failures_and_restarts_of_the_guard_exist_from_the_start():
    # Alerts and the dashboard read them: a series at 0 from import on.
    assert sample("ticker_loop_failures_total", loop=LOOP_NAME) >= 0
    assert metrics.LOOP_FAILURES.labels(LOOP_NAME) is not None
    from prometheus_client import REGISTRY, generate_latest

    text = generate_latest(REGISTRY).decode()
    assert f'ticker_loop_failures_total{{loop="{LOOP_NAME}"}}' in text
    assert f'ticker_receive_loop_restarts_total{{loop="{LOOP_NAME}"}}' in text


async def test_the_health_json_shows_the_guard(async_client):
    guard, _ = await watched_guard()
    await until(lambda: _async(guard.rounds.last_round_ms is not None))
    response = await async_client.get("/api/health/")
    body = response.json()
    assert response.status_code == 200 and body["status"] == "ok", body
    shown = body["loops"][LOOP_NAME]
    assert shown["state"] == "running" and shown["period_s"] == PERIOD, shown
    assert shown["last_round_age_s"] is not None and shown["error"] is None

    fault = TokenTableDown()
    await fault.install()
    try:

        async def degraded():
            response = await async_client.get("/api/health/")
            return response.status_code == 503 and response.json()

        body = await until(degraded)
    finally:
        await fault.remove()
    (problem,) = body["problems"]
    assert problem.startswith(f"{LOOP_NAME} loop: failing, no round completed for"), problem
    shown = body["loops"][LOOP_NAME]
    assert shown["state"] == "failing" and "OperationalError" in shown["error"], shown
    await guard.aclose()
