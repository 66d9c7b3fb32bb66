// The protocol client and dashboard text when the server refuses: closes 4401/4403,
// `error` forbidden, and `unsubscribed` with a reason (docs/protocol.md).
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { accessNotice, forbiddenNotice, withdrawnNotice } from "../../frontend/static/frontend/access.js";
import { CloseCode, PriceStreamClient, State } from "../../frontend/static/frontend/protocol-client.js";
import { FakeClock, fakeWebSocketClass, tick } from "./fakes.mjs";

function setup() {
  const clock = new FakeClock();
  const WS = fakeWebSocketClass();
  const client = new PriceStreamClient({
    url: "ws://127.0.0.1:8000/ws/prices/",
    WebSocket: WS,
    timers: clock.timerApi,
    now: clock.now,
    random: () => 0.5,
    heartbeatMs: 0,
  });
  const events = [];
  for (const type of ["state", "tick", "error", "rejected", "subscribed", "unsubscribed", "denied"]) {
    client.on(type, (payload) => events.push({ type, ...payload }));
  }
  const of = (type) => events.filter((e) => e.type === type);
  return { clock, WS, client, of };
}

function connected(ctx, symbols = ["BTC-USD", "AAPL"]) {
  ctx.client.subscribe(symbols);
  ctx.client.start();
  const ws = ctx.WS.last();
  ws.serverOpen();
  return ws;
}

function serverClose(ws, code, reason = "") {
  ws.readyState = 3;
  ws.onclose?.({ code, reason, wasClean: true });
}

describe("closes the client cannot fix by retrying", () => {
  for (const [code, state] of [
    [CloseCode.UNAUTHORIZED, State.UNAUTHORIZED],
    [CloseCode.FORBIDDEN, State.FORBIDDEN],
  ]) {
    test(`${code} stops reconnecting and says why`, () => {
      const ctx = setup();
      const ws = connected(ctx);
      serverClose(ws, code, "token revoked");
      assert.equal(ctx.client.state, state);
      assert.deepEqual(ctx.client.denied, { code, reason: "token revoked" });
      assert.deepEqual(ctx.of("denied").map((e) => [e.code, e.reason]), [[code, "token revoked"]]);
      const last = ctx.of("state").at(-1);
      assert.equal(last.state, state);
      assert.equal(last.reason, "token revoked");
      // No timer is armed and no socket opens, however long we wait.
      assert.equal(ctx.clock.pending, 0);
      ctx.clock.advance(10 * 60_000);
      assert.equal(ctx.WS.sockets.length, 1);
    });
  }

  test("the network coming back does not reconnect a refused client", () => {
    const ctx = setup();
    serverClose(connected(ctx), CloseCode.UNAUTHORIZED);
    ctx.client.setNetworkOnline(false);
    ctx.client.setNetworkOnline(true);
    ctx.clock.advance(60_000);
    assert.equal(ctx.WS.sockets.length, 1);
    assert.equal(ctx.client.state, State.UNAUTHORIZED);
  });

  test("reconnectNow tries again (say, after signing in) and resubscribes", () => {
    const ctx = setup();
    serverClose(connected(ctx), CloseCode.FORBIDDEN);
    ctx.client.reconnectNow();
    assert.equal(ctx.WS.sockets.length, 2);
    assert.equal(ctx.client.denied, null);
    const ws = ctx.WS.last();
    ws.serverOpen();
    assert.deepEqual(ws.sentOf("subscribe")[0].symbols, ["BTC-USD", "AAPL"]);
    assert.equal(ctx.client.state, State.LIVE);
  });

  test("other closes still reconnect with backoff", () => {
    const ctx = setup();
    serverClose(connected(ctx), 1011);
    assert.equal(ctx.client.state, State.RECONNECTING);
    ctx.clock.advance(1000);
    assert.equal(ctx.WS.sockets.length, 2);
  });
});

