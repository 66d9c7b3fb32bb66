import assert from "node:assert/strict";
import { test } from "node:test";

import { AlertsClient, AlertsError, describeAlert, offReasonText } from "../../frontend/static/frontend/alerts-client.js";
import { PriceStreamClient } from "../../frontend/static/frontend/protocol-client.js";
import { FakeClock, fakeWebSocketClass } from "./fakes.mjs";

function fakeFetch(responses) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url, ...init });
    const [status, body] = responses.shift() ?? [200, []];
    return { ok: status < 400, status, json: async () => body };
  };
  return { fetch, calls };
}

test("the alerts client sends JSON with the CSRF token on unsafe methods only", async () => {
  const { fetch, calls } = fakeFetch([[201, { id: 7 }], [200, { id: 7, price: 2 }], [204, null], [200, []], [200, []]]);
  const api = new AlertsClient({ url: "/api/alerts/", csrfToken: "tok", fetch });
  assert.deepEqual(await api.create({ symbol: "BTC-USD", direction: "above", price: 1 }), { id: 7 });
  await api.update(7, { price: 2 });
  assert.equal(await api.remove(7), null);
  await api.list();
  await api.history({ limit: 5 });
  assert.deepEqual(calls.map((c) => [c.method, c.url]), [
    ["POST", "/api/alerts/"], ["PATCH", "/api/alerts/7"], ["DELETE", "/api/alerts/7"],
    ["GET", "/api/alerts/"], ["GET", "/api/alerts/history?limit=5"],
  ]);
  assert.equal(calls[0].headers["X-CSRFToken"], "tok");
  assert.equal(calls[0].body, JSON.stringify({ symbol: "BTC-USD", direction: "above", price: 1 }));
  assert.equal(calls[3].headers["X-CSRFToken"], undefined);
});

test("an error answer becomes an AlertsError with the server's message", async () => {
  const { fetch } = fakeFetch([[422, { code: "bad_request", message: "at most 100 alerts per user" }]]);
  const api = new AlertsClient({ url: "/api/alerts", fetch });
  await assert.rejects(api.create({}), (err) => err instanceof AlertsError && err.status === 422 && /at most 100/.test(err.message));
  assert.equal(describeAlert({ symbol: "ETH-USD", direction: "below", threshold: 2500 }), "ETH-USD crosses below 2500");
});

test("the stream client emits an alert message as an 'alert' event", () => {
  const clock = new FakeClock();
  const WS = fakeWebSocketClass();
  const client = new PriceStreamClient({ url: "ws://x/ws/prices/", WebSocket: WS, timers: clock.timerApi, now: clock.now, random: () => 0.5, heartbeatMs: 0 });
  const got = [];
  client.on("alert", (a) => got.push(a));
  client.start();
  const ws = WS.last();
  ws.serverOpen();
  const message = { type: "alert", event_id: 3, alert_id: 1, symbol: "BTC-USD", direction: "above", threshold: 100, price: 100.5, seq: 9, ts: 5, fired_at: 6 };
  ws.serverSend(message);
  assert.deepEqual(got, [message]);
});

test("an alert the server switched off for a lost right says so; others say nothing", () => {
  assert.match(offReasonText({ symbol: "XAU-USD", off_reason: "forbidden" }), /no longer have access to XAU-USD/);
  assert.equal(offReasonText({ symbol: "XAU-USD", off_reason: null }), null);
  assert.equal(offReasonText({ symbol: "XAU-USD" }), null);
});
