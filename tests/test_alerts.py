"""Price alerts: the evaluator over real Redis history (exactly once per crossing, none
repeated on resume or failover), the REST API, and the web process's alert relay."""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.test import Client

from alerts import services
from alerts.api import _last_tick
from alerts.delivery import ALERT_EVENT_TYPE, channel_event, user_group_name
from alerts.evaluator import Evaluator, EvaluatorLease, crosses, side_of, sync_redis
from alerts.models import AlertEvent, EvaluatorCursor, PriceAlert
from markets import keys
from markets.publishing import TickPublisher
from markets.ticks import Tick, TickDraft
from streaming.alerts import AlertRelay

pytestmark = pytest.mark.usefixtures("clean_redis")

SYMBOL = "BTC-USD"


async def publish(*prices: float, symbol: str = SYMBOL) -> list[int]:
    publisher = TickPublisher.unfenced_for_tests()
    seqs = []
    for price in prices:
        (tick,) = await publisher.publish([TickDraft(symbol, price, price - 1, price + 1, 0.5)])
        seqs.append(tick.seq)
    return seqs


async def make_alert(user, direction: str, price: float, *, repeat=False, symbol=SYMBOL):
    last = await _last_tick(symbol)
    return await sync_to_async(services.create_alert)(
        user=user, symbol=symbol, direction=direction, price=price, repeat=repeat, note="",
        last=last,
    )  # fmt: skip


class Recorder:
    """Stands in for the channel-layer delivery: records what would be sent."""

    def __init__(self) -> None:
        self.sent: list[AlertEvent] = []

    def __call__(self, events) -> None:
        self.sent.extend(events)


def evaluator(recorder: Recorder | None = None) -> Evaluator:
    return Evaluator(client=sync_redis(), deliver=recorder or Recorder())


async def run(ev: Evaluator) -> int:
    """Step until nothing is left to read; how many fired."""
    fired = 0
    for _ in range(50):
        before = ev.ticks
        fired += await sync_to_async(ev.step)(block_ms=0)
        if ev.ticks == before:
            return fired
    raise AssertionError("the evaluator never caught up")


async def events(**filters) -> list[AlertEvent]:
    return await sync_to_async(lambda: list(AlertEvent.objects.filter(**filters).order_by("id")))()


async def reload(alert: PriceAlert) -> PriceAlert:
    await sync_to_async(alert.refresh_from_db)()
    return alert


@pytest.fixture
async def user(transactional_db, django_user_model):
    return await sync_to_async(django_user_model.objects.create_user)("alice", password="pw")


def test_sides_and_crossings():
    assert side_of(100.0, 100.0) == "above" and side_of(99.99, 100.0) == "below"
    assert crosses("above", "below", "above") and crosses("below", "above", "below")
    assert not crosses("above", "above", "above") and not crosses("above", "", "above")
    assert not crosses("below", "below", "above")


async def test_a_one_shot_alert_fires_once_at_the_crossing_tick(user):
    await publish(99.0)
    alert = await make_alert(user, "above", 100.0)
    assert alert.last_side == "below"
    seqs = await publish(99.5, 100.0, 101.0, 99.0, 100.5)
    recorder = Recorder()
    assert await run(evaluator(recorder)) == 1
    (event,) = await events()
    assert (event.seq, event.price, event.direction) == (seqs[1], 100.0, "above")
    assert [e.pk for e in recorder.sent] == [event.pk]
    alert = await reload(alert)
    assert not alert.active and alert.fired_count == 1


async def test_a_repeating_alert_fires_once_per_crossing_both_ways(user):
    await publish(100.0)
    above = await make_alert(user, "above", 100.0, repeat=True)
    below = await make_alert(user, "below", 100.0, repeat=True)
    # above: at/over 100 after under it; below: under 100 after at/over it.
    seqs = await publish(100.0, 99.0, 99.5, 100.0, 100.0, 102.0, 98.0, 97.0, 100.0, 99.99)
    assert await run(evaluator()) == 5
    assert [e.seq for e in await events(alert=above)] == [seqs[3], seqs[8]]
    assert [e.seq for e in await events(alert=below)] == [seqs[1], seqs[6], seqs[9]]


