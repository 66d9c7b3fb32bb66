"""The load-test harness: its bookkeeping, its frame handling, and whole runs.

Unit tests check the statistics against hand-made seq and latency sequences.
The end-to-end tests run ``manage.py loadtest`` as a subprocess, once against the
bare-Python reference server and once against a real stack (daphne + Celery +
Redis), and check the figures and reports it produced.
"""

import asyncio
import base64
import hashlib
import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from websockets.sync.client import connect as sync_connect

from loadtest.capacity import MAX_STEPS, CapacityPlan, capacity_lines, run_capacity
from loadtest.client import RECONNECT_ATTEMPTS, Run, TickClient, reconnect_delay
from loadtest.config import LoadTestConfig, origin_for
from loadtest.report import build_report, judge, render_html, report_paths, summary_lines
from loadtest.runner import Outcome, Second, _Timeline
from loadtest.stats import LatencyHistogram, SeqCounts, SeqTracker, WorkerTotals, percentile
from tests.realstack import free_port, real_stack, wait_for_port

BASE_DIR = Path(__file__).resolve().parent.parent
THRESHOLD_EXIT_CODE = 3


def make_config(**overrides) -> LoadTestConfig:
    values = {
        "url": "ws://127.0.0.1:1/ws/prices/",
        "origin": "http://127.0.0.1:1",
        "clients": 10,
        "symbols_per_client": 2,
        "symbols": ("AAPL", "BTC-USD", "ETH-USD", "MSFT"),
        "duration": 5.0,
        "ramp": 1.0,
        "processes": 2,
        "tick_rate": 10.0,
    }
    values.update(overrides)
    return LoadTestConfig(**values)


# --- seq checks


def feed(tracker: SeqTracker, seqs: list[int], counting: bool = True) -> SeqCounts:
    counts = SeqCounts()
    for seq in seqs:
        tracker.observe(seq, counting, counts)
    return counts


def test_contiguous_seqs_are_clean():
    counts = feed(SeqTracker(), list(range(41, 61)))
    assert counts == SeqCounts()


def test_a_skipped_seq_is_a_gap_of_the_right_size():
    counts = feed(SeqTracker(), [1, 2, 3, 7, 8, 10])
    assert counts.gaps == 3 + 1
    assert counts.duplicates == counts.out_of_order == 0


def test_a_repeated_seq_is_a_duplicate():
    counts = feed(SeqTracker(), [1, 2, 2, 3, 1])
    assert counts.duplicates == 2
    assert counts.gaps == counts.out_of_order == 0


def test_a_late_seq_is_out_of_order_and_not_a_gap():
    counts = feed(SeqTracker(), [1, 2, 4, 5, 3, 6])
    assert counts.out_of_order == 1
    assert counts.gaps == 0  # 3 arrived late: nothing was lost
    assert counts.duplicates == 0
    # ...and the same seq once more is then a duplicate.
    tracker = SeqTracker()
    counts = feed(tracker, [1, 3, 2, 2])
    assert (counts.out_of_order, counts.duplicates, counts.gaps) == (1, 1, 0)


def test_a_snapshot_seeds_the_stream():
    tracker = SeqTracker()
    tracker.seed(100)
    assert feed(tracker, [101, 102]) == SeqCounts()
    tracker = SeqTracker()
    tracker.seed(100)
    assert feed(tracker, [103]).gaps == 2


def test_a_snapshot_takes_back_gaps_it_covers():
    tracker = SeqTracker()
    counts = SeqCounts()
    for seq in (1, 5):
        tracker.observe(seq, True, counts)
    assert counts.gaps == 3
    tracker.seed(5)  # seqs 2..4 arrive in the snapshot: forget them as missing
    tracker.observe(3, True, counts)
    assert counts.duplicates == 1 and counts.out_of_order == 0


def test_reset_forgets_the_stream():
    tracker = SeqTracker()
    counts = feed(tracker, [50, 51])
    tracker.reset()
    for seq in (1, 2):
        tracker.observe(seq, True, counts)
    assert counts == SeqCounts()


def test_anomalies_before_the_window_seed_but_are_not_counted():
    tracker = SeqTracker()
    counts = feed(tracker, [1, 5, 5], counting=False)
    assert counts == SeqCounts(gaps_before_window=3)  # apart from the window's figures
    assert tracker.last == 5
    assert feed(tracker, [6, 7]) == SeqCounts()
    assert (tracker.first_counted, tracker.last_counted) == (6, 7)


def test_announced_conflation_is_counted_and_is_not_a_gap():
    tracker = SeqTracker()
    counts = SeqCounts()
    for seq, skipped in ((1, 0), (2, 0), (5, 2), (6, 0), (10, 3)):
        tracker.observe(seq, True, counts, skipped)
    assert counts == SeqCounts(conflated=5)
    assert tracker.missing == {}


def test_a_jump_beyond_the_announced_conflation_is_still_a_gap():
    tracker = SeqTracker()
    counts = SeqCounts()
    tracker.observe(1, True, counts)
    tracker.observe(7, True, counts, 2)  # 5 and 6 conflated; 2, 3 and 4 lost
    assert (counts.gaps, counts.conflated) == (3, 2)
    assert sorted(tracker.missing) == [2, 3, 4]
    tracker.observe(3, True, counts)  # a lost one arrives late: out of order, not a gap
    tracker.observe(6, True, counts)  # a conflated one "arrives": a duplicate
    assert (counts.gaps, counts.out_of_order, counts.duplicates) == (2, 1, 1)


def test_skipped_larger_than_the_jump_is_a_mismatch():
    tracker = SeqTracker()
    counts = SeqCounts()
    for seq, skipped in ((1, 0), (3, 5), (4, 1)):
        tracker.observe(seq, True, counts, skipped)
    assert counts == SeqCounts(conflated=1, conflation_mismatch=2)


def test_conflation_before_the_window_is_not_counted():
    tracker = SeqTracker()
    counts = SeqCounts()
    tracker.observe(1, False, counts)
    tracker.observe(4, False, counts, 2)
    assert counts == SeqCounts() and tracker.last == 4


