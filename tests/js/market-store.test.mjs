import assert from "node:assert/strict";
import { test } from "node:test";

import { MarketStore } from "../../frontend/static/frontend/market-store.js";
import { sparklinePoints } from "../../frontend/static/frontend/watchlist-view.js";
import { tick } from "./fakes.mjs";

test("change and change % are measured from the first tick seen", () => {
  const store = new MarketStore();
  store.ensure("BTC-USD");
  store.applyTick(tick("BTC-USD", 1, { price: 200 }), 10);
  store.applyTick(tick("BTC-USD", 2, { price: 210 }), 20);
  const s = store.applyTick(tick("BTC-USD", 3, { price: 190 }), 30);
  assert.equal(s.open, 200);
  assert.equal(s.change, -10);
  assert.equal(s.changePct, -5);
  assert.equal(s.direction, -1);
  assert.equal(s.previousPrice, 210);
  assert.equal(s.lastReceivedAt, 30);
  assert.equal(s.count, 3);
});

test("ticks of symbols not on the watchlist are ignored", () => {
  const store = new MarketStore();
  assert.equal(store.applyTick(tick("AAPL", 1), 0), null);
  assert.equal(store.takeDirty().size, 0);
});

test("the dirty set collects changed symbols once per frame", () => {
  const store = new MarketStore();
  store.ensure("A");
  store.ensure("B");
  for (let seq = 1; seq <= 100; seq += 1) store.applyTick(tick("A", seq), seq);
  store.applyTick(tick("B", 1), 1);
  assert.deepEqual([...store.takeDirty()].sort(), ["A", "B"]);
  assert.equal(store.takeDirty().size, 0);
});

test("a snapshot replaces the history and does not count as a move", () => {
  const store = new MarketStore();
  store.ensure("A");
  store.applyTick(tick("A", 1, { price: 1 }), 0);
  const s = store.applySnapshot("A", [tick("A", 50, { price: 10 }), tick("A", 51, { price: 12 })], 5);
  assert.equal(s.open, 10);
  assert.equal(s.last.seq, 51);
  assert.equal(s.direction, 0);
  assert.deepEqual(s.ticks.map((t) => t.seq), [50, 51]);
  assert.equal(s.candles["1s"].candles.length > 0, true);
});

test("reset forgets everything", () => {
  const store = new MarketStore();
  store.ensure("A");
  store.applyTick(tick("A", 1), 0);
  const s = store.reset("A");
  assert.equal(s.last, null);
  assert.equal(s.open, null);
  assert.equal(s.change, null);
  assert.deepEqual(s.ticks, []);
  assert.deepEqual(s.candles["1m"].candles, []);
});

test("tick history stays bounded", () => {
  const store = new MarketStore({ maxTicks: 100, maxCandles: 20 });
  store.ensure("A");
  for (let seq = 1; seq <= 10_000; seq += 1) store.applyTick(tick("A", seq), seq);
  const s = store.get("A");
  assert.ok(s.ticks.length <= 125, `${s.ticks.length} ticks kept`);
  assert.equal(s.ticks.at(-1).seq, 10_000);
  assert.deepEqual(s.recent(3).map((t) => t.seq), [9998, 9999, 10_000]);
  for (const series of Object.values(s.candles)) assert.ok(series.candles.length <= 20);
});

test("stale symbols: no tick for staleMs, counting from subscription when none came", () => {
  const store = new MarketStore();
  for (const s of ["A", "B", "C"]) store.ensure(s);
  store.applyTick(tick("A", 1), 1000);
  store.applyTick(tick("B", 1), 7000);
  assert.deepEqual(store.staleSymbols(["A", "B", "C"], 8000, 5000, { C: 2000 }), ["A", "C"]);
  assert.deepEqual(store.staleSymbols(["A", "B", "C"], 6000, 5000, { C: 2000 }), []);
});

test("sparkline follows 1-second closes", () => {
  const store = new MarketStore();
  store.ensure("A");
  for (let seq = 1; seq <= 30; seq += 1) store.applyTick(tick("A", seq), seq); // ts 100 ms apart
  assert.deepEqual(store.get("A").sparkline(60), [109, 119, 129, 130]);
  assert.equal(sparklinePoints([1]), "");
  assert.equal(sparklinePoints([0, 10], 10, 10), "0.0,8.0 10.0,2.0");
  assert.equal(sparklinePoints([5, 5, 5], 10, 10).split(" ").length, 3);
});