async def test_an_alert_already_past_its_level_waits_for_a_crossing(user):
    await publish(105.0)
    alert = await make_alert(user, "above", 100.0)
    assert alert.last_side == "above"
    await publish(106.0, 104.0)
    assert await run(evaluator()) == 0
    seqs = await publish(99.0, 100.0)
    assert await run(evaluator()) == 1
    assert [e.seq for e in await events(alert=alert)] == [seqs[1]]


async def test_ticks_before_an_alert_was_set_never_fire_it(user):
    await publish(99.0)
    ev = evaluator()
    other = await make_alert(user, "above", 1_000_000.0)  # keeps the symbol watched
    await run(ev)
    # The evaluator is behind when the alert is set: it has not read 99 -> 101 yet.
    await publish(101.0, 99.0)
    alert = await make_alert(user, "above", 100.0)
    assert await run(ev) == 0
    seqs = await publish(100.0)
    assert await run(ev) == 1
    assert [e.seq for e in await events(alert=alert)] == seqs
    assert await events(alert=other) == []


async def test_resume_with_a_new_evaluator_repeats_nothing(user):
    await publish(99.0)
    alert = await make_alert(user, "above", 100.0, repeat=True)
    await publish(100.0, 99.0)
    assert await run(evaluator()) == 1
    # The worker restarts: a fresh evaluator resumes from the persisted cursor.
    second = evaluator()
    assert await run(second) == 0
    seqs = await publish(100.0)
    assert await run(second) == 1
    assert [e.seq for e in await events(alert=alert)][-1] == seqs[0]
    assert len(await events()) == 2


async def test_failover_a_second_evaluator_judging_the_same_batch_stores_nothing(user):
    """A stalled lease holder and its successor both read the same ticks; one commits."""
    await publish(99.0)
    alert = await make_alert(user, "above", 100.0, repeat=True)
    await publish(99.5, 100.0, 98.0, 101.0)
    a, b = evaluator(), evaluator()
    await sync_to_async(b.watched_symbols)()
    cursor = await sync_to_async(EvaluatorCursor.objects.get_or_create)(
        symbol=SYMBOL, defaults={"epoch": alert.epoch, "last_seq": alert.armed_after_seq}
    )
    start = cursor[0].last_seq
    # b reads the batch first, then stalls; a judges and commits it.
    entries = sync_redis().xrange(keys.history_key(SYMBOL), min=f"({start}-0")
    stale = [Tick.from_stream_entry(SYMBOL, eid, f) for eid, f in entries]
    assert await run(a) == 2
    # b wakes up with the batch it read: the cursor has moved, so it stores nothing.
    assert await sync_to_async(b.judge)(SYMBOL, alert.epoch, stale) == 0
    assert len(await events()) == 2
    assert (await reload(alert)).fired_count == 2


async def test_a_crash_before_the_commit_fires_once_on_the_retry(user):
    await publish(99.0)
    alert = await make_alert(user, "above", 100.0)
    seqs = await publish(100.0)
    crashing, recorder = evaluator(), Recorder()
    crashing.deliver = recorder

    def crash(evs):
        assert len(evs) == 1
        raise RuntimeError("worker killed before the commit")

    crashing.before_commit = crash
    with pytest.raises(RuntimeError):
        await sync_to_async(crashing.step)(block_ms=0)
    assert await events() == [] and recorder.sent == []
    alert = await reload(alert)
    assert alert.active and alert.fired_count == 0 and alert.last_side == "below"
    assert await run(evaluator(recorder)) == 1
    assert [e.seq for e in await events()] == seqs and len(recorder.sent) == 1


async def test_a_new_seq_epoch_is_judged_from_its_start_without_repeats(user):
    await publish(99.0)
    alert = await make_alert(user, "above", 100.0, repeat=True)
    await publish(100.0)
    ev = evaluator()
    assert await run(ev) == 1
    # Redis loses the symbol's counter and history: numbering restarts in a new epoch.
    client = sync_redis()
    client.delete(keys.seq_key(SYMBOL), keys.history_key(SYMBOL))
    await publish(99.0, 100.0)  # seq 1 and 2 of the new epoch
    assert await run(ev) == 1
    assert [e.seq for e in await events(alert=alert)] == [2, 2]
    assert len({e.epoch for e in await events(alert=alert)}) == 2
    assert await run(evaluator()) == 0


