import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";

import { bookChecksum } from "../../frontend/static/frontend/order-book.js";
import { PriceStreamClient } from "../../frontend/static/frontend/protocol-client.js";
import { FakeClock, fakeWebSocketClass, tick } from "./fakes.mjs";

// Server frames markets.book computed (tests/book_vectors.py).
const VECTORS = JSON.parse(readFileSync(new URL("./book-vectors.json", import.meta.url), "utf-8"));

function setup() {
  const clock = new FakeClock();
  const WS = fakeWebSocketClass();
  const client = new PriceStreamClient({
    url: "ws://127.0.0.1:8000/ws/prices/", WebSocket: WS, timers: clock.timerApi, now: clock.now, random: () => 0.5, heartbeatMs: 0,
  });
  const events = [];
  for (const type of ["book", "bookResync", "bookRefused", "rejected", "tick", "unsubscribed"]) {
    client.on(type, (payload) => events.push({ type, ...payload }));
  }
  const of = (type) => events.filter((e) => e.type === type);
  client.subscribe(["BTC-USD", "AAPL"]);
  client.start();
  const ws = WS.last();
  ws.serverOpen();
  ws.serverSend({ type: "subscribed", id: 1, symbols: ["BTC-USD", "AAPL"] });
  return { clock, WS, ws, client, of };
}

function snapshot(seq = 10, overrides = {}) {
  const bids = [["100.5", "1"], ["100", "2"]];
  const asks = [["101", "0.5"], ["102.25", "3"]];
  return { type: "book", symbol: "BTC-USD", seq, epoch: "e", ts: 1, depth: 10, bids, asks, checksum: bookChecksum(bids, asks), ...overrides };
}

