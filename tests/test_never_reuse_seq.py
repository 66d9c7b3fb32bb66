"""Replication is asynchronous: a (symbol, epoch, seq) is never published twice with
different content (issue 22).

A Sentinel failover can lose the last writes the old primary acknowledged. The loss is
simulated on the real Redis of the run with one atomic script that does what a promoted
replica that missed the last N publishes holds: the seq counter N back and the
history's newest N entries gone (or only one of the two). The producer must notice and
start a new epoch, so resuming subscribers get a ``reset`` and a fresh snapshot.
"""

import asyncio
import json
import subprocess
import threading
import time

import pytest
import redis
from django.conf import settings
from django.test import override_settings
from websockets.asyncio.client import connect

from feeds.lease import SymbolLeases
from feeds.services import run_feed
from markets import history, keys
from markets.publishing import TickPublisher
from markets.redis import close_redis_client
from markets.ticks import TickDraft
from telemetry import metrics
from tests.feeds_helpers import stop_feeds
from tests.realstack import real_stack
from tickerproject.stack import find_redis_server, free_port, wait_for_port

# KEYS: seq, history. ARGV: how many of the newest writes were lost, whether the counter
# and whether the history lost them. Returns the counter before.
_LOSE_LUA = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
local lost = tonumber(ARGV[1])
if ARGV[2] == '1' then redis.call('SET', KEYS[1], n - lost) end
if ARGV[3] == '1' then
  for s = n - lost + 1, n do redis.call('XDEL', KEYS[2], s .. '-0') end
end
return n
"""


def lose(r: redis.Redis, symbol: str, n: int, *, seq=True, hist=True, prefix=None) -> int:
    """The newest ``n`` writes of ``symbol`` lost, as on a replica that missed them."""
    if prefix is None:
        seq_key, hist_key = keys.seq_key(symbol), keys.history_key(symbol)
    else:
        seq_key, hist_key = f"{prefix}:seq:{symbol}", f"{prefix}:hist:{symbol}"
    return r.eval(_LOSE_LUA, 2, seq_key, hist_key, n, int(seq), int(hist))


def sync_redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)


def draft(price: float, symbol="BTC-USD") -> TickDraft:
    return TickDraft(symbol, price, price - 1, price + 1, 1.0)


class Recorder:
    """Every (symbol, epoch, seq) a publisher got, with the price it carried."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str, int], float] = {}
        self.clashes: list[tuple] = []

    def add(self, publisher: TickPublisher, ticks) -> None:
        for t in ticks:
            key = (t.symbol, publisher._known[t.symbol][1], t.seq)
            if key in self.seen and self.seen[key] != t.price:
                self.clashes.append((key, self.seen[key], t.price))
            self.seen.setdefault(key, t.price)


@pytest.mark.usefixtures("clean_redis")
@pytest.mark.parametrize(
    "shape", ["both rewound", "counter rewound", "history tail lost", "tail lost, new producer"]
)
async def test_a_lost_tail_starts_a_new_epoch_and_no_seq_is_reissued(shape):
    r = sync_redis()
    leases = SymbolLeases(token="p1", ttl_seconds=30)
    await leases.acquire(["BTC-USD"])
    publisher, recorder = TickPublisher(lease_token="p1"), Recorder()
    for i in range(6):
        recorder.add(publisher, await publisher.publish([draft(100 + i)]))
    old_epoch = publisher._known["BTC-USD"][1]
    assert old_epoch and publisher._known["BTC-USD"][0] == 6
    lose(r, "BTC-USD", 3, seq=shape != "history tail lost", hist=shape != "counter rewound")
    if shape == "tail lost, new producer":
        publisher.forget("BTC-USD")  # what a producer taking over knows: nothing
        lose(r, "BTC-USD", 0)
        r.xdel(keys.history_key("BTC-USD"), "3-0")  # the counter says 3: its tick is gone
    before = metrics.FEED_EPOCHS.labels("seq_behind")._value.get()
    ticks = await publisher.publish([draft(200), draft(201)])
    recorder.add(publisher, ticks)
    new_epoch = publisher._known["BTC-USD"][1]
    assert [t.seq for t in ticks] == [1, 2] and new_epoch != old_epoch
    assert not recorder.clashes
    # A subscriber resuming from what it saw before the loss is told, never given a gap.
    found = await history.resume(symbol="BTC-USD", since=6, epoch=old_epoch)
    assert found.reset_reason == history.RESET_EPOCH_CHANGED and found.epoch == new_epoch
    snap = await history.snapshot(symbol="BTC-USD")
    assert snap.epoch == new_epoch and [t.price for t in snap.ticks] == [200, 201]
    if shape in ("both rewound", "counter rewound"):
        assert metrics.FEED_EPOCHS.labels("seq_behind")._value.get() == before + 1