async def test_an_edit_rearms_the_alert_from_the_last_price(user):
    await publish(99.0)
    alert = await make_alert(user, "above", 100.0)
    await publish(101.0)
    assert await run(evaluator()) == 1
    alert = await reload(alert)
    assert not alert.active
    last = await _last_tick(SYMBOL)
    alert = await sync_to_async(services.update_alert)(
        alert, changes={"price": 102.0, "active": True}, last=last
    )
    assert alert.active and alert.last_side == "below" and alert.armed_after_seq == last.seq
    seqs = await publish(101.5, 102.5)
    assert await run(evaluator()) == 1
    assert [e.seq for e in await events(alert=alert)][-1] == seqs[1]


async def test_the_lease_lets_one_evaluator_run_at_a_time():
    client = sync_redis()
    first = EvaluatorLease(client, token="a", ttl_seconds=2)
    second = EvaluatorLease(client, token="b", ttl_seconds=2)
    assert first.hold() and first.hold()
    assert not second.hold()
    first.release()
    assert second.hold() and not first.hold()
    second.release()


async def test_the_relay_writes_an_alert_to_its_users_connections_only(user, close_hub):
    from streaming.alerts import close_local_relay, local_relay

    class FakeOutbox:
        def __init__(self) -> None:
            self.frames: list[str] = []

        def put_frame(self, text: str) -> None:
            self.frames.append(text)

    class FakeConn:
        def __init__(self, identity) -> None:
            self.identity = identity
            self.close_code = None
            self.outbox = FakeOutbox()

    from streaming.auth import ANONYMOUS, Identity

    mine, anonymous = FakeConn(Identity(user=user)), FakeConn(ANONYMOUS)
    relay: AlertRelay = local_relay()
    await relay.attach(mine)
    await relay.attach(anonymous)
    await publish(99.0)
    await make_alert(user, "above", 100.0)
    await publish(100.0)
    await run(evaluator())
    (event,) = await events()
    await get_channel_layer().group_send(user_group_name(user.pk), channel_event(event))
    for _ in range(100):
        if mine.outbox.frames:
            break
        await asyncio.sleep(0.02)
    (frame,) = mine.outbox.frames
    message = json.loads(frame)
    assert message["type"] == "alert" and message["event_id"] == event.pk
    assert message["symbol"] == SYMBOL and message["direction"] == "above"
    assert message["threshold"] == 100.0 and message["price"] == 100.0
    assert anonymous.outbox.frames == []
    assert channel_event(event)["type"] == ALERT_EVENT_TYPE
    relay.detach(mine)
    await close_local_relay()


# --- REST API


@pytest.fixture
def api_client(transactional_db, django_user_model, symbols):
    django_user_model.objects.create_user("bob", password="pw")
    client = Client(enforce_csrf_checks=True)
    client.force_login(django_user_model.objects.get(username="bob"))
    client.get("/")  # sets the CSRF cookie
    return client


def csrf(client: Client) -> dict:
    return {"HTTP_X_CSRFTOKEN": client.cookies["csrftoken"].value}


def test_the_rest_api_lists_creates_edits_and_deletes_alerts(api_client, django_user_model):
    c = api_client
    assert c.get("/api/alerts/").json() == []
    body = {"symbol": "ETH-USD", "direction": "below", "price": 2500.5, "note": "dip"}
    r = c.post("/api/alerts/", json.dumps(body), content_type="application/json", **csrf(c))
    assert r.status_code == 201, r.content
    made = r.json()
    assert made["symbol"] == "ETH-USD" and made["price"] == 2500.5 and made["active"]
    assert made["repeat"] is False and made["fired_count"] == 0 and made["note"] == "dip"
    assert [a["id"] for a in c.get("/api/alerts/").json()] == [made["id"]]
    r = c.patch(
        f"/api/alerts/{made['id']}", json.dumps({"price": 2400, "direction": "above"}),
        content_type="application/json", **csrf(c),
    )  # fmt: skip
    assert r.status_code == 200 and r.json()["price"] == 2400 and r.json()["direction"] == "above"
    assert c.get(f"/api/alerts/{made['id']}").json()["price"] == 2400
    assert c.get("/api/alerts/history").json() == []
    assert c.delete(f"/api/alerts/{made['id']}", **csrf(c)).status_code == 204
    assert c.get(f"/api/alerts/{made['id']}").status_code == 404