# --- latency


def test_histogram_percentiles_match_nearest_rank():
    hist = LatencyHistogram()
    values = [float(v) for v in range(1, 1001)]
    for v in reversed(values):
        hist.record(v)
    for p in (50, 90, 99):
        assert hist.percentile(p) == percentile(values, p)
    assert (hist.percentile(50), hist.percentile(90), hist.percentile(99)) == (500, 900, 990)
    assert hist.percentile(100) == hist.summary()["max"] == 1000
    assert hist.summary()["mean"] == pytest.approx(500.5)


def test_histogram_floors_to_a_tenth_of_a_millisecond_and_clamps_negatives():
    hist = LatencyHistogram()
    for v in (0.04, 0.15, 12.349, -3.0):
        hist.record(v)
    assert hist.percentile(25) == 0.0
    assert hist.percentile(75) == 0.1
    assert hist.percentile(99) == 12.3
    assert LatencyHistogram().percentile(50) is None


def test_histograms_merge_as_if_recorded_together():
    a, b, both = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for i in range(500):
        (a if i % 3 else b).record(i / 7)
        both.record(i / 7)
    a.merge(b)
    assert a.counts == both.counts
    assert a.summary() == both.summary()
    xs, ys = a.cdf()
    assert xs == sorted(xs) and ys == sorted(ys) and ys[-1] == 1.0


def test_worker_totals_merge_sums_and_unions():
    a, b = WorkerTotals(opened=3, ticks_counted=10), WorkerTotals(opened=2, ticks_counted=5)
    a.errors["bad_json"] += 1
    b.errors["bad_json"] += 2
    a.seq_span["AAPL"] = [10, 20]
    b.seq_span["AAPL"] = [8, 18]
    b.seq_span["MSFT"] = [1, 2]
    a.merge(b)
    assert (a.opened, a.ticks_counted, a.errors["bad_json"]) == (5, 15, 3)
    assert a.seq_span == {"AAPL": [10, 20], "MSFT": [1, 2]}  # the newest at each end


# --- configuration


def test_symbols_are_spread_evenly_over_clients():
    cfg = make_config(clients=30, symbols_per_client=3, symbols=tuple(f"S{i}" for i in range(7)))
    per_symbol = Counter(s for c in range(cfg.clients) for s in cfg.client_symbols(c))
    assert sum(per_symbol.values()) == 30 * 3
    assert max(per_symbol.values()) - min(per_symbol.values()) <= 1
    for c in range(cfg.clients):
        assert len(set(cfg.client_symbols(c))) == 3


def test_clients_are_split_across_processes_without_overlap():
    cfg = make_config(clients=11, processes=3)
    shares = [cfg.worker_clients(w) for w in range(3)]
    assert sorted(i for share in shares for i in share) == list(range(11))
    assert [len(s) for s in shares] == [4, 4, 3]


def test_config_rejects_impossible_loads():
    with pytest.raises(ValueError, match="more than"):
        make_config(symbols_per_client=5)
    with pytest.raises(ValueError):
        make_config(clients=0)
    with pytest.raises(ValueError):
        make_config(batch_ms=5000)
    assert make_config(symbols_per_client=0).expected_ticks_per_s == 0


def test_subscribe_options_mode_max_rate_and_snapshot():
    assert make_config().subscribe_options() == {}
    cfg = make_config(mode="latest", max_rate=2.5, snapshot=0, batch_ms=0)
    assert cfg.subscribe_options() == {
        "batch_ms": 0, "mode": "latest", "max_rate": 2.5, "snapshot": 0,
    }  # fmt: skip
    # A max_rate below the tick rate caps what each stream should get.
    assert cfg.expected_ticks_per_s == 10 * 2 * 2.5
    assert make_config(mode="latest", max_rate=50).expected_ticks_per_s == 10 * 2 * 10
    for bad in (
        {"mode": "some"},
        {"max_rate": 5},  # only with latest
        {"mode": "latest", "max_rate": 0},
        {"mode": "latest", "max_rate": 1001},
        {"snapshot": -1},
        {"snapshot": 301},
    ):
        with pytest.raises(ValueError):
            make_config(**bad)


def test_origin_follows_the_url():
    assert origin_for("ws://127.0.0.1:8000/ws/prices/") == "http://127.0.0.1:8000"
    assert origin_for("wss://example.test/ws/") == "https://example.test"
    with pytest.raises(ValueError):
        origin_for("http://127.0.0.1/")


# --- frame handling in one client, no server needed


def tick(symbol: str, seq: int, ts: int) -> dict:
    return {"type": "tick", "symbol": symbol, "seq": seq, "ts": ts, "price": 1.0,
            "bid": 0.9, "ask": 1.1, "size": 0.1}  # fmt: skip


async def test_client_counts_tick_batch_snapshot_error_and_reset_frames():
    cfg = make_config(ramp=0.0, duration=60.0)
    run = Run(cfg, t0=time.time() - 1)  # inside the measurement window
    client = TickClient(run, 0, ["AAPL", "BTC-USD"])
    now = time.time() * 1000
    ts = int(now) - 20

    def send(msg: dict) -> None:
        client._text(json.dumps(msg).encode(), now)

    send({"type": "subscribed", "id": 1, "symbols": ["AAPL", "BTC-USD"]})
    # Snapshot ticks seed the seq check and never count as delivered or for latency.
    send({"type": "snapshot", "symbol": "AAPL", "epoch": "1",
          "ticks": [tick("AAPL", s, ts - 5000) for s in (8, 9, 10)]})  # fmt: skip
    send({"type": "snapshot", "symbol": "BTC-USD", "epoch": "1", "ticks": []})
    send(tick("AAPL", 11, ts))
    send({"type": "ticks", "ticks": [tick("AAPL", 12, ts), tick("BTC-USD", 500, ts)]})
    send({"type": "ticks", "ticks": [tick("AAPL", 14, ts), tick("BTC-USD", 501, ts)]})
    send(tick("AAPL", 14, ts))
    send({"type": "error", "id": None, "code": "bad_request", "message": "x"})
    send({"type": "reset", "symbol": "BTC-USD", "reason": "epoch_changed"})
    send(tick("BTC-USD", 1, ts))
    send(tick("MSFT", 1, ts))
    client._text(b"not json", now)

    t = run.totals
    assert t.subscribed == 1
    assert (t.snapshots, t.snapshot_ticks) == (2, 3)
    assert t.ticks_counted == t.ticks == 7
    assert t.batch_frames_counted == 2
    assert t.latency.total == 7 and 19 <= t.latency.percentile(50) <= 21
    assert t.seq == SeqCounts(gaps=1, duplicates=1, out_of_order=0, resets=1)
    assert t.errors == Counter({"bad_request": 1})
    assert t.unexpected == Counter({"tick of a symbol not subscribed": 1, "not a JSON object": 1})


