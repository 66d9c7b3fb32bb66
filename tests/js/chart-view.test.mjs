import assert from "node:assert/strict";
import { test } from "node:test";

import { ChartView, plotTime } from "../../frontend/static/frontend/chart-view.js";
import { MarketStore } from "../../frontend/static/frontend/market-store.js";
import { tick } from "./fakes.mjs";

/** Records Plotly calls; each call "costs" drawCostMs on the fake clock. */
function fakePlotly(clock, drawCostMs = 5) {
  const calls = [];
  const record = (name) => (...args) => {
    calls.push({ name, args });
    clock.t += drawCostMs;
  };
  return { calls, react: record("react"), extendTraces: record("extendTraces") };
}

function setup({ drawCostMs = 5, maxPoints = 600 } = {}) {
  const clock = { t: 0 };
  const Plotly = fakePlotly(clock, drawCostMs);
  const chart = new ChartView({}, { Plotly, now: () => clock.t, maxPoints });
  const store = new MarketStore();
  const series = store.ensure("BTC-USD");
  return { clock, Plotly, chart, store, series };
}

function feed(ctx, from, to) {
  for (let seq = from; seq <= to; seq += 1) {
    const t = tick("BTC-USD", seq);
    ctx.store.applyTick(t, 0);
    ctx.chart.push(t);
  }
}

test("the first draw is a full one from the series; later ticks extend the traces", () => {
  const ctx = setup();
  feed(ctx, 1, 5);
  ctx.chart.show(ctx.series, { mode: "line", decimals: 2 });
  assert.equal(ctx.chart.flush(), false);
  const [first] = ctx.Plotly.calls;
  assert.equal(first.name, "react");
  const [, data, layout] = first.args;
  assert.deepEqual(data.map((d) => d.name), ["Bid", "Ask", "Last"]);
  assert.deepEqual(data[2].y, [101, 102, 103, 104, 105]);
  assert.deepEqual(data[0].x, [1, 2, 3, 4, 5].map((s) => plotTime(tick("X", s).ts)));
  assert.equal(layout.yaxis.tickformat, ",.2f");

  ctx.clock.t += 100;
  feed(ctx, 6, 8);
  ctx.chart.flush();
  const last = ctx.Plotly.calls.at(-1);
  assert.equal(last.name, "extendTraces");
  const [, update, indices, maxPoints] = last.args;
  assert.deepEqual(indices, [0, 1, 2]);
  assert.equal(maxPoints, 600, "the rolling window is capped");
  assert.deepEqual(update.y[2], [106, 107, 108]);
  assert.deepEqual(update.y[0], [105.5, 106.5, 107.5]);
  assert.deepEqual(update.y[1], [106.5, 107.5, 108.5]);
});

test("ticks arriving faster than the chart draws are batched into one draw", () => {
  const ctx = setup({ drawCostMs: 40 });
  feed(ctx, 1, 3);
  ctx.chart.show(ctx.series, { mode: "line" });
  ctx.chart.flush(); // full draw, costs 40 ms: the next waits 3 x 40 ms
  const calls = ctx.Plotly.calls.length;
  for (let seq = 4; seq <= 30; seq += 1) {
    feed(ctx, seq, seq);
    ctx.clock.t += 4; // frames (and ticks) every 4 ms
    ctx.chart.flush();
  }
  assert.ok(ctx.chart.minGapMs >= 120);
  const extends_ = ctx.Plotly.calls.slice(calls);
  assert.equal(extends_.length, 0, "27 ticks within 108 ms: still waiting");
  ctx.clock.t += 20;
  assert.equal(ctx.chart.flush(), false);
  const [batch] = ctx.Plotly.calls.slice(calls);
  assert.equal(batch.name, "extendTraces");
  assert.equal(batch.args[1].y[2].length, 27);
});

test("pending points are bounded even when frames stop (a hidden tab)", () => {
  const ctx = setup({ maxPoints: 50 });
  feed(ctx, 1, 2);
  ctx.chart.show(ctx.series, { mode: "line" });
  ctx.chart.flush();
  feed(ctx, 3, 5000);
  assert.equal(ctx.chart.pending.length, 50);
  ctx.clock.t += 1000;
  ctx.chart.flush();
  assert.deepEqual(ctx.Plotly.calls.at(-1).args[1].y[2].at(-1), 5100);
});

test("candle mode draws candlesticks with a volume histogram on a second axis", () => {
  const ctx = setup();
  feed(ctx, 1, 25); // 100 ms apart: three 1-second candles
  ctx.chart.show(ctx.series, { mode: "1s" });
  ctx.chart.flush();
  const [, data, layout] = ctx.Plotly.calls.at(-1).args;
  assert.equal(data[0].type, "candlestick");
  assert.equal(data[1].type, "bar");
  assert.equal(data[1].yaxis, "y2");
  assert.deepEqual(data[0].open, ctx.series.candles["1s"].candles.map((c) => c.open));
  assert.deepEqual(data[1].y, ctx.series.candles["1s"].candles.map((c) => c.volume));
  assert.equal(layout.xaxis.rangeslider.visible, false);
  assert.ok(layout.yaxis2.domain[1] < layout.yaxis.domain[0]);

  assert.equal(ctx.chart.hasWork, false);
  ctx.clock.t += 1000;
  feed(ctx, 26, 26);
  assert.equal(ctx.chart.hasWork, true, "a new tick changes the candles");
  ctx.chart.flush();
  assert.equal(ctx.chart.hasWork, false);
});

test("rebuild after a snapshot redraws everything; no symbol shows a hint", () => {
  const ctx = setup();
  feed(ctx, 1, 3);
  ctx.chart.show(ctx.series, { mode: "line" });
  ctx.chart.flush();
  ctx.store.applySnapshot("BTC-USD", [tick("BTC-USD", 100)], 0);
  ctx.chart.rebuild();
  ctx.clock.t += 1000;
  ctx.chart.flush();
  const [, data] = ctx.Plotly.calls.at(-1).args;
  assert.equal(ctx.Plotly.calls.at(-1).name, "react");
  assert.deepEqual(data[2].y, [200]);

  ctx.chart.show(null, { mode: "line" });
  ctx.clock.t += 1000;
  ctx.chart.flush();
  const [, empty, layout] = ctx.Plotly.calls.at(-1).args;
  assert.deepEqual(empty[2].y, []);
  assert.match(layout.annotations[0].text, /Add a symbol/);
});