def test_the_rest_api_refuses_what_it_must(api_client, django_user_model):
    c = api_client

    def post(body, **extra):
        return c.post("/api/alerts/", json.dumps(body), content_type="application/json", **extra)

    good = {"symbol": "BTC-USD", "direction": "above", "price": 1}
    assert post(good).status_code == 403  # a session without the CSRF header
    assert post(good, **csrf(c)).status_code == 201
    assert post({**good, "symbol": "NOPE"}, **csrf(c)).status_code == 404
    for bad in (
        {**good, "price": 0},
        {**good, "price": -1},
        {**good, "direction": "up"},
        {**good, "price": 1e20},
        {**good, "note": "x" * 201},
        {"symbol": "BTC-USD"},
        {**good, "price": "5"},
        {**good, "repeat": "yes"},
        [good],
    ):
        assert post(bad, **csrf(c)).status_code == 422, bad
    made = post(good, **csrf(c)).json()["id"]
    for bad in ([None, None], {"price": "2"}, {"active": 1}):
        r = c.patch(
            f"/api/alerts/{made}", json.dumps(bad), content_type="application/json", **csrf(c)
        )
        assert r.status_code == 422, bad
    assert Client().get("/api/alerts/").status_code == 401
    # Another user's alert is not there for this one.
    other = django_user_model.objects.create_user("carol", password="pw")
    theirs = PriceAlert.objects.create(user=other, symbol="BTC-USD", direction="above", price=1)
    assert c.get(f"/api/alerts/{theirs.pk}").status_code == 404
    assert c.delete(f"/api/alerts/{theirs.pk}", **csrf(c)).status_code == 404
    assert c.get("/api/alerts/history?limit=0").status_code == 422
    assert c.get(f"/api/alerts/{2**63}").status_code == 422
    assert post({**good, "note": "a\x00b"}, **csrf(c)).status_code == 422


async def test_unchanged_ticks_are_not_stored_yet_never_read_twice(user):
    """A batch that changes nothing moves only the evaluator's own position; the next read
    starts there, and a fresh evaluator from the stored cursor re-judges to nothing."""
    await publish(50.0)
    await make_alert(user, "above", 100.0)
    ev = evaluator()
    ev.batch = 10
    await publish(51.0)
    await run(ev)  # the first batch judged stores the cursor (the first checkpoint)
    stored = (await sync_to_async(EvaluatorCursor.objects.get)(symbol=SYMBOL)).last_seq
    seqs = await publish(*[51.0 + i % 3 for i in range(30)])
    assert await run(ev) == 0
    assert ev.positions[SYMBOL][1] == seqs[-1]
    cursor = await sync_to_async(EvaluatorCursor.objects.get)(symbol=SYMBOL)
    assert cursor.last_seq == stored, "nothing changed, so nothing was written"
    assert await run(evaluator()) == 0
    more = await publish(100.0)
    assert await run(ev) == 1
    assert [e.seq for e in await events()] == more


# --- rights (issue 20, finding 1) and retention (finding 7)


async def restrict(symbol: str, *members) -> object:
    """``symbol`` restricted to a new group "pro" holding ``members``."""
    from django.contrib.auth.models import Group

    from markets.models import Symbol

    def run():
        pro, _ = Group.objects.get_or_create(name="pro")
        Symbol.objects.filter(ticker=symbol).update(required_group=pro)
        for member in members:
            member.groups.add(pro)
        return pro

    return await sync_to_async(run)()


async def test_an_owner_who_lost_the_right_gets_no_event_and_the_alert_is_switched_off(
    user, async_symbols, settings
):
    pro = await restrict(SYMBOL, user)
    await publish(99.0)
    alert = await make_alert(user, "above", 100.0, repeat=True)
    recorder = Recorder()
    ev = evaluator(recorder)
    await publish(100.0)
    assert await run(ev) == 1
    await sync_to_async(user.groups.remove)(pro)
    # No sweep in between: the check as the events are stored is what holds.
    settings.ENTITLEMENT_RECHECK_SECONDS = 3600
    await publish(99.0, 100.0, 99.0, 101.0)
    assert await run(ev) == 0
    assert len(await events()) == 1 and len(recorder.sent) == 1
    alert = await reload(alert)
    assert (alert.active, alert.off_reason, alert.fired_count) == (False, "forbidden", 1)
    assert ev.switched_off == 1