async def test_ticks_outside_the_window_are_not_measured():
    cfg = make_config(ramp=30.0, duration=5.0)
    run = Run(cfg, t0=time.time())  # the ramp has only begun
    client = TickClient(run, 0, ["AAPL"])
    now = time.time() * 1000
    for seq in (1, 2, 4):
        client._text(json.dumps(tick("AAPL", seq, int(now))).encode(), now)
    t = run.totals
    assert t.ticks == 3 and t.ticks_counted == 0 and t.latency.total == 0
    assert t.seq.gaps == 0
    assert client.trackers["AAPL"].last == 4
    # Not measured, but counted: the seam after a subscribe is where streams start.
    assert t.seq.gaps_before_window == 1


def test_a_gap_before_the_window_is_counted_apart_and_taken_back_when_filled():
    tracker = SeqTracker()
    counts = feed(tracker, [1, 4], counting=False)
    assert (counts.gaps, counts.gaps_before_window) == (0, 2)
    tracker.observe(3, False, counts)
    assert (counts.gaps, counts.gaps_before_window) == (0, 1)


async def test_client_counts_announced_conflation_in_latest_mode():
    run = Run(make_config(ramp=0.0, duration=60.0, mode="latest"), t0=time.time() - 1)
    client = TickClient(run, 0, ["AAPL"])
    now = time.time() * 1000
    ts = int(now) - 5

    def send(msg: dict) -> None:
        client._text(json.dumps(msg).encode(), now)

    send({"type": "snapshot", "symbol": "AAPL", "epoch": "7", "ticks": [tick("AAPL", 10, ts)]})
    send({**tick("AAPL", 13, ts), "skipped": 2})
    send({"type": "ticks", "ticks": [tick("AAPL", 14, ts), {**tick("AAPL", 20, ts), "skipped": 4}]})
    send({**tick("AAPL", 21, ts), "skipped": "many"})
    t = run.totals
    assert t.ticks_counted == 4 and t.latency.total == 4
    assert t.seq == SeqCounts(gaps=1, conflated=6)  # 19 is a gap: 15-18 were skipped
    assert t.unexpected == Counter({"tick with a bad 'skipped'": 1})
    assert client.epochs == {"AAPL": "7"}


class FakeTransport:
    """Stands in for the socket: records what the client writes."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        if self.closed:  # as uvloop does
            raise RuntimeError("unable to perform operation on a closed transport")
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """An unmasked frame as a server sends it (RFC 6455 section 5.2)."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        return bytes([first, n]) + payload
    if n < 65536:
        return bytes([first, 126]) + n.to_bytes(2) + payload
    return bytes([first, 127]) + n.to_bytes(8) + payload


def handshake_response(transport: FakeTransport) -> bytes:
    request = b"".join(transport.written)
    key = re.search(rb"Sec-WebSocket-Key: (\S+)", request).group(1)
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )


def client_texts(transport: FakeTransport) -> list[dict]:
    """The JSON text frames a client wrote (masked, as RFC 6455 has clients send)."""
    data = b"".join(transport.written)
    data = data[data.index(b"\r\n\r\n") + 4 :] if data.startswith(b"GET ") else data
    out = []
    pos = 0
    while pos < len(data):
        opcode, n = data[pos] & 0x0F, data[pos + 1] & 0x7F
        pos += 2
        if n == 126:
            n, pos = int.from_bytes(data[pos : pos + 2]), pos + 2
        elif n == 127:
            n, pos = int.from_bytes(data[pos : pos + 8]), pos + 8
        mask, pos = data[pos : pos + 4], pos + 4
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(data[pos : pos + n]))
        pos += n
        if opcode == 0x1:
            out.append(json.loads(payload))
    return out


def open_client(run: Run, symbols: list[str]) -> tuple[TickClient, FakeTransport]:
    client = TickClient(run, 0, symbols)
    transport = FakeTransport()
    client.connection_made(transport)
    client.data_received(handshake_response(transport))
    return client, transport


def feed_frames(client: TickClient, *messages: dict | bytes) -> None:
    client.data_received(
        b"".join(
            m if isinstance(m, bytes) else server_frame(0x1, json.dumps(m).encode())
            for m in messages
        )
    )


async def test_closing_a_client_whose_socket_the_server_already_dropped_does_not_crash():
    # Seen at 4,500 clients: the server dropped the socket, connection_lost had not run
    # yet, and the end-of-run close wrote to the closed transport and took the whole
    # client process down with it.
    run = Run(make_config(), t0=time.time())
    client, transport = open_client(run, ["AAPL"])
    transport.closed = True
    sent = len(transport.written)
    client.close()
    assert len(transport.written) == sent


