import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { PriceStreamClient, State, backoffDelay, isTick } from "../../frontend/static/frontend/protocol-client.js";
import { FakeClock, fakeWebSocketClass, tick } from "./fakes.mjs";

const URL = "ws://127.0.0.1:8000/ws/prices/";

function setup(options = {}) {
  const clock = new FakeClock();
  const WS = fakeWebSocketClass();
  const client = new PriceStreamClient({
    url: URL,
    WebSocket: WS,
    timers: clock.timerApi,
    now: clock.now,
    random: () => 0.5,
    heartbeatMs: 0,
    ...options,
  });
  const events = [];
  for (const type of ["state", "tick", "snapshot", "reset", "gap", "error", "rejected", "subscribed", "unsubscribed", "pong", "close"]) {
    client.on(type, (payload) => events.push({ type, ...payload }));
  }
  const of = (type) => events.filter((e) => e.type === type);
  return { clock, WS, client, events, of };
}

/** Start, open the socket and answer the initial subscribe; returns the socket. */
function connected(ctx, symbols = ["BTC-USD", "AAPL"]) {
  ctx.client.subscribe(symbols);
  ctx.client.start();
  const ws = ctx.WS.last();
  ws.serverOpen();
  const [sub] = ws.sentOf("subscribe");
  ws.serverSend({ type: "subscribed", id: sub.id, symbols: sub.symbols });
  return ws;
}

describe("backoffDelay", () => {
  test("grows exponentially with equal jitter and is capped", () => {
    const opts = { baseMs: 500, maxMs: 15000 };
    assert.equal(backoffDelay(0, { ...opts, random: () => 0 }), 250);
    assert.equal(backoffDelay(0, { ...opts, random: () => 0.999999 }), 500);
    assert.equal(backoffDelay(3, { ...opts, random: () => 0 }), 2000);
    assert.equal(backoffDelay(3, { ...opts, random: () => 0.999999 }), 4000);
    for (let attempt = 0; attempt < 40; attempt += 1) {
      const d = backoffDelay(attempt, { ...opts, random: Math.random });
      const ceiling = Math.min(15000, 500 * 2 ** attempt);
      assert.ok(d >= ceiling / 2 && d <= ceiling, `attempt ${attempt}: ${d}`);
    }
    assert.equal(backoffDelay(100, { ...opts, random: () => 0.999999 }), 15000);
  });

  test("jitter spreads clients that lost the same server", () => {
    const delays = new Set(Array.from({ length: 50 }, () => backoffDelay(4)));
    assert.ok(delays.size > 10, `only ${delays.size} distinct delays`);
  });
});