async def test_the_sweep_switches_off_alerts_whose_owner_lost_the_right(
    user, async_symbols, django_user_model
):
    pro = await restrict(SYMBOL, user)
    keeper = await sync_to_async(django_user_model.objects.create_user)("keeper")
    await sync_to_async(keeper.groups.add)(pro)
    await publish(99.0)
    lost = await make_alert(user, "above", 100.0)
    kept = await make_alert(keeper, "above", 100.0)
    public = await make_alert(user, "above", 100.0, symbol="ETH-USD")
    await sync_to_async(user.groups.remove)(pro)
    assert await sync_to_async(services.switch_off_unentitled)() == 1
    assert ((await reload(lost)).active, lost.off_reason) == (False, "forbidden")
    assert (await reload(kept)).active and (await reload(public)).active
    # The right is back: switching it on again clears the reason and re-arms it.
    await sync_to_async(user.groups.add)(pro)
    last = await _last_tick(SYMBOL)
    lost = await sync_to_async(services.update_alert)(lost, changes={"active": True}, last=last)
    assert (lost.active, lost.off_reason) == (True, "")


def test_patching_an_alert_on_a_symbol_the_caller_lost_is_403(api_client, django_user_model):
    from django.contrib.auth.models import Group

    from markets.models import Symbol

    c = api_client
    body = {"symbol": "ETH-USD", "direction": "above", "price": 1}
    made = c.post("/api/alerts/", json.dumps(body), content_type="application/json", **csrf(c))
    alert_id = made.json()["id"]
    Symbol.objects.filter(ticker="ETH-USD").update(required_group=Group.objects.create(name="x"))
    patch = json.dumps({"price": 2})
    r = c.patch(f"/api/alerts/{alert_id}", patch, content_type="application/json", **csrf(c))
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert c.get(f"/api/alerts/{alert_id}").json()["price"] == 1
    assert c.delete(f"/api/alerts/{alert_id}", **csrf(c)).status_code == 204


async def test_the_history_keeps_what_is_young_and_each_users_newest(user, django_user_model):
    from datetime import timedelta

    from django.utils import timezone

    from alerts.retention import prune_history

    other = await sync_to_async(django_user_model.objects.create_user)("other")

    def make(owner, n):
        return AlertEvent.objects.bulk_create(
            AlertEvent(user=owner, symbol=SYMBOL, direction="above", threshold=1, price=2,
                       seq=i, tick_ts=0)
            for i in range(n)
        )  # fmt: skip

    mine = await sync_to_async(make)(user, 12)
    theirs = await sync_to_async(make)(other, 3)
    old = [e.pk for e in mine[-2:]]  # the newest ids, yet fired long ago
    await sync_to_async(AlertEvent.objects.filter(pk__in=old).update)(
        fired_at=timezone.now() - timedelta(days=2)
    )
    deleted = await sync_to_async(prune_history)(days=1, per_user=5)
    assert deleted == 2 + 5
    left = {e.pk for e in await events()}
    assert left == {e.pk for e in mine[5:10]} | {e.pk for e in theirs}
    assert await sync_to_async(prune_history)(days=0, per_user=0) == 0


def test_an_evaluator_loop_logs_a_redis_outage_once(settings, caplog, db):
    """A Redis failover fails every round of the loop until it ends: one error with its
    traceback, and every failed round counted in ticker_redis_errors_total."""
    import logging
    import threading
    import time

    from alerts.evaluator import run_evaluator_blocking
    from telemetry.metrics import REDIS_ERRORS
    from tickerproject.stack import free_port

    working = settings.REDIS_URL
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    errors = REDIS_ERRORS.labels("alerts")._value.get()
    stop = threading.Event()
    caplog.set_level(logging.INFO, logger="alerts.evaluator")
    loop = threading.Thread(target=run_evaluator_blocking, args=(stop,), kwargs={"worker": "t"})
    loop.start()
    try:
        deadline = time.monotonic() + 30
        while REDIS_ERRORS.labels("alerts")._value.get() < errors + 3:
            assert time.monotonic() < deadline, "the loop did not fail three rounds"
            time.sleep(0.05)
    finally:
        stop.set()
        loop.join(30)
    settings.REDIS_URL = working
    failed = [r for r in caplog.records if "evaluation round failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info