describe("watching an order book", () => {
  test("subscribes the ticks and book streams with depth and max_rate, and drops the book alone", () => {
    const { ws, client } = setup();
    client.watchBook("BTC-USD", { depth: 20, maxRate: 10 });
    assert.deepEqual(ws.sent.at(-1), { action: "subscribe", symbols: ["BTC-USD"], streams: ["ticks", "book"], depth: 20, max_rate: 10, id: 2 });
    assert.equal(client.watchBook("BTC-USD", { depth: 20, maxRate: 10 }), false, "the same watch sends nothing");
    client.unwatchBook("BTC-USD");
    assert.deepEqual(ws.sent.at(-1), { action: "unsubscribe", symbols: ["BTC-USD"], streams: ["book"], id: 3 });
    ws.serverSend({ type: "unsubscribed", id: 3, symbols: ["BTC-USD"] });
    assert.deepEqual(client.confirmedSymbols, ["BTC-USD", "AAPL"], "the ticks are still held");
    // A symbol whose ticks are not wanted is asked for its book only.
    client.watchBook("ETH-USD", { depth: 5 });
    assert.deepEqual(ws.sent.at(-1), { action: "subscribe", symbols: ["ETH-USD"], streams: ["book"], depth: 5, id: 4 });
  });

  test("applies a server's frames and emits each checked book", () => {
    const { ws, client, of } = setup();
    const stream = VECTORS.streams[0];
    client.watchBook("BTC-USD", { depth: stream.depth });
    for (const frame of stream.frames) ws.serverSend(frame);
    assert.equal(of("book").length, stream.frames.length);
    assert.equal(of("bookResync").length, 0);
    const replica = client.book("BTC-USD");
    assert.ok(replica.synced);
    assert.deepEqual(replica.book.bids, stream.final.bids);
    assert.deepEqual(replica.book.asks, stream.final.asks);
    assert.equal(client.stats.bookSnapshots, 1);
    assert.equal(client.stats.bookUpdates, stream.frames.length - 1);
  });

  test("a missed update resubscribes the book at once and counts it; stale updates are ignored", () => {
    const { ws, client, of } = setup();
    client.watchBook("BTC-USD", { depth: 10, maxRate: 10 });
    ws.serverSend(snapshot(10));
    const sentBefore = ws.sent.length;
    ws.serverSend({ type: "book_update", symbol: "BTC-USD", seq: 12, prev_seq: 11, bids: [], asks: [], checksum: 0 });
    assert.deepEqual(of("bookResync").map((e) => [e.fault, e.delayMs]), [["prev_seq", 0]]);
    assert.equal(client.stats.bookResyncs, 1);
    assert.deepEqual(client.stats.bookFaults, { prev_seq: 1 });
    assert.deepEqual(ws.sent.slice(sentBefore).map(({ id, ...rest }) => rest), [
      { action: "unsubscribe", symbols: ["BTC-USD"], streams: ["book"] },
      { action: "subscribe", symbols: ["BTC-USD"], streams: ["ticks", "book"], depth: 10, max_rate: 10 },
    ]);
    assert.equal(client.book("BTC-USD").synced, false);
    // An update still in flight from the old subscription changes nothing.
    ws.serverSend({ type: "book_update", symbol: "BTC-USD", seq: 13, prev_seq: 12, bids: [], asks: [], checksum: 0 });
    assert.equal(client.stats.bookResyncs, 1);
    ws.serverSend(snapshot(40));
    assert.ok(client.book("BTC-USD").synced);
    assert.equal(client.book("BTC-USD").seq, 40);
  });

  test("repeated faults back off instead of asking in a tight loop", () => {
    const { ws, client, clock, of } = setup();
    client.watchBook("BTC-USD");
    ws.serverSend(snapshot(10, { checksum: 1 }));
    const subscribes = () => ws.sentOf("subscribe").filter((m) => m.streams).length;
    assert.equal(subscribes(), 2, "the first fault resubscribes at once");
    ws.serverSend(snapshot(11, { checksum: 1 }));
    const [first, second] = of("bookResync");
    assert.equal(first.delayMs, 0);
    assert.ok(second.delayMs >= 250, `${second.delayMs}`);
    assert.equal(subscribes(), 2, "the second waits");
    clock.advance(second.delayMs);
    assert.equal(subscribes(), 3);
    // A good snapshot and a good update: the next fault is answered at once again.
    ws.serverSend(snapshot(20));
    const { bids, asks } = client.book("BTC-USD").book;
    ws.serverSend({ type: "book_update", symbol: "BTC-USD", seq: 21, prev_seq: 20, bids: [["100.5", "0"]], asks: [], checksum: bookChecksum(bids.slice(1), asks) });
    assert.ok(client.book("BTC-USD").synced);
    ws.serverSend({ type: "book_update", symbol: "BTC-USD", seq: 23, prev_seq: 22, bids: [], asks: [], checksum: 0 });
    assert.equal(of("bookResync").at(-1).delayMs, 0);
    assert.equal(client.stats.bookResyncs, 3);
  });

  test("a reconnect asks for fresh snapshots after the ticks' resume", () => {
    const { WS, ws, client, clock } = setup();
    client.watchBook("BTC-USD", { depth: 20, maxRate: 10 });
    ws.serverSend(snapshot(10));
    ws.serverSend(tick("BTC-USD", 5));
    ws.serverClose(1006);
    assert.equal(client.book("BTC-USD").synced, false);
    clock.advance(1000);
    const next = WS.last();
    assert.notEqual(next, ws);
    next.serverOpen();
    assert.deepEqual(next.sent.map(({ id, ...rest }) => rest), [
      { action: "subscribe", symbols: ["BTC-USD", "AAPL"], since: { "BTC-USD": 5 } },
    ]);
    // The book once the ticks are confirmed (a refused symbol is refused once).
    next.serverSend({ type: "subscribed", id: next.sent[0].id, symbols: ["BTC-USD", "AAPL"] });
    assert.deepEqual(next.sent.slice(1).map(({ id, ...rest }) => rest), [
      { action: "subscribe", symbols: ["BTC-USD"], streams: ["ticks", "book"], depth: 20, max_rate: 10 },
    ]);
  });

  test("a symbol whose ticks the server refuses is never asked for its book", () => {
    const { ws, client } = setup();
    client.subscribe(["DOGE-USD"]);
    client.watchBook("DOGE-USD");
    assert.deepEqual(ws.sent.at(-1), { action: "subscribe", symbols: ["DOGE-USD"], id: 2 }, "no book yet");
    ws.serverSend({ type: "error", id: 2, code: "forbidden", message: "not permitted", symbols: ["DOGE-USD"] });
    assert.equal(client.book("DOGE-USD"), null);
    assert.equal(ws.sent.filter((m) => m.streams).length, 0);
    // Nor told to drop a book it was never asked for.
    client.subscribe(["SOL-USD"]);
    client.watchBook("SOL-USD");
    client.unwatchBook("SOL-USD");
    client.unsubscribe(["SOL-USD"]);
    assert.deepEqual(ws.sent.slice(-2).map(({ id, ...rest }) => rest), [
      { action: "subscribe", symbols: ["SOL-USD"] },
      { action: "unsubscribe", symbols: ["SOL-USD"] },
    ]);
  });

  test("removing the symbol drops its book with its ticks", () => {
    const { ws, client } = setup();
    client.watchBook("BTC-USD");
    client.unsubscribe(["BTC-USD"]);
    assert.deepEqual(ws.sent.at(-1), { action: "unsubscribe", symbols: ["BTC-USD"], streams: ["ticks", "book"], id: 3 });
    assert.equal(client.book("BTC-USD"), null);
    ws.serverSend(snapshot(10));
    assert.equal(client.stats.bookSnapshots, 0);
  });

  test("a refused book subscription keeps the symbol's ticks", () => {
    const { ws, client, of } = setup();
    client.watchBook("BTC-USD");
    ws.serverSend({ type: "error", id: 2, code: "bad_request", message: "unknown field 'streams'" });
    assert.deepEqual(of("bookRefused").map((e) => [e.symbol, e.code]), [["BTC-USD", "bad_request"]]);
    assert.deepEqual(of("rejected"), []);
    assert.deepEqual(client.symbols, ["BTC-USD", "AAPL"]);
    ws.serverSend(tick("BTC-USD", 1));
    assert.equal(of("tick").length, 1);
  });

  test("a book the server cannot serve right now is asked for again with backoff, and no toast-worthy error", () => {
    const { ws, client, clock, of } = setup();
    const errors = [];
    client.on("error", (e) => errors.push(e));
    client.watchBook("BTC-USD");
    ws.serverSend({ type: "error", id: 2, code: "unavailable", message: "market data is unavailable right now" });
    assert.deepEqual(of("bookRefused").map((e) => e.code), ["unavailable"]);
    assert.deepEqual(errors, [], "the ladder says it; the page needs no toast");
    const books = () => ws.sentOf("subscribe").filter((m) => m.streams).length;
    assert.equal(books(), 1);
    clock.advance(600);
    assert.equal(books(), 2, "asked again after the backoff");
    ws.serverSend(snapshot(10));
    assert.ok(client.book("BTC-USD").synced);
  });

  test("a snapshot without a book is passed on with its reason", () => {
    const { ws, client, of } = setup();
    client.watchBook("BTC-USD");
    ws.serverSend({ type: "book", symbol: "BTC-USD", seq: 0, ts: 1, depth: 10, bids: [], asks: [], available: false, reason: "no_book_source" });
    assert.equal(of("book").length, 1);
    assert.equal(client.book("BTC-USD").available, false);
    assert.equal(client.book("BTC-USD").reason, "no_book_source");
  });
});
