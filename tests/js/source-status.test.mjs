import assert from "node:assert/strict";
import { test } from "node:test";

import { SOURCE_POLL_MS, SourceStatusPoller, parseSources, sourceMark } from "../../frontend/static/frontend/source-status.js";
import { FakeClock } from "./fakes.mjs";

const BODY = [
  { ticker: "BTC-USD", source: "simulated", source_state: "up", source_error: null },
  { ticker: "ETH-USD", source: "coinbase", source_state: "down", source_error: "connect: ConnectionRefusedError" },
  { ticker: "SOL-USD", source: "replay", source_state: "ended", source_error: null },
  { ticker: "XRP-USD", source: "binance", source_state: "something new", source_error: "" },
  { ticker: 7 },
];

test("the API's list becomes ticker -> source, state and error", () => {
  const sources = parseSources(BODY);
  assert.deepEqual([...sources.keys()], ["BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD"]);
  assert.deepEqual(sources.get("ETH-USD"), { source: "coinbase", state: "down", error: "connect: ConnectionRefusedError" });
  assert.deepEqual(sources.get("XRP-USD"), { source: "binance", state: "unknown", error: null }, "an unknown word is unknown");
  assert.equal(parseSources({ detail: "not a list" }).size, 0);
});

test("a source that is up, or not known yet, has no mark; the others say their state and why", () => {
  assert.equal(sourceMark(null), null);
  assert.equal(sourceMark({ source: "simulated", state: "up", error: null }), null);
  assert.equal(sourceMark({ source: "simulated", state: null, error: null }), null);
  const down = sourceMark({ source: "coinbase", state: "down", error: "connect: refused" });
  assert.equal(down.label, "down");
  assert.match(down.description, /^Feed source coinbase is down \(connect: refused\)\. The price shown is not live\.$/);
  for (const state of ["starting", "ended", "unknown"]) {
    const mark = sourceMark({ source: "replay", state, error: null });
    assert.equal(mark.label, state);
    assert.match(mark.description, /replay/);
  }
});

function fakeFetch(answers) {
  const calls = [];
  const pending = [];
  const fetch = (url, init) => {
    calls.push({ url, init });
    const answer = answers.shift() ?? { status: 200, body: [] };
    if (answer === "hold") return new Promise((resolve) => pending.push(resolve));
    if (answer instanceof Error) return Promise.reject(answer);
    return Promise.resolve({ ok: answer.status < 400, status: answer.status, json: async () => answer.body });
  };
  return { fetch, calls, pending };
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

test("it polls at once when active, then every interval, and never while inactive", async () => {
  const clock = new FakeClock();
  const { fetch, calls } = fakeFetch([{ status: 200, body: BODY }]);
  const updates = [];
  const poller = new SourceStatusPoller({ url: "/api/symbols/", fetch, timers: clock.timerApi, onUpdate: (m) => updates.push(m) });
  clock.advance(SOURCE_POLL_MS * 3);
  assert.equal(calls.length, 0, "inactive: no request");
  poller.setActive(true);
  await settle();
  assert.equal(calls.length, 1);
  assert.equal(calls[0].url, "/api/symbols/");
  assert.equal(calls[0].init.credentials, "same-origin");
  assert.equal(updates[0].get("ETH-USD").state, "down");
  clock.advance(SOURCE_POLL_MS - 1);
  assert.equal(calls.length, 1);
  clock.advance(1);
  await settle();
  assert.equal(calls.length, 2);
  poller.setActive(false);
  clock.advance(SOURCE_POLL_MS * 5);
  await settle();
  assert.equal(calls.length, 2, "inactive again: no request");
  assert.equal(clock.pending, 0);
});

test("one request at a time: a slow answer is not overlapped", async () => {
  const clock = new FakeClock();
  const { fetch, calls, pending } = fakeFetch(["hold"]);
  const poller = new SourceStatusPoller({ fetch, timers: clock.timerApi, onUpdate: () => {} });
  poller.setActive(true);
  poller.setActive(false);
  poller.setActive(true); // would poll at once, but one is in flight
  clock.advance(SOURCE_POLL_MS * 3);
  assert.equal(calls.length, 1);
  pending[0]({ ok: true, status: 200, json: async () => [] });
  await settle();
  clock.advance(SOURCE_POLL_MS);
  await settle();
  assert.equal(calls.length, 2, "the next poll follows the answer");
});

test("401 or 403 stops it until it becomes active again; other failures are retried", async () => {
  const clock = new FakeClock();
  const errors = [];
  const { fetch, calls } = fakeFetch([new TypeError("Failed to fetch"), { status: 503, body: {} }, { status: 401, body: {} }]);
  const poller = new SourceStatusPoller({ fetch, timers: clock.timerApi, onUpdate: () => {}, onError: (e) => errors.push(e.message) });
  poller.setActive(true);
  await settle();
  clock.advance(SOURCE_POLL_MS);
  await settle();
  assert.deepEqual(errors, ["Failed to fetch", "/api/symbols/: HTTP 503"]);
  clock.advance(SOURCE_POLL_MS);
  await settle();
  assert.equal(calls.length, 3);
  clock.advance(SOURCE_POLL_MS * 5);
  await settle();
  assert.equal(calls.length, 3, "refused: no more requests");
  assert.equal(errors.length, 2, "a refusal is not an error to report");
  poller.setActive(false);
  poller.setActive(true); // the stream connected anew (signed in again, say)
  await settle();
  assert.equal(calls.length, 4);
});