async def test_a_slow_consumer_close_resumes_with_since_and_epochs(monkeypatch):
    """Close code 4008: the client reconnects and resubscribes from the last seq of each
    stream with the snapshots' epochs; the streams go on with no gap and no duplicate."""
    run = Run(make_config(ramp=0.0, duration=60.0, batch_ms=0, snapshot=5), t0=time.time() - 1)
    connections: list[FakeTransport] = []

    async def fake_open(run_, factory):
        transport = FakeTransport()
        connections.append(transport)
        protocol = factory()
        protocol.connection_made(transport)
        protocol.data_received(handshake_response(transport))

    monkeypatch.setattr("loadtest.client.open_connection", fake_open)
    monkeypatch.setattr("loadtest.client.reconnect_delay", lambda attempt: 0.0)
    client, first = open_client(run, ["AAPL", "MSFT"])
    now_ms = int(time.time() * 1000)
    feed_frames(
        client,
        {"type": "subscribed", "id": 1, "symbols": ["AAPL", "MSFT"]},
        {"type": "snapshot", "symbol": "AAPL", "epoch": "e1", "ticks": [tick("AAPL", 3, now_ms)]},
        {"type": "snapshot", "symbol": "MSFT", "epoch": "e2", "ticks": []},
        tick("AAPL", 4, now_ms),
        tick("MSFT", 10, now_ms),
        server_frame(0x8, (4008).to_bytes(2) + b"slow consumer"),
    )
    assert client_texts(first) == [
        {"action": "subscribe", "symbols": ["AAPL", "MSFT"], "id": 1, "batch_ms": 0,
         "snapshot": 5},
    ]  # fmt: skip
    client.connection_lost(None)
    t = run.totals
    assert (t.slow_consumer_closes, t.closed_early, run.open) == (1, 0, 0)
    assert not client.closed.done()
    await asyncio.wait_for(asyncio.gather(*run.reconnects), 5)

    (second,) = connections
    assert client_texts(second) == [
        {"action": "subscribe", "symbols": ["AAPL", "MSFT"], "id": 1, "batch_ms": 0,
         "snapshot": 5, "since": {"AAPL": 4, "MSFT": 10}, "epochs": {"AAPL": "e1", "MSFT": "e2"}},
    ]  # fmt: skip
    feed_frames(
        client,
        {"type": "subscribed", "id": 1, "symbols": ["AAPL", "MSFT"]},
        tick("AAPL", 5, now_ms),
        {"type": "ticks", "ticks": [tick("MSFT", 11, now_ms), tick("AAPL", 6, now_ms)]},
    )
    assert t.seq == SeqCounts()
    assert (t.opened, t.subscribed, t.reconnect_attempts, t.reconnected, t.resumed) == (
        1, 1, 1, 1, 1,
    )  # fmt: skip
    assert (t.closed_early, t.close_codes, run.open) == (0, Counter(), 1)
    assert client.is_open and not client.closed.done()
    # Closed again with 4008 once resumed: resumed again.
    feed_frames(client, server_frame(0x8, (4008).to_bytes(2)))
    client.connection_lost(None)
    await asyncio.wait_for(asyncio.gather(*run.reconnects), 5)
    assert client_texts(connections[1])[0]["since"] == {"AAPL": 6, "MSFT": 11}
    assert (t.slow_consumer_closes, t.reconnected) == (2, 2)


async def test_a_resumed_connection_closed_again_at_once_resumes_again(monkeypatch):
    """A 4008 on the new connection before the reconnect that opened it has finished:
    the second reconnect owns the client, the first one must not end it."""
    run = Run(make_config(ramp=0.0, duration=60.0), t0=time.time() - 1)
    opened = 0

    async def fake_open(run_, factory):
        nonlocal opened
        opened += 1
        protocol = factory()
        transport = FakeTransport()
        protocol.connection_made(transport)
        protocol.data_received(handshake_response(transport))
        if opened == 1:  # dropped again straight away
            feed_frames(protocol, server_frame(0x8, (4008).to_bytes(2)))
            protocol.connection_lost(None)

    monkeypatch.setattr("loadtest.client.open_connection", fake_open)
    monkeypatch.setattr("loadtest.client.reconnect_delay", lambda attempt: 0.0)
    client, _ = open_client(run, ["AAPL"])
    feed_frames(client, server_frame(0x8, (4008).to_bytes(2)))
    client.connection_lost(None)
    while run.reconnects:
        await asyncio.wait_for(asyncio.gather(*list(run.reconnects)), 5)
    t = run.totals
    assert (t.slow_consumer_closes, t.reconnected, t.closed_early) == (2, 2, 0)
    assert client.is_open and run.open == 1 and not client.closed.done()


async def test_a_slow_consumer_that_cannot_reconnect_gives_up(monkeypatch):
    run = Run(make_config(ramp=0.0, duration=60.0), t0=time.time() - 1)

    async def refused(run_, factory):
        raise ConnectionRefusedError("refused")

    monkeypatch.setattr("loadtest.client.open_connection", refused)
    monkeypatch.setattr("loadtest.client.reconnect_delay", lambda attempt: 0.0)
    client, _ = open_client(run, ["AAPL"])
    feed_frames(client, server_frame(0x8, (4008).to_bytes(2)))
    client.connection_lost(None)
    await asyncio.wait_for(asyncio.gather(*run.reconnects), 5)
    t = run.totals
    assert (t.slow_consumer_closes, t.reconnect_attempts, t.reconnected) == (
        1, RECONNECT_ATTEMPTS, 0,
    )  # fmt: skip
    assert (t.resume_failed, t.closed_early) == (1, 1)
    assert t.close_codes == Counter({"4008 (reconnect failed)": 1})
    assert sum(t.reconnect_errors.values()) == RECONNECT_ATTEMPTS
    assert client.closed.done()


async def test_other_close_codes_are_early_closes_without_reconnect():
    run = Run(make_config(ramp=0.0, duration=60.0), t0=time.time() - 1)
    client, _ = open_client(run, ["AAPL"])
    feed_frames(client, server_frame(0x8, (1011).to_bytes(2)))
    client.connection_lost(None)
    t = run.totals
    assert (t.closed_early, t.slow_consumer_closes, len(run.reconnects)) == (1, 0, 0)
    assert t.close_codes == Counter({"1011": 1})
    assert client.closed.done()


def test_reconnect_delay_is_jittered_bounded_and_grows():
    delays = [reconnect_delay(0) for _ in range(200)]
    assert 0.05 <= min(delays) and max(delays) <= 0.25 and len(set(delays)) > 1
    assert all(0.1 <= reconnect_delay(1) <= 0.5 for _ in range(50))
    assert reconnect_delay(10) == 2.0


