import assert from "node:assert/strict";
import { test } from "node:test";

import { CandleSeries, INTERVALS, bucketStart, buildCandles, fromApiCandle, rollUp } from "../../frontend/static/frontend/candles.js";

const T0 = 1764072000000; // a whole minute
const t = (offsetMs, price, size = 1) => ({ ts: T0 + offsetMs, price, size });

test("bucketStart floors to the interval", () => {
  assert.equal(bucketStart(T0 + 999, 1000), T0);
  assert.equal(bucketStart(T0 + 1000, 1000), T0 + 1000);
  assert.equal(bucketStart(T0 + 4999, 5000), T0);
  assert.equal(bucketStart(T0 + 59_999, 60_000), T0);
  const day = T0 - (T0 % 86_400_000); // UTC midnight
  assert.equal(bucketStart(day + 86_399_999, 86_400_000), day);
  assert.equal(bucketStart(day + 86_400_000, 86_400_000), day + 86_400_000);
  assert.deepEqual(INTERVALS, { "1s": 1000, "5s": 5000, "1m": 60000, "5m": 300000, "1h": 3600000, "1D": 86400000 });
});

test("1s candles: open, high, low, close and volume per second", () => {
  const ticks = [t(0, 10, 1), t(200, 12, 2), t(400, 9, 0.5), t(900, 11, 1), t(1000, 11.5, 3), t(1500, 11.2, 1)];
  assert.deepEqual(buildCandles(ticks, 1000), [
    { t: T0, open: 10, high: 12, low: 9, close: 11, volume: 4.5, count: 4, firstSeq: null, lastSeq: null },
    { t: T0 + 1000, open: 11.5, high: 11.5, low: 11.2, close: 11.2, volume: 4, count: 2, firstSeq: null, lastSeq: null },
  ]);
});

test("5s and 1m candles from the same ticks", () => {
  const ticks = [];
  for (let i = 0; i < 130; i += 1) ticks.push(t(i * 1000, 100 + (i % 7), 1));
  const five = buildCandles(ticks, 5000);
  assert.equal(five.length, 26);
  assert.deepEqual(five[0], { t: T0, open: 100, high: 104, low: 100, close: 104, volume: 5, count: 5, firstSeq: null, lastSeq: null });
  const minute = buildCandles(ticks, 60000);
  assert.deepEqual(minute.map((c) => [c.t - T0, c.count, c.volume]), [[0, 60, 60], [60000, 60, 60], [120000, 10, 10]]);
  assert.equal(minute[0].high, 106);
  assert.equal(minute[0].low, 100);
  assert.equal(minute[0].open, 100);
  assert.equal(minute[0].close, 100 + (59 % 7));
});

test("quiet intervals get no candle", () => {
  const candles = buildCandles([t(0, 1), t(5500, 2)], 1000);
  assert.deepEqual(candles.map((c) => c.t - T0), [0, 5000]);
});

test("a late tick joins the newest candle, as on the server (the candle clock)", () => {
  const series = new CandleSeries(1000);
  series.add({ ...t(100, 10), seq: 1 });
  series.add({ ...t(1100, 20), seq: 2 });
  assert.equal(series.add({ ...t(900, 5, 2), seq: 3 }), "update");
  assert.deepEqual(series.candles[0], { t: T0, open: 10, high: 10, low: 10, close: 10, volume: 1, count: 1, firstSeq: 1, lastSeq: 1 });
  assert.deepEqual(series.candles[1], { t: T0 + 1000, open: 20, high: 20, low: 5, close: 5, volume: 3, count: 2, firstSeq: 2, lastSeq: 3 });
});

test("a tick with a seq already counted is ignored, and so are bad ticks", () => {
  const series = new CandleSeries(1000, { maxCandles: 2 });
  for (let i = 0; i < 4; i += 1) series.add({ ...t(i * 1000, i), seq: i + 1 });
  assert.equal(series.add({ ...t(3500, 99), seq: 4 }), "ignored");
  assert.equal(series.add({ ...t(3500, 99), seq: 2 }), "ignored");
  assert.equal(series.add({ ts: Number.NaN, price: 1 }), "ignored");
  assert.deepEqual(series.candles.map((c) => c.open), [2, 3]);
});

test("seeded from history, the newest candle continues with the ticks after it", () => {
  const api = [
    { start: T0, end: T0 + 60000, open: 1, high: 3, low: 0.5, close: 2, volume: 4, ticks: 3, first_seq: 1, last_seq: 3, closed: true },
    { start: T0 + 60000, end: T0 + 120000, open: 2, high: 2.5, low: 2, close: 2.5, volume: 1, ticks: 2, first_seq: 4, last_seq: 5, closed: false },
  ];
  const series = new CandleSeries(60000);
  const held = [{ ...t(61000, 2.5), seq: 5 }, { ...t(62000, 4, 0.5), seq: 6 }];
  series.seed(api.map(fromApiCandle), held);
  assert.equal(series.seeded, true);
  assert.deepEqual(series.candles[1], { t: T0 + 60000, open: 2, high: 4, low: 2, close: 4, volume: 1.5, count: 3, firstSeq: 4, lastSeq: 6 });
  assert.equal(series.add({ ...t(62500, 1), seq: 6 }), "ignored", "already folded in");
  assert.equal(series.add({ ...t(121000, 5), seq: 7 }), "new");
  series.clear();
  assert.equal(series.seeded, false);
});

test("rollUp makes UTC days from hours", () => {
  const H = 3_600_000;
  const day = T0 - (T0 % 86_400_000);
  const hours = [
    { t: day + 22 * H, open: 1, high: 2, low: 1, close: 2, volume: 1, count: 1, firstSeq: 1, lastSeq: 1 },
    { t: day + 23 * H, open: 2, high: 5, low: 2, close: 3, volume: 2, count: 2, firstSeq: 2, lastSeq: 3 },
    { t: day + 24 * H, open: 3, high: 3, low: 0.5, close: 1, volume: 4, count: 1, firstSeq: 4, lastSeq: 4 },
  ];
  assert.deepEqual(rollUp(hours, 86_400_000), [
    { t: day, open: 1, high: 5, low: 1, close: 3, volume: 3, count: 3, firstSeq: 1, lastSeq: 3 },
    { t: day + 24 * H, open: 3, high: 3, low: 0.5, close: 1, volume: 4, count: 1, firstSeq: 4, lastSeq: 4 },
  ]);
});

test("the series is capped at maxCandles, oldest dropped", () => {
  const series = new CandleSeries(1000, { maxCandles: 50 });
  for (let i = 0; i < 500; i += 1) series.add(t(i * 1000, i));
  assert.equal(series.candles.length, 50);
  assert.equal(series.candles[0].open, 450);
  assert.deepEqual(series.tail(3).map((c) => c.open), [497, 498, 499]);
});

test("revision changes on every fold and on clear", () => {
  const series = new CandleSeries(1000);
  const r0 = series.revision;
  series.add(t(0, 1));
  const r1 = series.revision;
  series.add(t(10, 2));
  assert.ok(r0 < r1 && r1 < series.revision);
  series.clear();
  assert.deepEqual(series.candles, []);
  assert.throws(() => new CandleSeries(0), RangeError);
});

test("a missing size counts as zero volume", () => {
  assert.equal(buildCandles([{ ts: T0, price: 1 }], 1000)[0].volume, 0);
});
