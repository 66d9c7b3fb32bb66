import assert from "node:assert/strict";
import { test } from "node:test";

import { DepthChartView, depthFigure } from "../../frontend/static/frontend/depth-chart.js";
import { noBookText } from "../../frontend/static/frontend/ladder-view.js";
import { BookReplica, OrderBook, bookChecksum, depthSeriesOf } from "../../frontend/static/frontend/order-book.js";
import { tapeRowsOf } from "../../frontend/static/frontend/trade-tape.js";
import { tick } from "./fakes.mjs";

test("the tape: newest first, at most n rows, the side only when the source knows it", () => {
  const ticks = [
    tick("BTC-USD", 1, { side: "buy", size: 0.5 }),
    tick("BTC-USD", 2, { side: "sell", size: 0.00000123 }),
    tick("BTC-USD", 3, { size: 2 }),
    tick("BTC-USD", 4, { side: "sideways", size: 1 }),
  ];
  const rows = tapeRowsOf(ticks, 3, { decimals: 2 });
  assert.deepEqual(rows.map((r) => [r.seq, r.side, r.price, r.size]), [
    [4, "", "104.00", "1"],
    [3, "", "103.00", "2"],
    [2, "sell", "102.00", "0.00000123"],
  ]);
  assert.match(rows[0].time, /^\d\d:\d\d:\d\d$/);
  assert.deepEqual(tapeRowsOf([], 5), []);
});

test("the depth figure: bids and asks as step areas either side of a dotted mid line", () => {
  const book = OrderBook.fromLevels({ bids: [["100", "1"], ["99", "2"]], asks: [["101", "0.5"]] });
  const { data, layout } = depthFigure(depthSeriesOf(book), { decimals: 2 });
  assert.deepEqual(data.map((t) => [t.name, t.line.shape, t.fill, t.x, t.y]), [
    ["Bids", "vh", "tozeroy", [99, 100], [3, 1]],
    ["Asks", "hv", "tozeroy", [101], [0.5]],
  ]);
  assert.deepEqual([layout.shapes[0].x0, layout.shapes[0].x1, layout.shapes[0].line.dash], [100.5, 100.5, "dot"]);
  assert.equal(layout.xaxis.tickformat, ",.2f");
  const empty = depthFigure(depthSeriesOf(new OrderBook()));
  assert.deepEqual(empty.layout.shapes, []);
});

test("a symbol without a book is told in words", () => {
  assert.equal(noBookText("ETH-USD", "the replay source has no order book"), "No order book for ETH-USD: the replay source has no order book.");
  assert.equal(noBookText("ETH-USD", "no_book"), "No order book for ETH-USD: none has been published for it.");
});

test("the depth chart redraws once per change, no sooner than its gap, and clears on a new symbol", () => {
  let t = 0;
  const calls = [];
  const Plotly = { react: (...args) => { calls.push(args); t += 10; } };
  const view = new DepthChartView({}, { Plotly, now: () => t });
  const replica = new BookReplica("BTC-USD");
  const bids = [["100", "1"]];
  const asks = [["101", "2"]];
  replica.applySnapshot({ type: "book", seq: 1, depth: 10, bids, asks, checksum: bookChecksum(bids, asks) });
  view.show(replica, { decimals: 2 });
  assert.equal(view.flush(), false);
  assert.equal(calls.length, 1);
  assert.deepEqual(calls[0][1][0].x, [100]);
  assert.equal(view.flush(), false, "nothing changed: no redraw");
  assert.equal(calls.length, 1);
  replica.applyUpdate({ type: "book_update", seq: 2, prev_seq: 1, bids: [["99", "1"]], checksum: bookChecksum([...bids, ["99", "1"]], asks) });
  assert.equal(view.flush(), true, "too soon after the last draw: owed");
  t += 100;
  assert.equal(view.flush(), false);
  assert.deepEqual(calls.at(-1)[1][0].x, [99, 100]);
  // Another symbol, no book yet: the old depth goes at once.
  t += 100;
  view.show(new BookReplica("ETH-USD"), { decimals: 2 });
  view.flush();
  assert.deepEqual(calls.at(-1)[1].map((trace) => trace.x), [[], []]);
});