@pytest.mark.parametrize("chunk", [1, 3, 50, 1000, 1_000_000])
async def test_client_reads_frames_split_anywhere(chunk):
    """Frames reach the client cut at any byte: tick frames take the fast path, the
    others (ping, fragments, close) go whole through the websockets protocol."""
    now_ms = int(time.time() * 1000)
    run = Run(make_config(ramp=0.0, duration=60.0), t0=time.time() - 1)
    client = TickClient(run, 0, ["AAPL", "MSFT"])
    transport = FakeTransport()
    client.connection_made(transport)

    def text(msg: dict) -> bytes:
        return json.dumps(msg).encode()

    big_snapshot = text(
        {"type": "snapshot", "symbol": "MSFT", "epoch": "1",
         "ticks": [tick("MSFT", s, now_ms) for s in range(1, 701)]}
    )  # fmt: skip
    assert len(big_snapshot) > 65536  # a 64-bit length field
    split_tick = text(tick("AAPL", 3, now_ms))
    stream = b"".join(
        [
            handshake_response(transport),
            server_frame(0x1, text({"type": "subscribed", "id": 1, "symbols": ["AAPL"]})),
            server_frame(0x1, text(tick("AAPL", 1, now_ms))),
            server_frame(0x9, b"are you there"),
            server_frame(0x1, big_snapshot),
            server_frame(0x1, text({"type": "ticks", "ticks": [tick("AAPL", 2, now_ms)]})),
            server_frame(0x1, split_tick[:10], fin=False),
            server_frame(0x0, split_tick[10:]),
            server_frame(0x1, text(tick("MSFT", 701, now_ms))),
            server_frame(0x1, text(tick("AAPL", 5, now_ms))),
            server_frame(0x8, (1000).to_bytes(2) + b"bye"),
        ]
    )
    for i in range(0, len(stream), chunk):
        client.data_received(stream[i : i + chunk])

    t = run.totals
    assert client.is_open and t.opened == 1 and t.subscribed == 1
    assert t.snapshots == 1 and t.snapshot_ticks == 700
    assert t.ticks == t.ticks_counted == 5
    assert t.seq == SeqCounts(gaps=1)  # AAPL 4 never came
    assert t.unexpected == Counter()
    sent = transport.written[1:]  # after the HTTP request
    subscribe = sent[0]
    assert subscribe[0] == 0x81 and subscribe[1] & 0x80  # a masked text frame
    opcodes = [frame[0] & 0x0F for frame in sent]
    assert opcodes == [0x1, 0xA, 0x8]  # subscribe, the pong, the close reply


# --- progress, report, thresholds


def test_timeline_sums_processes_per_second_and_waits_for_laggards():
    cfg = make_config(processes=2, ramp=1.0, duration=2.0)
    rows: list[Second] = []
    timeline = _Timeline(cfg, rows.append)
    timeline.add(0, 1, (5, 5, 0, 0, 100, 90))
    assert rows == []  # process 1 has not reported second 1 yet
    timeline.add(1, 1, (4, 4, 1, 0, 50, 40))
    timeline.add(1, 2, (4, 4, 1, 0, 150, 130))
    timeline.add(0, 2, (5, 5, 0, 0, 300, 280))
    assert [(r.second, r.phase, r.open, r.failed) for r in rows] == [
        (1, "ramp", 9, 1),
        (2, "measure", 9, 1),
    ]
    assert (rows[1].frames_per_s, rows[1].ticks_per_s) == (300, 280)


def synthetic_outcome(**config) -> Outcome:
    cfg = make_config(**config)
    totals = WorkerTotals(clients=10, attempted=10, opened=10, subscribed=10, streams=20)
    for i in range(900):
        totals.latency.record(1 + i % 50)
    totals.ticks_counted = totals.frames_counted = 900
    totals.seq.gaps = 9
    totals.seq_span = {"AAPL": [0, 50], "MSFT": [2, 52]}
    totals.stream_spans = [50] * 18 + [25, 10]
    totals.cpu_seconds = [0.5, 0.6]
    totals.cpu_system_seconds = [0.25, 0.3]
    totals.connect_ms = [1.0, 2.0, 30.0]
    timeline = [Second(s, "measure", 10, 10, 0, 0, 180 * s, 180 * s, 180, 180) for s in range(1, 7)]
    return Outcome(cfg, totals, timeline, "2026-01-01T00:00:00+00:00", "later")


def test_report_figures_and_thresholds():
    report = build_report(synthetic_outcome(thresholds={"max_p99_ms": 10, "max_gap_ratio": 0}))
    assert report["throughput"]["delivered_ticks_per_s"] == 180.0
    assert report["throughput"]["expected_ticks_per_s"] == 200.0
    assert report["throughput"]["delivered_ratio"] == 0.9
    assert report["throughput"]["observed_tick_rate"] == 10.0
    assert report["throughput"]["stream_progress_per_s"] == {"median": 10.0, "slowest_10pct": 5.0}
    assert report["seq"]["gap_ratio"] == pytest.approx(9 / 909, abs=1e-6)
    assert report["latency_ms"]["p99"] == 50
    # 1.1 CPU seconds for 900 frames: the harness's cost per frame.
    assert report["harness"]["cpu_us_per_frame"] == pytest.approx(1.1 / 900 * 1e6, abs=0.01)
    assert report["harness"]["cpu_system_share"] == 0.5
    verdict = report["thresholds"]
    assert not verdict["passed"]
    assert len(verdict["violations"]) == 2
    ok = judge(report, {"max_p99_ms": 50, "max_gap_ratio": 0.01, "min_delivered_ratio": 0.9})
    assert ok["passed"] and ok["violations"] == []
    json.dumps(report)  # JSON-ready throughout


def test_no_gap_allowed_means_none_before_the_window_either():
    outcome = synthetic_outcome()
    outcome.totals.seq.gaps = 0
    outcome.totals.seq.gaps_before_window = 2
    report = build_report(outcome)
    assert report["seq"]["gaps_before_window"] == 2
    assert "2 before the window" in "\n".join(summary_lines(report))
    assert judge(report, {"max_gap_ratio": 0})["violations"] == [
        "2 seqs went missing before the window"
    ]
    assert judge(report, {"max_gap_ratio": 0.01})["passed"]