describe("forbidden symbols", () => {
  test("only the refused symbols go; the rest of the command is served", () => {
    const ctx = setup();
    const ws = connected(ctx, ["BTC-USD", "VIP-1", "AAPL"]);
    const [sub] = ws.sentOf("subscribe");
    ws.serverSend({ type: "subscribed", id: sub.id, symbols: ["BTC-USD", "AAPL"] });
    ws.serverSend({ type: "error", id: sub.id, code: "forbidden", message: "not entitled to: VIP-1", symbols: ["VIP-1"] });
    assert.deepEqual(ctx.client.symbols, ["BTC-USD", "AAPL"]);
    assert.deepEqual(ctx.client.confirmedSymbols, ["BTC-USD", "AAPL"]);
    assert.deepEqual(ctx.of("rejected").map((e) => [e.symbols, e.code]), [[["VIP-1"], "forbidden"]]);
    const [error] = ctx.of("error");
    assert.equal(error.code, "forbidden");
    assert.deepEqual(error.symbols, ["VIP-1"]);
    // Every symbol of the command is accounted for: the request is settled.
    assert.equal(ctx.client._pending.size, 0);
  });

  test("forbidden and unknown refusals of one all-refused command both land", () => {
    const ctx = setup();
    const ws = connected(ctx, ["VIP-1", "NOPE"]);
    const [sub] = ws.sentOf("subscribe");
    // Nothing was allowed, so no "subscribed" comes first.
    ws.serverSend({ type: "error", id: sub.id, code: "forbidden", message: "x", symbols: ["VIP-1"] });
    assert.deepEqual(ctx.client.symbols, ["NOPE"]);
    ws.serverSend({ type: "error", id: sub.id, code: "unknown_symbol", message: "y", symbols: ["NOPE"] });
    assert.deepEqual(ctx.client.symbols, []);
    assert.deepEqual(ctx.of("rejected").map((e) => e.symbols), [["VIP-1"], ["NOPE"]]);
  });

  test("a refused symbol is not asked for again after a reconnect", () => {
    const ctx = setup();
    const ws = connected(ctx, ["BTC-USD", "VIP-1"]);
    const [sub] = ws.sentOf("subscribe");
    ws.serverSend({ type: "subscribed", id: sub.id, symbols: ["BTC-USD"] });
    ws.serverSend({ type: "error", id: sub.id, code: "forbidden", message: "x", symbols: ["VIP-1"] });
    serverClose(ws, 1006);
    ctx.clock.advance(1000);
    const again = ctx.WS.last();
    again.serverOpen();
    assert.deepEqual(again.sentOf("subscribe")[0].symbols, ["BTC-USD"]);
  });
});

describe("unsubscribed by the server", () => {
  test("a right withdrawn drops the symbol, its ticks and its resume point", () => {
    const ctx = setup();
    const ws = connected(ctx, ["BTC-USD", "VIP-1"]);
    const [sub] = ws.sentOf("subscribe");
    ws.serverSend({ type: "subscribed", id: sub.id, symbols: ["BTC-USD", "VIP-1"] });
    ws.serverSend(tick("VIP-1", 1));
    ws.serverSend({ type: "unsubscribed", id: null, symbols: ["VIP-1"], reason: "forbidden" });
    assert.deepEqual(ctx.client.symbols, ["BTC-USD"]);
    assert.equal(ctx.client.lastSeq("VIP-1"), undefined);
    const [event] = ctx.of("unsubscribed");
    assert.deepEqual([event.symbols, event.reason, event.id], [["VIP-1"], "forbidden", null]);
    ws.serverSend(tick("VIP-1", 2)); // one already in flight
    assert.deepEqual(ctx.of("tick").map((t) => t.seq), [1]);
  });

  test("the answer to our own unsubscribe has no reason", () => {
    const ctx = setup();
    const ws = connected(ctx, ["BTC-USD", "AAPL"]);
    const [sub] = ws.sentOf("subscribe");
    ws.serverSend({ type: "subscribed", id: sub.id, symbols: ["BTC-USD", "AAPL"] });
    ctx.client.unsubscribe(["AAPL"]);
    const [unsub] = ws.sentOf("unsubscribe");
    ws.serverSend({ type: "unsubscribed", id: unsub.id, symbols: ["AAPL"] });
    assert.equal(ctx.of("unsubscribed")[0].reason, null);
  });
});

describe("what the dashboard says", () => {
  test("4401 asks to sign in; 4403 says why and offers signing in again", () => {
    assert.deepEqual(accessNotice(State.UNAUTHORIZED), {
      text: "This server streams prices to signed-in users only.",
      link: "Sign in",
    });
    assert.match(accessNotice(State.UNAUTHORIZED, { signedIn: true }).text, /session is no longer valid/);
    const revoked = accessNotice(State.FORBIDDEN, { reason: "token revoked" });
    assert.match(revoked.text, /token revoked/);
    assert.equal(revoked.link, "Sign in again");
    assert.match(accessNotice(State.FORBIDDEN).text, /access was revoked/);
    for (const state of [State.LIVE, State.CONNECTING, State.RECONNECTING, State.OFFLINE]) {
      assert.equal(accessNotice(state), null);
    }
  });

  test("refused and withdrawn symbols are named", () => {
    assert.equal(forbiddenNotice(["VIP-1", "VIP-2"], { signedIn: true }), "Not permitted: VIP-1, VIP-2. Your account is not entitled to these symbols.");
    assert.match(forbiddenNotice(["VIP-1"]), /^Not permitted: VIP-1\. Sign in/);
    assert.match(withdrawnNotice(["VIP-1"], "forbidden"), /^Access withdrawn: VIP-1\./);
    assert.equal(withdrawnNotice(["X"], "maintenance"), "The server stopped streaming X (maintenance).");
  });
});