describe("connecting and subscribing", () => {
  test("subscribes to the wanted symbols once the socket opens", () => {
    const { client, WS, of } = setup();
    client.subscribe(["BTC-USD", "AAPL"]);
    assert.equal(WS.sockets.length, 0, "subscribe alone does not connect");
    client.start();
    assert.equal(client.state, State.CONNECTING);
    const ws = WS.last();
    assert.equal(ws.url, URL);
    assert.deepEqual(ws.sent, []);
    ws.serverOpen();
    assert.equal(client.state, State.LIVE);
    assert.deepEqual(ws.sent, [{ action: "subscribe", symbols: ["BTC-USD", "AAPL"], id: 1 }]);
    ws.serverSend({ type: "subscribed", id: 1, symbols: ["BTC-USD", "AAPL"] });
    assert.deepEqual(client.confirmedSymbols, ["BTC-USD", "AAPL"]);
    assert.deepEqual(of("state").map((e) => e.state), ["connecting", "live"]);
    assert.deepEqual(of("subscribed")[0].symbols, ["BTC-USD", "AAPL"]);
  });

  test("start() twice opens one socket", () => {
    const { client, WS } = setup();
    client.start();
    client.start();
    assert.equal(WS.sockets.length, 1);
  });

  test("a live subscribe sends only symbols not yet wanted", () => {
    const ctx = setup();
    const ws = connected(ctx);
    ctx.client.subscribe(["AAPL", "MSFT"]);
    ctx.client.subscribe(["MSFT"]);
    assert.deepEqual(ws.sentOf("subscribe").slice(1), [{ action: "subscribe", symbols: ["MSFT"], id: 2 }]);
    assert.deepEqual(ctx.client.symbols, ["BTC-USD", "AAPL", "MSFT"]);
  });

  test("unsubscribe sends the command and drops ticks already in flight", () => {
    const ctx = setup();
    const ws = connected(ctx);
    ws.serverSend(tick("AAPL", 1));
    ctx.client.unsubscribe(["AAPL"]);
    assert.deepEqual(ws.sentOf("unsubscribe"), [{ action: "unsubscribe", symbols: ["AAPL"], id: 2 }]);
    ws.serverSend(tick("AAPL", 2)); // was on the wire before the server processed it
    ws.serverSend({ type: "unsubscribed", id: 2, symbols: ["AAPL"] });
    ws.serverSend(tick("BTC-USD", 7));
    assert.deepEqual(ctx.of("tick").map((t) => [t.symbol, t.seq]), [["AAPL", 1], ["BTC-USD", 7]]);
    assert.deepEqual(ctx.client.symbols, ["BTC-USD"]);
    assert.deepEqual(ctx.client.confirmedSymbols, ["BTC-USD"]);
    assert.equal(ctx.client.lastSeq("AAPL"), undefined);
  });

  test("unsubscribing a symbol that is not wanted sends nothing", () => {
    const ctx = setup();
    const ws = connected(ctx);
    ctx.client.unsubscribe(["NVDA"]);
    assert.deepEqual(ws.sentOf("unsubscribe"), []);
  });

  test("ping measures the round trip", () => {
    const ctx = setup();
    const ws = connected(ctx);
    const id = ctx.client.ping();
    ctx.clock.advance(12);
    ws.serverSend({ type: "pong", id, ts: 1 });
    assert.equal(ctx.client.stats.lastPongRttMs, 12);
  });
});

describe("tick frames", () => {
  test("accepts single 'tick' and batched 'ticks' frames in order", () => {
    const ctx = setup();
    const ws = connected(ctx);
    ws.serverSend(tick("BTC-USD", 10));
    ws.serverSend({ type: "ticks", ticks: [tick("AAPL", 3), tick("BTC-USD", 11), tick("AAPL", 4)] });
    assert.deepEqual(ctx.of("tick").map((t) => `${t.symbol}#${t.seq}`), ["BTC-USD#10", "AAPL#3", "BTC-USD#11", "AAPL#4"]);
    assert.equal(ctx.client.lastSeq("BTC-USD"), 11);
    assert.equal(ctx.client.lastSeq("AAPL"), 4);
    assert.equal(ctx.client.stats.ticks, 4);
  });

  test("drops duplicates and reports gaps", () => {
    const ctx = setup();
    const ws = connected(ctx);
    for (const seq of [5, 6, 6, 5, 9, 10]) ws.serverSend(tick("BTC-USD", seq));
    assert.deepEqual(ctx.of("tick").map((t) => t.seq), [5, 6, 9, 10]);
    assert.equal(ctx.client.stats.duplicates, 2);
    assert.deepEqual(ctx.of("gap").map(({ symbol, expected, got }) => ({ symbol, expected, got })), [{ symbol: "BTC-USD", expected: 7, got: 9 }]);
  });

  test("ignores malformed ticks, unknown frame types and non-JSON frames", () => {
    const ctx = setup();
    const ws = connected(ctx);
    ws.serverSend({ type: "tick", symbol: "BTC-USD", seq: "1", ts: 1, price: 1 });
    ws.serverSend({ type: "ticks", ticks: "nope" });
    ws.serverSend({ type: "hello-from-the-future", x: 1 });
    ws.serverSend("this is not json");
    ws.serverSend(tick("BTC-USD", 1));
    assert.deepEqual(ctx.of("tick").map((t) => t.seq), [1]);
    assert.deepEqual(ctx.of("error").map((e) => e.code), ["client_bad_frame"]);
    assert.equal(isTick(tick("X", 1)), true);
    assert.equal(isTick({ symbol: "X", seq: 1.5, ts: 1, price: 1 }), false);
  });
});

