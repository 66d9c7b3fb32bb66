"""streaming.outbox: bounds, modes, merging and the writer, without ASGI or Redis."""

import asyncio
import json

from streaming.outbox import Outbox, with_skipped


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def tick(symbol: str, seq: int, ts: int = 1_000_000) -> str:
    return json.dumps({"type": "tick", "symbol": symbol, "seq": seq, "ts": ts}).replace(" ", "")


async def until(predicate, timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` holds (the writer tasks have run), not for a fixed time:
    on a loaded machine a short sleep may end before they do."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 (writers own no event to wait on)
            await asyncio.sleep(0.001)


def make(**kw) -> tuple[Outbox, Clock, list[int]]:
    clock = Clock()
    box = Outbox(max_bytes=kw.pop("max_bytes", 10_000), max_age_ms=1000, clock=clock)
    closed: list[int] = []
    box.on_close = closed.append
    return box, clock, closed


async def test_unbatched_ticks_and_frames_go_out_one_by_one_in_order():
    box, _, _ = make()
    box.put_frame('{"type":"subscribed"}')
    box.put_tick(tick("A", 1), 1_000_000)
    box.put_tick(tick("A", 2), 1_000_000)
    frames, due = box.take()
    assert frames == ['{"type":"subscribed"}', tick("A", 1), tick("A", 2)]
    assert due is None
    assert box.take() == ([], None)


async def test_a_connection_that_accepts_batches_gets_waiting_ticks_merged_around_frames():
    box, _, _ = make()
    box.batch_ms = 0
    box.put_tick(tick("A", 1), 1_000_000)
    box.put_tick(tick("B", 1), 1_000_000)
    box.put_frame('{"type":"pong"}')
    box.put_tick(tick("A", 2), 1_000_000)
    frames, _ = box.take()
    assert [json.loads(f)["type"] for f in frames] == ["ticks", "pong", "tick"]
    assert [t["seq"] for t in json.loads(frames[0])["ticks"]] == [1, 1]


async def test_all_mode_closes_with_4008_past_the_byte_cap_and_drops_the_queue():
    box, _, closed = make(max_bytes=60)
    assert box.put_tick(tick("A", 1), 1_000_000)  # about 50 bytes
    assert not box.put_tick(tick("A", 2), 1_000_000)  # over 60 bytes of live ticks
    await asyncio.sleep(0)
    assert closed == [4008]
    assert box.take() == ([], None)
    assert not box.put_tick(tick("A", 3), 1_000_000)
    await asyncio.sleep(0)
    assert closed == [4008]  # once


async def test_history_never_counts_against_the_cap():
    box, _, closed = make(max_bytes=100)
    box.put_history([tick("A", i) for i in range(50)])
    box.put_frame("x" * 5000)
    assert box.put_tick(tick("A", 50), 1_000_000)
    await asyncio.sleep(0)
    assert closed == []


async def test_all_mode_closes_when_a_queued_or_unwritten_live_tick_gets_too_old():
    box, clock, closed = make()
    box.put_tick(tick("A", 1), 1_000_000)
    _frames, _ = box.take()  # the writer holds it: say the socket is stalled
    clock.now += 600
    assert box.put_tick(tick("A", 2, 1_000_600), 1_000_600)
    clock.now += 500  # tick 1 is 1100 ms old and still not written
    assert not box.put_tick(tick("A", 3, 1_001_100), 1_001_100)
    await asyncio.sleep(0)
    assert closed == [4008]


async def test_a_live_tick_already_stale_when_the_writer_takes_it_is_never_written():
    box, clock, closed = make()
    box.put_tick(tick("A", 1), 1_000_000)
    clock.now += 1001
    assert box.take() == ([], None)
    await asyncio.sleep(0)
    assert closed == [4008]


async def test_latest_mode_keeps_the_newest_tick_and_says_how_many_it_replaced():
    box, _, closed = make()
    box.add_slot("A", max_rate=None)
    for seq in (1, 2, 3):
        box.put_latest("A", tick("A", seq), 1_000_000)
    frames, _ = box.take()
    assert [json.loads(f) for f in frames] == [
        {"type": "tick", "symbol": "A", "seq": 3, "ts": 1_000_000, "skipped": 2}
    ]
    box.put_latest("A", tick("A", 4), 1_000_000)
    assert [json.loads(f).get("skipped") for f in box.take()[0]] == [None]
    assert closed == []


async def test_latest_mode_drops_stale_ticks_and_counts_them_in_the_next_one():
    box, clock, _ = make()
    box.add_slot("A", max_rate=None)
    box.put_latest("A", tick("A", 1), 1_000_000)
    clock.now += 1500
    assert box.take() == ([], None)
    assert box.dropped_stale == 1
    box.put_latest("A", tick("A", 2, 1_001_500), 1_001_500)
    assert json.loads(box.take()[0][0])["skipped"] == 1


async def test_max_rate_holds_a_symbol_until_its_next_slot_is_due():
    box, clock, _ = make()
    box.add_slot("A", max_rate=2)  # at most one tick per 500 ms
    box.put_latest("A", tick("A", 1), 1_000_000)
    assert len(box.take()[0]) == 1
    clock.now += 100
    box.put_latest("A", tick("A", 2, 1_000_100), 1_000_100)
    box.put_latest("A", tick("A", 3, 1_000_100), 1_000_100)
    frames, due = box.take()
    assert frames == [] and due == 1_000_500
    clock.now = due
    frames, _ = box.take()
    assert json.loads(frames[0]) == {
        "type": "tick", "symbol": "A", "seq": 3, "ts": 1_000_100, "skipped": 1
    }  # fmt: skip


async def test_a_tick_that_reached_the_process_too_late_is_never_shown_as_live():
    box, _, closed = make()
    sent: list[str] = []

    async def send(text: str) -> None:
        sent.append(text)

    box.attach(send)
    old = tick("A", 1, ts=1_000_000 - 5000)  # the whole process was behind
    assert not box.put_tick(old, 1_000_000 - 5000)
    await asyncio.sleep(0)
    assert closed == [4008] and sent == []


def test_with_skipped_adds_the_field_only_when_something_was_skipped():
    assert json.loads(with_skipped('{"seq":5}', 3)) == {"seq": 5, "skipped": 3}
    assert with_skipped('{"seq":5}', 0) == '{"seq":5}'


async def test_a_stalled_send_stalls_only_its_own_writer_and_the_stall_closes_it():
    stalled_box, clock, closed = make()
    healthy_box, _, healthy_closed = make()
    healthy_box.clock = clock
    never = asyncio.Event()
    got: list[str] = []

    async def stalled_send(text: str) -> None:
        await never.wait()  # a socket whose buffer never drains

    async def healthy_send(text: str) -> None:
        got.append(text)

    stalled_box.attach(stalled_send)
    healthy_box.attach(healthy_send)
    for seq in range(1, 6):
        clock.now += 300
        # The fan-out: plain appends, never awaiting either socket.
        stalled_box.put_tick(tick("A", seq), int(clock.now))
        healthy_box.put_tick(tick("A", seq), int(clock.now))
        await until(lambda seq=seq: len(got) == seq)
    assert [json.loads(t)["seq"] for t in got] == [1, 2, 3, 4, 5]
    await until(lambda: closed)  # on_close runs in the next loop turn
    assert closed == [4008]  # tick 1 waited more than 1000 ms behind the stalled send
    assert healthy_closed == []
    stalled_box.stop()
    healthy_box.stop()


async def test_an_idle_connection_writes_at_once_and_a_full_socket_parks_the_send():
    box, _, _ = make()
    room = asyncio.Event()
    room.set()
    got: list[str] = []

    async def send(text: str) -> None:
        await room.wait()  # like uvicorn's send: waits only while the socket is full
        got.append(text)

    box.attach(send)
    box.put_tick(tick("A", 1), 1_000_000)
    assert got == [tick("A", 1)] and box._task is None  # written inline, no task
    room.clear()
    box.put_tick(tick("A", 2), 1_000_000)  # must wait: taken over by the writer task
    box.put_frame('{"type":"pong"}')
    box.put_tick(tick("A", 3), 1_000_000)
    assert got == [tick("A", 1)] and box._task is not None
    room.set()
    await until(lambda: len(got) == 4 and box._task is None)
    assert got == [tick("A", 1), tick("A", 2), '{"type":"pong"}', tick("A", 3)]
    assert box._task is None  # idle again
    box.put_tick(tick("A", 4), 1_000_000)
    assert got[-1] == tick("A", 4)


async def test_a_send_that_raises_reports_the_client_gone_once():
    box, _, _ = make()
    gone: list[BaseException] = []
    box.on_gone = gone.append

    async def send(text: str) -> None:
        raise ConnectionError("socket closed")

    box.attach(send)
    box.put_tick(tick("A", 1), 1_000_000)
    assert not box.put_tick(tick("A", 2), 1_000_000)
    await asyncio.sleep(0)
    assert [type(e) for e in gone] == [ConnectionError]


async def test_latest_mode_writes_at_once_when_idle_and_drops_ticks_that_arrive_stale():
    box, _, _ = make()
    sent: list[str] = []

    async def send(text: str) -> None:
        sent.append(text)

    box.attach(send)
    box.add_slot("A", max_rate=None)
    box.put_latest("A", tick("A", 1), 1_000_000)
    assert [json.loads(t)["seq"] for t in sent] == [1] and box._task is None
    box.put_latest("A", tick("A", 2, 1_000_000 - 2000), 1_000_000 - 2000)  # arrived stale
    box.put_latest("A", tick("A", 3), 1_000_000)
    assert [(json.loads(t)["seq"], json.loads(t).get("skipped")) for t in sent] == [
        (1, None),
        (3, 1),
    ]
    assert box.dropped_stale == 1


async def test_batching_writes_a_burst_at_once_then_at_most_once_per_batch_ms():
    from streaming.outbox import ROUND, batch_clock

    loop = asyncio.get_running_loop()
    # The outboxes' clock stands still unless the test moves it: whether a write falls in
    # the batch window must not depend on how fast a loaded machine runs the test. The
    # shared timer runs on the loop's clock, for as long as the outbox asked.
    clock = Clock()
    boxes, sent = [], []
    for name in ("a", "b"):
        box, _, _ = make()
        box.clock = clock
        box.batch_ms = 50

        async def send(text: str, name=name) -> None:
            sent.append((name, loop.time(), text))

        box.attach(send)
        boxes.append(box)
    now = clock.now
    # A burst after a quiet spell: each connection's ticks of the round in one frame,
    # written when the round ends, with no timer and no task.
    with ROUND:
        for box in boxes:
            box.put_tick(tick("A", 1), now)
            box.put_tick(tick("B", 1), now)
        assert sent == []
    first = loop.time()
    assert [(n, [t["seq"] for t in json.loads(f)["ticks"]]) for n, _, f in sent] == [
        ("a", [1, 1]), ("b", [1, 1]),
    ]  # fmt: skip
    assert all(box._task is None for box in boxes)
    # More within batch_ms of that write: they wait for the window, on one shared timer.
    with ROUND:
        for box in boxes:
            box.put_tick(tick("A", 2), now)
            box.put_frame('{"type":"pong"}')
            box.put_tick(tick("B", 2), now)
    assert len(sent) == 2
    timers = batch_clock()
    assert timers.waiting == boxes and all(box._task is None for box in boxes)
    # The shared timer fires batch_ms after the last write: wait for it (on a busy machine
    # a timer can fire late; how late is not what this test asserts).
    for _ in range(500):  # up to 5 s
        if len(sent) >= 8:
            break
        await asyncio.sleep(0.01)
    assert [(n, json.loads(f)["type"]) for n, _, f in sent[2:]] == [
        ("a", "tick"), ("a", "pong"), ("a", "tick"), ("b", "tick"), ("b", "pong"), ("b", "tick"),
    ]  # fmt: skip
    # Not before batch_ms after the last write: the guarantee.
    assert all(at - first >= 0.05 - 0.002 for _, at, _ in sent[2:])
    assert timers.waiting == [] and timers._handle is None  # idle: no timer left running
    clock.now += 60  # past the window of that write: the next batch is due
    # Outside a round (a reply to a command), a due batch goes out at the end of the turn.
    boxes[0].put_frame('{"type":"pong"}')
    assert len(sent) == 8
    await asyncio.sleep(0)
    assert json.loads(sent[-1][2])["type"] == "pong"


async def test_batch_clock_writes_outboxes_in_due_order_whatever_the_order_they_wait():
    """One timer, re-armed for the earliest batch; each outbox written at or after its due
    time, in due order. Asserted on the loop's clock, not on how long a sleep took: a
    loaded machine may run all three in one late timer call, in order all the same."""
    from streaming.outbox import BatchClock, batch_clock

    loop = asyncio.get_running_loop()
    written: list[tuple[str, float]] = []
    done = asyncio.Event()

    class Box:
        def __init__(self, name: str) -> None:
            self.name = name

        def write_scheduled(self) -> None:
            written.append((self.name, loop.time() * 1000))
            if len(written) == 3:
                done.set()

    clock = batch_clock()
    start = loop.time() * 1000
    clock.add(Box("late"), 40)
    late_at = clock._at
    clock.add(Box("early"), 10)  # re-arms the one timer earlier
    early_at = clock._at
    clock.add(Box("middle"), 25)  # later than the armed one: no re-arm
    assert early_at < late_at and clock._at == early_at
    async with asyncio.timeout(10):
        await done.wait()
    assert [name for name, _ in written] == ["early", "middle", "late"]
    for (_, at), delay in zip(written, (10, 25, 40), strict=True):
        assert at >= start + delay - BatchClock.SLACK_MS  # never before it is due
    assert clock._handle is None and clock.waiting == []


async def test_a_batch_that_meets_a_full_socket_is_finished_by_the_writer_task_in_order():
    box, _, _ = make()
    loop = asyncio.get_running_loop()
    box.clock = lambda: loop.time() * 1000
    box.batch_ms = 20
    gate = asyncio.Event()
    sent: list[str] = []

    async def send(text: str) -> None:
        if not sent:
            await gate.wait()  # the first frame finds the socket full
        sent.append(text)

    box.attach(send)
    box.put_frame('{"type":"one"}')
    box.put_frame('{"type":"two"}')
    await asyncio.sleep(0.05)
    assert sent == [] and box._task is not None
    box.put_frame('{"type":"three"}')
    gate.set()
    await until(lambda: len(sent) == 3)
    assert [json.loads(t)["type"] for t in sent] == ["one", "two", "three"]


async def test_a_delivery_round_writes_each_connections_ticks_together_in_order():
    from streaming.outbox import ROUND

    sent: list[tuple[str, str]] = []
    boxes = []
    for name in ("a", "b"):
        box, _, _ = make()

        async def send(text: str, name=name) -> None:
            sent.append((name, json.loads(text)["seq"]))

        box.attach(send)
        boxes.append(box)
    a, b = boxes
    with ROUND:
        for seq in (1, 2):  # the fan-out goes tick by tick: a, b, a, b
            a.put_tick(tick("A", seq), 1_000_000)
            b.put_tick(tick("A", seq), 1_000_000)
        assert sent == []  # held until the batch is done
    assert sent == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    a.put_tick(tick("A", 3), 1_000_000)  # no round: at once, as before
    assert sent[-1] == ("a", 3)


async def test_a_held_batch_that_meets_a_full_socket_finishes_in_the_writer_task_in_order():
    from streaming.outbox import ROUND

    box, _, closed = make()
    gate = asyncio.Event()
    sent: list[int] = []

    async def send(text: str) -> None:
        if not sent and not gate.is_set():
            await gate.wait()  # the first frame finds the socket full
        sent.append(json.loads(text)["seq"])

    box.attach(send)
    with ROUND:
        for seq in (1, 2, 3):
            box.put_tick(tick("A", seq), 1_000_000)
    assert sent == [] and box._task is not None and box.live_bytes > 0
    box.put_tick(tick("A", 4), 1_000_000)
    gate.set()
    await until(lambda: len(sent) == 4)
    assert sent == [1, 2, 3, 4] and closed == []


async def test_a_server_write_is_used_at_once_and_send_takes_over_when_it_cannot():
    box, _, _ = make()
    writes: list[bytes] = []
    sends: list[str] = []
    full = False

    def write(payload: bytes) -> bool:
        if full:
            return False
        writes.append(payload)
        return True

    gate = asyncio.Event()

    async def send(text: str) -> None:
        await gate.wait()  # the socket is full until the test opens it
        sends.append(text)

    box.attach(send, write)
    box.put_tick(tick("A", 1), 1_000_000)
    assert writes == [tick("A", 1).encode()] and box._task is None  # no coroutine, no task
    full = True
    box.put_tick(tick("A", 2), 1_000_000)  # cannot go at once: send waits in the writer
    box.put_tick(tick("A", 3), 1_000_000)  # queued behind it, in order
    assert box._task is not None and sends == []
    full = False
    gate.set()
    await until(lambda: len(sends) == 2 and box._task is None)
    assert sends == [tick("A", 2), tick("A", 3)] and box._task is None
    box.put_tick(tick("A", 4), 1_000_000)
    assert writes[-1] == tick("A", 4).encode()


async def test_connections_with_the_same_ticks_in_a_round_share_one_frame():
    from streaming.outbox import FRAMES, ROUND

    payloads: list[bytes] = []
    boxes = []
    for _ in range(3):
        box, _, _ = make()
        box.batch_ms = 50
        box.clock = lambda: 1_000_000.0
        box.attach(lambda text: None, lambda p: payloads.append(p) or True)
        boxes.append(box)
    a, b = tick("A", 1), tick("B", 1)
    with ROUND:
        for box in boxes:
            box.put_tick(a, 1_000_000)
            box.put_tick(b, 1_000_000)
    assert len(payloads) == 3 and len({id(p) for p in payloads}) == 1  # built once
    assert json.loads(payloads[0]) == {"type": "ticks", "ticks": [json.loads(a), json.loads(b)]}
    assert FRAMES.merged == {} and FRAMES.encoded == {}  # kept for the round only