def test_report_shows_conflation_and_slow_consumer_resumes():
    outcome = synthetic_outcome(mode="latest", max_rate=5)
    t = outcome.totals
    t.seq.conflated, t.seq.conflation_mismatch = 40, 1
    t.slow_consumer_closes, t.reconnect_attempts, t.reconnected, t.resumed = 3, 4, 3, 3
    t.reconnect_errors["ConnectionRefusedError: refused"] = 1
    report = build_report(outcome)
    assert (report["seq"]["conflated"], report["seq"]["conflation_mismatch"]) == (40, 1)
    c = report["connections"]
    assert (c["slow_consumer_closes"], c["reconnect_attempts"], c["resumed"]) == (3, 4, 3)
    assert c["resume_failed"] == 0
    assert c["reconnect_errors"] == {"ConnectionRefusedError: refused": 1}
    assert report["config"]["mode"] == "latest" and report["config"]["max_rate"] == 5
    assert report["throughput"]["expected_ticks_per_s"] == 10 * 2 * 5
    text = "\n".join(summary_lines(report))
    assert "conflated 40 (1 ticks skipped more than the jump)" in text
    assert "slow-consumer closes 3 / resumed 3" in text
    assert "3 slow-consumer closes (4008): 4 attempts, 3 reconnected, 3 resumed" in text
    page = render_html(report)
    assert "conflated 40" in page and "mode latest (max_rate 5/s)" in page


def test_html_report_is_self_contained():
    page = render_html(build_report(synthetic_outcome()))
    assert_self_contained(page)


def assert_self_contained(page: str) -> None:
    # plotly.js itself is inline: no <script src>, no stylesheet link, no CDN load.
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert not re.search(r"<link[^>]*\bhref=", page)
    assert "plotly.js v" in page
    assert page.count('class="plotly-graph-div"') == 3


def test_report_paths():
    assert report_paths("out/run") == (Path("out/run.json"), Path("out/run.html"))
    assert report_paths("out/run.html") == (Path("out/run.json"), Path("out/run.html"))


# --- capacity mode


def test_capacity_plan_parses_and_bounds_its_steps():
    plan = CapacityPlan.parse("100:100:450", max_p99_ms=50, min_delivered_ratio=0.9)
    assert plan.client_counts() == [100, 200, 300, 400]
    assert (plan.max_p99_ms, plan.min_delivered_ratio, plan.budget_s) == (50, 0.9, 600.0)
    assert len(CapacityPlan.parse("1:1:100000").client_counts()) == MAX_STEPS
    for bad in ("100", "a:b:c", "0:1:10", "10:0:20", "20:5:10", "1:1:2:3"):
        with pytest.raises(ValueError):
            CapacityPlan.parse(bad)
    with pytest.raises(ValueError):
        CapacityPlan(1, 1, 2, min_delivered_ratio=1.5)


def fake_step(p99_for: dict[int, float], delivered: float = 1.0):
    """A stand-in for run_loadtest: every tick of a step at its p99, ``delivered`` of
    what was expected received."""
    calls = []

    def run(*, config: LoadTestConfig, on_second=None) -> Outcome:
        calls.append(config)
        totals = WorkerTotals(clients=config.clients, attempted=config.clients)
        totals.opened = config.clients
        n = int(config.expected_ticks_per_s * config.duration * delivered)
        for _ in range(n):
            totals.latency.record(p99_for[config.clients])
        totals.ticks_counted = totals.frames_counted = n
        totals.cpu_seconds = [0.1]
        return Outcome(config, totals, [], "start", "end")

    return run, calls


def test_capacity_stops_at_the_first_step_that_does_not_hold():
    run, calls = fake_step({2: 10.0, 4: 60.0, 6: 150.0, 8: 20.0})
    steps = []
    plan = CapacityPlan.parse("2:2:8", max_p99_ms=100)
    result = run_capacity(make_config(processes=4), plan, run=run, on_step=steps.append)
    assert [c.clients for c in calls] == [2, 4, 6]  # 8 is never tried
    assert [c.processes for c in calls] == [2, 4, 4]
    assert all(c.thresholds == {} for c in calls)
    assert result["max_clients_held"] == 4
    assert [r["held"] for r in result["steps"]] == [True, True, False] and steps == result["steps"]
    assert result["steps"][2]["why_not"] == ["p99 150.0 ms above 100 ms"]
    assert result["stopped"].startswith("6 clients did not hold")
    json.dumps(result)


def test_capacity_judges_delivery_too_and_may_hold_nothing():
    run, _ = fake_step({1: 1.0, 2: 1.0}, delivered=0.98)
    result = run_capacity(make_config(), CapacityPlan.parse("1:1:2"), run=run)
    assert result["max_clients_held"] is None
    assert result["steps"][0]["why_not"] == ["delivered 0.98 below 0.99"]
    lines = capacity_lines(result)
    assert "no step held" in lines[-1] and "NO: delivered 0.98" in lines[1]


def test_capacity_keeps_to_its_time_budget():
    step, calls = fake_step(dict.fromkeys(range(1, 11), 1.0))
    now = [0.0]

    def run(**kwargs) -> Outcome:
        now[0] += 11.0  # each step takes as long as foreseen: 1 + 5 + STEP_OVERHEAD_S
        return step(**kwargs)

    cfg = make_config(ramp=1.0, duration=5.0)
    plan = CapacityPlan.parse("1:1:10", budget_s=40)
    result = run_capacity(cfg, plan, run=run, clock=lambda: now[0])
    assert [c.clients for c in calls] == [1, 2, 3]  # a 4th would end at 44 s
    assert result["max_clients_held"] == 3
    assert result["stopped"].startswith("time budget")


def test_capacity_needs_subscribing_clients():
    run, _ = fake_step({})
    with pytest.raises(ValueError, match="symbols-per-client"):
        run_capacity(make_config(symbols_per_client=0), CapacityPlan.parse("1:1:2"), run=run)