describe("snapshot and reset", () => {
  test("a snapshot seeds the series and its epoch; live ticks continue after it", () => {
    const ctx = setup();
    const ws = connected(ctx, ["BTC-USD"]);
    ws.serverSend({ type: "snapshot", symbol: "BTC-USD", epoch: "e1", ticks: [tick("BTC-USD", 41), tick("BTC-USD", 40)] });
    ws.serverSend(tick("BTC-USD", 42));
    const [snap] = ctx.of("snapshot");
    assert.equal(snap.symbol, "BTC-USD");
    assert.equal(snap.epoch, "e1");
    assert.deepEqual(snap.ticks.map((t) => t.seq), [40, 41], "sorted ascending");
    assert.deepEqual(ctx.of("tick").map((t) => t.seq), [42]);
    assert.equal(ctx.client.epoch("BTC-USD"), "e1");
    assert.equal(ctx.client.lastSeq("BTC-USD"), 42);
  });

  test("an empty snapshot leaves no resume point", () => {
    const ctx = setup();
    const ws = connected(ctx, ["BTC-USD"]);
    ws.serverSend({ type: "snapshot", symbol: "BTC-USD", epoch: "e1", ticks: [] });
    assert.equal(ctx.client.lastSeq("BTC-USD"), undefined);
    assert.equal(ctx.of("snapshot")[0].ticks.length, 0);
  });

  test("snapshots and resets of symbols not on the watchlist are ignored", () => {
    const ctx = setup();
    const ws = connected(ctx, ["BTC-USD"]);
    ws.serverSend({ type: "snapshot", symbol: "NVDA", epoch: "e", ticks: [tick("NVDA", 1)] });
    ws.serverSend({ type: "reset", symbol: "NVDA", reason: "epoch_changed" });
    assert.equal(ctx.of("snapshot").length + ctx.of("reset").length, 0);
  });

  test("reset drops the resume point; the following snapshot rebuilds", () => {
    const ctx = setup();
    const ws = connected(ctx, ["BTC-USD"]);
    ws.serverSend({ type: "snapshot", symbol: "BTC-USD", epoch: "e1", ticks: [tick("BTC-USD", 90)] });
    ws.serverSend({ type: "reset", symbol: "BTC-USD", reason: "epoch_changed" });
    assert.equal(ctx.client.lastSeq("BTC-USD"), undefined);
    assert.equal(ctx.client.epoch("BTC-USD"), undefined);
    ws.serverSend({ type: "snapshot", symbol: "BTC-USD", epoch: "e2", ticks: [tick("BTC-USD", 1), tick("BTC-USD", 2)] });
    ws.serverSend(tick("BTC-USD", 3));
    assert.deepEqual(ctx.of("reset").map((r) => r.reason), ["epoch_changed"]);
    assert.deepEqual(ctx.of("tick").map((t) => t.seq), [3], "seq 3 < 90 is accepted after the reset");
    assert.equal(ctx.client.epoch("BTC-USD"), "e2");
  });
});