@pytest.mark.usefixtures("clean_redis")
async def test_without_a_loss_nothing_changes_epoch():
    leases = SymbolLeases(token="p1", ttl_seconds=30)
    await leases.acquire(["BTC-USD", "ETH-USD"])
    publisher = TickPublisher(lease_token="p1")
    epochs = set()
    for i in range(20):
        ticks = await publisher.publish([draft(1 + i), draft(2 + i, "ETH-USD"), draft(3 + i)])
        epochs.add(publisher._known["BTC-USD"][1])
    assert len(epochs) == 1 and ticks[-1].seq == 40
    # Another producer (no memory) carries on the same numbering.
    other = TickPublisher(lease_token="p1")
    assert (await other.publish([draft(9)]))[0].seq == 41
    assert other._known["BTC-USD"][1] in epochs


@pytest.mark.usefixtures("clean_redis", "async_symbols")
async def test_the_feed_loop_never_publishes_a_seq_twice_with_other_content(monkeypatch):
    """run_feed at 20 ticks/s while writes are lost under it, four times."""
    recorder = Recorder()
    real = TickPublisher.publish

    async def publish(self, drafts):
        ticks = await real(self, drafts)
        recorder.add(self, ticks)
        return ticks

    monkeypatch.setattr(TickPublisher, "publish", publish)
    r = sync_redis()
    stop = threading.Event()
    task = asyncio.create_task(run_feed(stop=stop, tick_rate=20, lease_seconds=2))
    epochs = []
    try:
        for shape in [(True, True), (True, False), (True, True), (False, True)]:
            await wait_for(lambda: int(r.get(keys.seq_key("BTC-USD")) or 0) >= 5)
            epochs.append(r.get(keys.epoch_key("BTC-USD")))
            lose(r, "BTC-USD", 2, seq=shape[0], hist=shape[1])
            await wait_for(lambda e=epochs[-1]: r.get(keys.epoch_key("BTC-USD")) != e)
        await wait_for(lambda: int(r.get(keys.seq_key("BTC-USD")) or 0) >= 5)
    finally:
        await stop_feeds(stop, [task])
    assert not recorder.clashes, recorder.clashes[:3]
    assert len(set(epochs)) == 4
    seqs = [int(e.split(b"-")[0]) for e, _ in r.xrange(keys.history_key("BTC-USD"))]
    assert seqs == list(range(1, len(seqs) + 1))


