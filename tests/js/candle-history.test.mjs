import assert from "node:assert/strict";
import { test } from "node:test";

import { CandleHistory, HISTORY_SOURCES } from "../../frontend/static/frontend/candle-history.js";
import { MarketStore } from "../../frontend/static/frontend/market-store.js";
import { moveSelection, nextSort, sortSymbols } from "../../frontend/static/frontend/watchlist-sort.js";

const H = 3_600_000;
const DAY = 86_400_000;
const DAY0 = 1_764_028_800_000; // a UTC midnight

function apiCandle(start, i, interval = H) {
  return { start, end: start + interval, open: i, high: i + 1, low: i - 1, close: i + 0.5, volume: 1, ticks: 1, first_seq: i, last_seq: i, closed: true };
}

function fakeFetch(pages) {
  const calls = [];
  const fetch = async (url) => {
    calls.push(url);
    const body = pages.shift() ?? { candles: [] };
    return { ok: true, status: 200, json: async () => body };
  };
  return { fetch, calls };
}

test("1m, 5m and 1h come from the API as served, the last 300", async () => {
  const { fetch, calls } = fakeFetch([{ candles: [apiCandle(DAY0, 1, 60000), apiCandle(DAY0 + 60000, 2, 60000)] }]);
  const history = new CandleHistory({ fetch });
  const candles = await history.load("BTC-USD", "1m");
  assert.equal(calls[0], "/api/symbols/BTC-USD/candles?interval=1m&limit=300");
  assert.deepEqual(candles.map((c) => [c.t, c.open, c.lastSeq]), [[DAY0, 1, 1], [DAY0 + 60000, 2, 2]]);
  assert.equal(await history.load("BTC-USD", "5s"), null, "5s has no server history");
  assert.deepEqual(Object.keys(HISTORY_SOURCES), ["1m", "5m", "1h", "1D"]);
});

test("1D is rolled up from 1h, paging back while pages are full", async () => {
  const full = Array.from({ length: 1000 }, (_, i) => apiCandle(DAY0 + (i + 1000) * H, i + 1000));
  const older = Array.from({ length: 10 }, (_, i) => apiCandle(DAY0 + (i + 990) * H, i));
  const { fetch, calls } = fakeFetch([{ candles: full }, { candles: older }]);
  const days = await new CandleHistory({ fetch }).load("ETH-USD", "1D");
  assert.equal(calls.length, 2);
  assert.match(calls[1], new RegExp(`end=${DAY0 + 1000 * H}`));
  assert.ok(days.every((d, i) => i === 0 || d.t - days[i - 1].t === DAY));
  assert.equal(days[0].t, DAY0 + 41 * DAY); // hour 990 is in day 41
  assert.equal(days.reduce((n, d) => n + d.count, 0), 1010);
});

test("the session is the UTC day's hours rolled up, and the store measures change from its open", async () => {
  const { fetch, calls } = fakeFetch([{ candles: [apiCandle(DAY0, 100), apiCandle(DAY0 + H, 104)] }]);
  const day = await new CandleHistory({ fetch }).session("BTC-USD", DAY0 + H + 5);
  assert.match(calls[0], new RegExp(`interval=1h&limit=24&start=${DAY0}`));
  assert.deepEqual([day.t, day.open, day.high, day.low, day.close, day.volume], [DAY0, 100, 105, 99, 104.5, 2]);

  const store = new MarketStore();
  const s = store.ensure("BTC-USD");
  store.applySnapshot("BTC-USD", [{ symbol: "BTC-USD", seq: 104, ts: DAY0 + H + 1, price: 104.5, size: 1 }], 0);
  assert.equal(s.session.known, false);
  store.seedCandles("BTC-USD", "1D", [day], { partial: true });
  store.applyTick({ symbol: "BTC-USD", seq: 105, ts: DAY0 + H + 2, price: 110, size: 2 }, 1);
  const session = s.session;
  assert.deepEqual([session.open, session.high, session.low, session.volume, session.known], [100, 110, 99, 4, true]);
  assert.ok(Math.abs(s.changePct - 10) < 1e-9, "change % from the session open");
  // A snapshot (a resubscribe) keeps the seeded day and counts no tick twice.
  store.applySnapshot("BTC-USD", [{ symbol: "BTC-USD", seq: 105, ts: DAY0 + H + 2, price: 110, size: 2 }], 2);
  assert.equal(s.session.volume, 4);
  store.reset("BTC-USD");
  assert.equal(s.session, null);
});

test("sorting by symbol, change % and volume; no value goes last", () => {
  const store = new MarketStore();
  const tick = (symbol, seq, price) => store.applyTick({ symbol, seq, ts: DAY0 + seq, price, size: seq }, 0);
  for (const s of ["B", "A", "C", "D"]) store.ensure(s);
  tick("B", 1, 10); tick("B", 2, 11); // +10%, volume 3
  tick("A", 1, 10); tick("A", 3, 9); // -10%, volume 4
  tick("C", 1, 10); // 0%, volume 1
  assert.deepEqual(sortSymbols(["B", "A", "C", "D"], store, { key: "symbol", dir: "asc" }), ["A", "B", "C", "D"]);
  assert.deepEqual(sortSymbols(["B", "A", "C", "D"], store, { key: "change", dir: "desc" }), ["B", "C", "A", "D"]);
  assert.deepEqual(sortSymbols(["B", "A", "C", "D"], store, { key: "volume", dir: "asc" }), ["C", "B", "A", "D"]);
  assert.deepEqual(sortSymbols(["B", "A"], store, null), ["B", "A"]);
  assert.deepEqual(nextSort(null, "volume"), { key: "volume", dir: "desc" });
  assert.deepEqual(nextSort({ key: "volume", dir: "desc" }, "volume"), { key: "volume", dir: "asc" });
  assert.equal(nextSort({ key: "volume", dir: "asc" }, "volume"), null);
  assert.equal(moveSelection(["A", "B", "C"], "B", 1), "C");
  assert.equal(moveSelection(["A", "B", "C"], "C", 1), "C");
  assert.equal(moveSelection(["A", "B", "C"], "A", -1), "A");
  assert.equal(moveSelection(["A", "B"], null, -1), "B");
});