describe("reconnecting", () => {
  test("backs off, reconnects and resubscribes with since and epochs", () => {
    const ctx = setup();
    const ws = connected(ctx, ["BTC-USD", "AAPL", "MSFT"]);
    ws.serverSend({ type: "snapshot", symbol: "BTC-USD", epoch: "e1", ticks: [tick("BTC-USD", 40)] });
    ws.serverSend(tick("BTC-USD", 41));
    ws.serverSend(tick("AAPL", 7)); // v1-style: a tick without a snapshot, so no epoch
    ws.serverClose(1006);

    assert.equal(ctx.client.state, State.RECONNECTING);
    const waiting = ctx.of("state").at(-1);
    assert.equal(waiting.delayMs, 375, "attempt 0 with random 0.5: 250 + 125");
    assert.equal(waiting.retryAt, ctx.clock.time + 375);
    assert.deepEqual(ctx.client.confirmedSymbols, []);

    ctx.clock.advance(374);
    assert.equal(ctx.WS.sockets.length, 1, "not before the delay");
    ctx.clock.advance(1);
    assert.equal(ctx.WS.sockets.length, 2);
    assert.equal(ctx.client.state, State.RECONNECTING, "still reconnecting until the socket opens");

    const ws2 = ctx.WS.last();
    ws2.serverOpen();
    assert.equal(ctx.client.state, State.LIVE);
    assert.deepEqual(ws2.sent, [
      { action: "subscribe", symbols: ["BTC-USD", "AAPL", "MSFT"], since: { "BTC-USD": 41, AAPL: 7 }, epochs: { "BTC-USD": "e1" }, id: 2 },
    ]);
    // The server replays what was missed: ordinary ticks, then live.
    ws2.serverSend({ type: "subscribed", id: 2, symbols: ["BTC-USD", "AAPL", "MSFT"] });
    for (const seq of [42, 43]) ws2.serverSend(tick("BTC-USD", seq));
    assert.deepEqual(ctx.of("tick").filter((t) => t.symbol === "BTC-USD").map((t) => t.seq), [41, 42, 43]);
    assert.equal(ctx.client.stats.reconnects, 1);
    assert.deepEqual(ctx.of("state").map((e) => e.state), ["connecting", "live", "reconnecting", "reconnecting", "live"]);
  });

  test("a slow-consumer close (4008) reconnects and resumes with since, losing nothing", () => {
    const ctx = setup();
    const ws = connected(ctx, ["BTC-USD"]);
    ws.serverSend({ type: "snapshot", symbol: "BTC-USD", epoch: "e1", ticks: [tick("BTC-USD", 10)] });
    ws.serverSend(tick("BTC-USD", 11));
    ws.serverClose(4008);
    assert.equal(ctx.of("close").at(-1).code, 4008);
    assert.equal(ctx.client.state, State.RECONNECTING);
    ctx.clock.advance(ctx.of("state").at(-1).delayMs);
    const ws2 = ctx.WS.last();
    ws2.serverOpen();
    assert.deepEqual(ws2.sent[0].since, { "BTC-USD": 11 });
    assert.deepEqual(ws2.sent[0].epochs, { "BTC-USD": "e1" });
    ws2.serverSend({ type: "subscribed", id: ws2.sent[0].id, symbols: ["BTC-USD"] });
    for (const seq of [12, 13]) ws2.serverSend(tick("BTC-USD", seq));
    assert.deepEqual(ctx.of("tick").map((t) => t.seq), [11, 12, 13]);
  });

  test("delays grow while attempts fail and reset after a success", () => {
    const ctx = setup();
    connected(ctx);
    const delays = [];
    for (let i = 0; i < 5; i += 1) {
      ctx.WS.last().serverClose(1006);
      const { delayMs } = ctx.of("state").at(-1);
      delays.push(delayMs);
      ctx.clock.advance(delayMs);
    }
    assert.deepEqual(delays, [375, 750, 1500, 3000, 6000]);
    ctx.WS.last().serverOpen();
    ctx.WS.last().serverClose(1006);
    assert.equal(ctx.of("state").at(-1).delayMs, 375);
  });

  test("a failing constructor is retried like a failed connection", () => {
    const clock = new FakeClock();
    let calls = 0;
    class Exploding {
      constructor() {
        calls += 1;
        throw new Error("blocked");
      }
    }
    const client = new PriceStreamClient({ url: URL, WebSocket: Exploding, timers: clock.timerApi, now: clock.now, random: () => 0, heartbeatMs: 0 });
    client.start();
    assert.equal(client.state, State.RECONNECTING);
    clock.advance(250);
    assert.equal(calls, 2);
  });

  test("events from a replaced socket are ignored", () => {
    const ctx = setup();
    const ws = connected(ctx, ["BTC-USD"]);
    ws.serverClose(1006);
    ctx.clock.advance(1000);
    const ws2 = ctx.WS.last();
    ws2.serverOpen();
    ws.serverSend(tick("BTC-USD", 99));
    ws.serverClose(1006);
    assert.equal(ctx.client.state, State.LIVE);
    assert.deepEqual(ctx.of("tick"), []);
  });

  test("a seq counter that restarted on a server without resume is a local reset", () => {
    const ctx = setup();
    const ws = connected(ctx, ["BTC-USD"]);
    ws.serverSend(tick("BTC-USD", 500));
    ws.serverClose(1006);
    ctx.clock.advance(1000);
    const ws2 = ctx.WS.last();
    ws2.serverOpen();
    ws2.serverSend(tick("BTC-USD", 1));
    ws2.serverSend(tick("BTC-USD", 2));
    assert.deepEqual(ctx.of("reset").map((r) => r.reason), ["seq_restarted"]);
    assert.deepEqual(ctx.of("tick").map((t) => t.seq), [500, 1, 2]);
  });

  test("stop() closes for good", () => {
    const ctx = setup();
    const ws = connected(ctx);
    ctx.client.stop();
    assert.equal(ctx.client.state, State.OFFLINE);
    assert.equal(ws.closedWith.code, 1000);
    ctx.clock.advance(60_000);
    assert.equal(ctx.WS.sockets.length, 1);
  });

  test("going offline drops the socket and waits; the network's return reconnects and resumes", () => {
    const ctx = setup();
    const ws = connected(ctx, ["BTC-USD"]);
    ws.serverSend(tick("BTC-USD", 8));
    ctx.client.setNetworkOnline(false);
    assert.equal(ctx.client.state, State.OFFLINE);
    assert.equal(ws.closedWith.code, 4001);
    ws.serverClose(1006); // the close event that follows changes nothing
    assert.equal(ctx.client.state, State.OFFLINE);
    ctx.clock.advance(60_000);
    assert.equal(ctx.WS.sockets.length, 1, "no retries while offline");
    ctx.client.setNetworkOnline(true);
    assert.equal(ctx.WS.sockets.length, 2);
    ctx.WS.last().serverOpen();
    assert.deepEqual(ctx.WS.last().sentOf("subscribe")[0].since, { "BTC-USD": 8 });
  });

  test("going offline while waiting cancels the retry timer", () => {
    const ctx = setup();
    connected(ctx).serverClose(1006);
    assert.equal(ctx.client.state, State.RECONNECTING);
    ctx.client.setNetworkOnline(false);
    assert.equal(ctx.client.state, State.OFFLINE);
    assert.equal(ctx.clock.pending, 0);
  });

  test("reconnectNow skips the remaining backoff", () => {
    const ctx = setup();
    connected(ctx).serverClose(1006);
    ctx.client.reconnectNow();
    assert.equal(ctx.WS.sockets.length, 2);
    assert.equal(ctx.clock.pending, 0);
  });

  test("heartbeat pings a silent connection and drops a dead one", () => {
    const ctx = setup({ heartbeatMs: 10_000 });
    const ws = connected(ctx);
    ctx.clock.advance(10_000);
    assert.equal(ws.sentOf("ping").length, 1);
    ws.serverSend({ type: "pong", id: ws.sentOf("ping")[0].id, ts: 1 });
    ctx.clock.advance(9_000);
    assert.equal(ctx.client.state, State.LIVE);
    ctx.clock.advance(16_000); // 25 s with no frame at all
    assert.equal(ws.closedWith.code, 4000);
    assert.equal(ctx.client.state, State.RECONNECTING);
  });
});