async def wait_for(predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


# --- over a real stack


async def recv(ws, timeout=15.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def frames_until(ws, done, timeout=20.0) -> list[dict]:
    out, deadline = [], time.monotonic() + timeout
    while not done(out):
        assert time.monotonic() < deadline, f"timed out; last frames {out[-3:]}"
        out.append(await recv(ws, max(0.1, deadline - time.monotonic())))
    return out


def clashes(frames_by_client: list[list[dict]]) -> list:
    """(epoch, seq) pairs seen with two prices, over snapshots and live ticks."""
    seen, bad = {}, []
    for frames in frames_by_client:
        epoch = None
        for f in frames:
            if f["type"] == "snapshot":
                epoch = f["epoch"]
                ticks = f["ticks"]
            elif f["type"] == "tick":
                ticks = [f]
            else:
                continue
            for t in ticks:
                key = (epoch, t["seq"])
                if key in seen and seen[key] != t["price"]:
                    bad.append((key, seen[key], t["price"]))
                seen.setdefault(key, t["price"])
    return bad


@pytest.mark.e2e
async def test_snapshots_name_the_epoch_and_a_loss_resets_resumers_over_a_real_stack(tmp_path):
    """The empty-epoch bug: a symbol first subscribed before its first tick went on
    giving later subscribers snapshots with ticks under the epoch "". And a loss of the
    newest writes reaches live and resuming subscribers as a reset and a new epoch."""
    r = sync_redis()
    symbol = "BTC-USD"
    with real_stack(tmp_path, workers=0, TICK_RATE="10", FEED_LEASE_SECONDS="2") as stack:
        sub = {"action": "subscribe", "symbols": [symbol]}
        async with connect(stack.ws_url, origin=stack.origin) as first:
            await first.send(json.dumps(sub))
            assert (await recv(first))["type"] == "subscribed"
            snap = await recv(first)
            assert snap["type"] == "snapshot" and snap["epoch"] == "" and snap["ticks"] == []
            stack.start_worker("worker1")  # the first tick comes after that subscription
            seen_first = await frames_until(
                first, lambda fs: sum(f["type"] == "tick" for f in fs) >= 3, timeout=60
            )
            epoch = r.get(f"{stack.prefix}:epoch:{symbol}").decode()
            async with connect(stack.ws_url, origin=stack.origin) as later:
                await later.send(json.dumps(sub))
                assert (await recv(later))["type"] == "subscribed"
                snap = await recv(later)
                assert snap["type"] == "snapshot" and snap["ticks"]
                assert snap["epoch"] == epoch  # was "" (issue 22)
                last = snap["ticks"][-1]["seq"]
            # The newest writes are lost (a failover): the producer starts a new epoch.
            lose(r, symbol, 3, prefix=stack.prefix)
            after = await frames_until(first, lambda fs: any(f["type"] == "reset" for f in fs))
            after += await frames_until(first, lambda fs: fs and fs[-1]["type"] == "snapshot")
            reset_snap = after[-1]
            assert reset_snap["epoch"] not in ("", epoch)
            # A client resuming from before the loss is reset too, with a fresh snapshot.
            async with connect(stack.ws_url, origin=stack.origin) as resumer:
                await resumer.send(
                    json.dumps({**sub, "since": {symbol: last}, "epochs": {symbol: epoch}})
                )
                resumed = await frames_until(
                    resumer, lambda fs: any(f["type"] == "snapshot" for f in fs)
                )
            assert any(f["type"] == "reset" and f["reason"] == "epoch_changed" for f in resumed), (
                resumed
            )
            assert resumed[-1]["epoch"] == reset_snap["epoch"]
    assert not clashes([[*seen_first, *after], [snap], resumed])


def start_redis(port: int, workdir, *extra: str) -> subprocess.Popen:
    # --dir: a replica writes the RDB of its full sync to its directory.
    proc = subprocess.Popen(
        [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir), *extra],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for_port(port)
    return proc


async def test_a_promoted_replica_starts_a_new_epoch_even_with_nothing_visibly_lost(tmp_path):
    """A replica promoted by a failover may be missing the newest writes of the counter
    and of the history alike, consistent with each other, and a producer taking over
    knows nothing to compare them with. So the counter's last server (its run_id) is kept
    beside it: a publish on another server starts a new epoch (why: server_changed). Here
    the replica lost nothing, the worst case for detection: nothing but the server shows."""
    ports = free_port(), free_port()
    (tmp_path / "primary").mkdir()
    (tmp_path / "replica").mkdir()
    primary = start_redis(ports[0], tmp_path / "primary")
    replica = start_redis(ports[1], tmp_path / "replica", "--replicaof", "127.0.0.1", str(ports[0]))
    urls = [f"redis://127.0.0.1:{p}/0" for p in ports]
    try:
        with override_settings(REDIS_URL=urls[0], REDIS_SHARD_URLS=[urls[0]]):
            publisher = TickPublisher.unfenced_for_tests()
            ticks = [t for i in range(5) for t in await publisher.publish([draft(100 + i)])]
            old_epoch = publisher._known["BTC-USD"][1]
            # Another producer on the same server carries on the numbering.
            more = await TickPublisher.unfenced_for_tests().publish([draft(105)])
            assert [t.seq for t in [*ticks, *more]] == [1, 2, 3, 4, 5, 6]
            await close_redis_client()
        sync = redis.Redis.from_url(urls[0], socket_timeout=5)
        assert sync.wait(1, 5000) == 1  # the replica has every write
        promoted = redis.Redis.from_url(urls[1], socket_timeout=5)
        promoted.replicaof("NO", "ONE")
        before = metrics.FEED_EPOCHS.labels("server_changed")._value.get()
        with override_settings(REDIS_URL=urls[1], REDIS_SHARD_URLS=[urls[1]]):
            assert (await history.snapshot(symbol="BTC-USD")).ticks[-1].seq == 6
            taker = TickPublisher.unfenced_for_tests()  # knows nothing: a takeover
            after = await taker.publish([draft(200), draft(201)])
            new_epoch = taker._known["BTC-USD"][1]
            found = await history.resume(symbol="BTC-USD", since=6, epoch=old_epoch)
            await close_redis_client()
        assert [t.seq for t in after] == [1, 2] and new_epoch != old_epoch
        assert metrics.FEED_EPOCHS.labels("server_changed")._value.get() == before + 1
        assert found.reset_reason == history.RESET_EPOCH_CHANGED and found.epoch == new_epoch
    finally:
        for proc in (replica, primary):
            proc.kill()
            proc.wait()