# --- whole runs


def assert_delivery_figures_consistent(report: dict) -> None:
    """What a run guarantees about delivery, whatever the machine's load: ticks were
    measured, and the rates, the ratio and the latency count agree with each other."""
    tp = report["throughput"]
    assert tp["ticks_counted"] > 0, tp
    assert tp["delivered_ticks_per_s"] == round(tp["ticks_counted"] / tp["window_s"], 1)
    assert tp["delivered_ratio"] == pytest.approx(
        tp["delivered_ticks_per_s"] / tp["expected_ticks_per_s"], abs=1e-3
    )
    assert report["latency_ms"]["count"] == tp["ticks_counted"]


def run_command(*args: str, env: dict | None = None, timeout: float = 120):
    return subprocess.run(
        [sys.executable, "manage.py", "loadtest", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for_a_live_tick(url: str, origin: str, symbol: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with sync_connect(url, origin=origin, open_timeout=10) as ws:
        ws.send(json.dumps({"action": "subscribe", "symbols": [symbol]}))
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg["type"] in ("tick", "ticks"):
                return
    raise AssertionError(f"no live tick of {symbol} within {timeout}s")


@pytest.mark.e2e
@pytest.mark.slow
def test_against_the_reference_server_and_the_threshold_exit_code(tmp_path):
    """The bare-Python server delivers everything; an impossible p99 limit fails the run."""
    port = free_port()
    symbols = "AAPL,BTC-USD,ETH-USD,MSFT"
    server = subprocess.Popen(
        [sys.executable, str(BASE_DIR / "benchmarks" / "reference_server.py"),
         "--port", str(port), "--symbols", symbols, "--tick-rate", "20"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port)
        result = run_command(
            "--url", f"ws://127.0.0.1:{port}/", "--clients", "10", "--processes", "2",
            "--symbols", symbols, "--symbols-per-client", "2", "--tick-rate", "20",
            "--duration", "3", "--ramp", "1", "--report", str(tmp_path / "ref"),
            "--max-gap-ratio", "0", "--max-p99-ms", "0.05",
        )  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert result.returncode == THRESHOLD_EXIT_CODE, result.stdout + result.stderr
    assert "p99 latency" in result.stderr and "above 0.05 ms" in result.stderr
    report = json.loads((tmp_path / "ref.json").read_text())
    assert report["connections"]["opened"] == 10
    # 10 clients x 2 symbols x 20/s: this server has no reason to lose a tick. How
    # many arrive inside a 3 s window is a timing sample on a shared machine, so only
    # the arithmetic and the seq checks are asserted.
    assert report["throughput"]["expected_ticks_per_s"] == 400
    assert_delivery_figures_consistent(report)
    assert report["seq"]["gaps"] == report["seq"]["duplicates"] == 0
    assert report["seq"]["streams"] == 20
    assert report["thresholds"]["violations"] == [
        f"p99 latency {report['latency_ms']['p99']} ms is above 0.05 ms"
    ]


@pytest.mark.e2e
@pytest.mark.slow
def test_slow_consumer_closes_are_resumed_without_gap_or_duplicate(tmp_path):
    """The reference server closes every connection with 4008 a second after it
    subscribes and replays from ``since``: the harness reconnects, resumes, and the
    streams have no gap and no duplicate; the closes are not early closes."""
    port = free_port()
    symbols = "AAPL,BTC-USD,ETH-USD,MSFT"
    server = subprocess.Popen(
        [sys.executable, str(BASE_DIR / "benchmarks" / "reference_server.py"),
         "--port", str(port), "--symbols", symbols, "--tick-rate", "20",
         "--history", "1000", "--close-4008-after", "1"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port)
        result = run_command(
            "--url", f"ws://127.0.0.1:{port}/", "--clients", "6", "--processes", "2",
            "--symbols", symbols, "--symbols-per-client", "2", "--tick-rate", "20",
            "--duration", "3", "--ramp", "0.5", "--report", str(tmp_path / "slow"),
            "--max-gap-ratio", "0",
        )  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "slow.json").read_text())
    c = report["connections"]
    assert c["opened"] == 6 and c["subscribed"] == 6
    assert c["slow_consumer_closes"] >= 1
    assert 1 <= c["resumed"] <= c["reconnected"] <= c["slow_consumer_closes"]
    assert (c["closed_early"], c["resume_failed"], c["close_codes"]) == (0, 0, {})
    seq = report["seq"]
    assert (seq["gaps"], seq["duplicates"], seq["out_of_order"], seq["resets"]) == (0, 0, 0, 0)
    assert "slow-consumer closes" in result.stdout and "reconnects" in result.stdout


@pytest.mark.e2e
@pytest.mark.slow
def test_loadtest_command_against_a_real_stack(tmp_path):
    rate = 10
    symbols = ["AAPL", "BTC-USD", "ETH-USD", "MSFT"]
    with real_stack(tmp_path, TICK_RATE=str(rate)) as stack:
        wait_for_a_live_tick(stack.ws_url, stack.origin, symbols[0])
        result = run_command(
            "--url", stack.ws_url, "--clients", "20", "--processes", "2",
            "--symbols", ",".join(symbols), "--symbols-per-client", "2",
            "--tick-rate", str(rate), "--duration", "5", "--ramp", "2",
            "--report", str(tmp_path / "report"),
            "--max-gap-ratio", "0",
            env=stack.env,
        )  # fmt: skip
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    # Live progress, once a second.
    assert len(re.findall(r"^\s+\d+s (ramp|measure)", result.stdout, re.M)) >= 5
    assert "delivered" in result.stdout and "p99" in result.stdout

    report = json.loads((tmp_path / "report.json").read_text())
    conns = report["connections"]
    assert (conns["opened"], conns["failed"], conns["closed_early"]) == (20, 0, 0)
    assert conns["subscribed"] == 20
    # Every new subscription starts with a snapshot (protocol addition 1).
    assert report["snapshots"]["frames"] == 40
    tp = report["throughput"]
    assert tp["expected_ticks_per_s"] == 20 * 2 * rate
    # Rates and latencies are timing samples (the machine is shared): assert that
    # ticks flowed and that the figures agree with each other, not how fast they were.
    assert_delivery_figures_consistent(report)
    assert tp["observed_tick_rate"] > 0, tp
    assert tp["stream_progress_per_s"]["median"] > 0, tp
    seq = report["seq"]
    assert (seq["gaps"], seq["duplicates"], seq["out_of_order"], seq["resets"]) == (0, 0, 0, 0)
    assert seq["streams"] == 40
    assert report["errors"]["total"] == 0 and report["unexpected"] == {}
    lat = report["latency_ms"]
    assert lat["count"] == tp["ticks_counted"] > 0
    assert 0 <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert max(report["timeline"]["open"]) == 20
    assert report["thresholds"]["passed"] is True
    assert_self_contained((tmp_path / "report.html").read_text())


@pytest.mark.e2e
@pytest.mark.slow
def test_fanout_benchmark_runs_both_servers_and_the_idle_mode(tmp_path):
    """benchmarks/fanout.py end to end at a tiny load: the real stack as `make run`
    starts it, then the reference server; then the idle mode on the reference. A smoke
    run (that it runs and reports), not figures: the shortest windows that still give
    the sampler its samples, one client process."""
    script = str(BASE_DIR / "benchmarks" / "fanout.py")
    small = ["--symbols", "4", "--ramp", "0.5", "--settle", "0", "--processes", "1"]
    load = subprocess.run(
        [sys.executable, script, "load", "--clients", "10", "--symbols-per-client", "2",
         "--duration", "2", "--out", str(tmp_path / "load"), *small],
        cwd=BASE_DIR, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert load.returncode == 0, load.stdout[-3000:] + load.stderr[-3000:]
    result = json.loads((tmp_path / "load" / "fanout.json").read_text())
    rows = {r["server"]: r for r in result["rows"]}
    assert set(rows) == {"stack", "reference"}
    for row in rows.values():
        assert (row["opened"], row["failed"], row["closed_early"]) == (10, 0, 0)
        assert row["gaps"] == row["duplicates"] == row["out_of_order"] == 0
        assert row["delivered_per_s"] > 0
        # Server CPU is a timing sample (0.0 when the web process was not scheduled in
        # a tick of the kernel's accounting): assert what the sampler guarantees, that
        # it found the web process and sampled both ends of the window.
        assert row["server_processes"]["web"] >= 1
        assert row["server_cpu_samples"] >= 2
        assert isinstance(row["server_cpu"]["web"], float) and row["server_cpu"]["web"] >= 0
        assert row["delivered_ratio"] == pytest.approx(row["delivered_per_s"] / 200, abs=1e-3)
    assert result["stack_over_reference"] == pytest.approx(
        rows["stack"]["delivered_per_s"] / rows["reference"]["delivered_per_s"], abs=1e-3
    )
    assert result["machine"]["nproc"] and result["versions"]["websockets"]
    assert "throughput stack / reference" in load.stdout

    idle = subprocess.run(
        [sys.executable, script, "idle", "--servers", "reference", "--connections", "50",
         "--hold", "2", "--out", str(tmp_path / "idle"), *small],
        cwd=BASE_DIR, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert idle.returncode == 0, idle.stdout[-3000:] + idle.stderr[-3000:]
    (row,) = json.loads((tmp_path / "idle" / "fanout.json").read_text())["rows"]
    assert row["connections"] == 50 and row["failed"] == 0
    assert row["rss_held_mb"] > 0 and row["kb_per_connection"] is not None


@pytest.mark.e2e
@pytest.mark.slow
def test_capacity_mode_against_the_reference_server(tmp_path):
    """manage.py loadtest --capacity, then fanout.py capacity, at a tiny load against
    the reference server, with limits every step meets: the steps, rows and JSON."""
    port = free_port()
    symbols = "AAPL,BTC-USD,ETH-USD,MSFT"
    server = subprocess.Popen(
        [sys.executable, str(BASE_DIR / "benchmarks" / "reference_server.py"),
         "--port", str(port), "--symbols", symbols, "--tick-rate", "10"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port)
        result = run_command(
            "--url", f"ws://127.0.0.1:{port}/", "--processes", "2", "--symbols", symbols,
            "--symbols-per-client", "2", "--tick-rate", "10", "--duration", "1",
            "--ramp", "0.5", "--capacity", "2:2:4", "--capacity-p99-ms", "60000",
            "--capacity-min-delivered", "0", "--report", str(tmp_path / "cap"),
        )  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(re.findall(r"^capacity step: +\d", result.stdout, re.M)) == 2
    assert "capacity: 4 clients held" in result.stdout
    report = json.loads((tmp_path / "cap.json").read_text())
    assert report["max_clients_held"] == 4
    assert [r["clients"] for r in report["steps"]] == [2, 4]
    for row in report["steps"]:
        assert row["held"] and row["opened"] == row["clients"]
        assert row["gaps"] == 0 and row["delivered_per_s"] > 0
    assert report["plan"]["max_p99_ms"] == 60000 and report["config"]["symbols_per_client"] == 2

    bench = subprocess.run(
        [sys.executable, str(BASE_DIR / "benchmarks" / "fanout.py"), "capacity",
         "--servers", "reference", "--capacity", "2:2:2", "--symbols", "4",
         "--symbols-per-client", "2", "--duration", "1", "--ramp", "0.5", "--settle", "0.5",
         "--processes", "2", "--capacity-p99-ms", "60000", "--capacity-min-delivered", "0",
         "--out", str(tmp_path / "bench")],
        cwd=BASE_DIR, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bench.returncode == 0, bench.stdout[-3000:] + bench.stderr[-3000:]
    (row,) = json.loads((tmp_path / "bench" / "fanout.json").read_text())["rows"]
    assert row["server"] == "reference" and row["max_clients_held"] == 2
    assert len(row["steps"]) == 1 and row["loadavg_before"]
    assert "most clients held: reference 2" in bench.stdout