describe("errors", () => {
  test("unknown symbols are reported and dropped from the wanted set", () => {
    const ctx = setup();
    const ws = connected(ctx, ["BTC-USD"]);
    ctx.client.subscribe(["NOPE", "AAPL"]);
    ws.serverSend({ type: "subscribed", id: 2, symbols: ["AAPL"] });
    ws.serverSend({ type: "error", id: 2, code: "unknown_symbol", message: "unknown symbol(s): NOPE", symbols: ["NOPE"] });
    assert.deepEqual(ctx.of("rejected").map((r) => r.symbols), [["NOPE"]]);
    assert.deepEqual(ctx.of("error").map((e) => [e.code, e.action]), [["unknown_symbol", "subscribe"]]);
    assert.deepEqual(ctx.client.symbols, ["BTC-USD", "AAPL"]);
    ws.serverClose(1006);
    ctx.clock.advance(1000);
    ctx.WS.last().serverOpen();
    assert.deepEqual(ctx.WS.last().sentOf("subscribe")[0].symbols, ["BTC-USD", "AAPL"]);
  });

  test("too_many_symbols rejects the whole request", () => {
    const ctx = setup();
    const ws = connected(ctx, ["BTC-USD"]);
    ctx.client.subscribe(["AAPL", "MSFT"]);
    ws.serverSend({ type: "error", id: 2, code: "too_many_symbols", message: "limit 1" });
    assert.deepEqual(ctx.of("rejected")[0].symbols, ["AAPL", "MSFT"]);
    assert.deepEqual(ctx.client.symbols, ["BTC-USD"]);
  });

  test("a server that refuses `since` gets a plain subscribe instead", () => {
    const ctx = setup();
    const ws = connected(ctx, ["BTC-USD"]);
    ws.serverSend(tick("BTC-USD", 5));
    ws.serverClose(1006);
    ctx.clock.advance(1000);
    const ws2 = ctx.WS.last();
    ws2.serverOpen();
    const [resume] = ws2.sentOf("subscribe");
    assert.deepEqual(resume.since, { "BTC-USD": 5 });
    ws2.serverSend({ type: "error", id: resume.id, code: "bad_request", message: "unexpected field 'since'" });
    const [, plain] = ws2.sentOf("subscribe");
    assert.deepEqual(plain, { action: "subscribe", symbols: ["BTC-USD"], id: resume.id + 1 });
    ws2.serverSend({ type: "error", id: plain.id, code: "bad_request", message: "still no" });
    assert.equal(ws2.sentOf("subscribe").length, 2, "retried once only");
  });

  test("errors without an id are surfaced and keep the connection", () => {
    const ctx = setup();
    const ws = connected(ctx);
    ws.serverSend({ type: "error", id: null, code: "bad_json", message: "the frame is not valid JSON" });
    assert.deepEqual(ctx.of("error").map((e) => [e.code, e.message, e.action]), [["bad_json", "the frame is not valid JSON", null]]);
    assert.equal(ctx.client.state, State.LIVE);
  });

  test("batch_ms is sent when configured", () => {
    const ctx = setup({ batchMs: 50 });
    const ws = connected(ctx, ["BTC-USD"]);
    assert.equal(ws.sentOf("subscribe")[0].batch_ms, 50);
  });

  test("a throwing listener does not break the stream", () => {
    const ctx = setup();
    const failures = [];
    ctx.client.on("tick", () => {
      throw new Error("boom");
    });
    ctx.client.on("listenerError", (e) => failures.push(e.type));
    const ws = connected(ctx, ["BTC-USD"]);
    ws.serverSend(tick("BTC-USD", 1));
    ws.serverSend(tick("BTC-USD", 2));
    assert.deepEqual(ctx.of("tick").map((t) => t.seq), [1, 2]);
    assert.deepEqual(failures, ["tick", "tick"]);
  });
});
