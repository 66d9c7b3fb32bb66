import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";

import { crc32 } from "../../frontend/static/frontend/crc32.js";
import {
  addDecimal, compareDecimal, cumulativeDecimals, isDecimal, isZeroDecimal, midDecimal, subtractDecimal,
} from "../../frontend/static/frontend/decimal.js";
import {
  BookFault, BookReplica, OrderBook, bookChecksum, depthSeriesOf, ladderOf,
} from "../../frontend/static/frontend/order-book.js";

// Written by tests/book_vectors.py from markets/book.py (the server's book), and checked
// against it by tests/test_book_vectors.py: the same checksums and server frames.
const VECTORS = JSON.parse(readFileSync(new URL("./book-vectors.json", import.meta.url), "utf-8"));

describe("decimal strings", () => {
  test("compare by value, exactly, beyond a double's precision", () => {
    assert.equal(compareDecimal("97000.5", "97000.50"), 0);
    assert.equal(compareDecimal("3", "3.000"), 0);
    assert.equal(compareDecimal("0010", "10"), 0);
    assert.equal(compareDecimal("9", "10"), -1);
    assert.equal(compareDecimal("10.01", "10.1"), -1);
    assert.equal(compareDecimal("0.3", "0.29999"), 1);
    // Equal as doubles, different as decimals.
    assert.equal(Number("0.1000000000000000001"), Number("0.1"));
    assert.equal(compareDecimal("0.1000000000000000001", "0.1"), 1);
    assert.equal(compareDecimal("12345678901234567890.5", "12345678901234567890.4"), 1);
  });

  test("zero sizes and the accepted shape", () => {
    for (const zero of ["0", "0.0", "0.00000000", "000"]) assert.ok(isZeroDecimal(zero), zero);
    for (const nonzero of ["0.00000001", "1", "10.0"]) assert.ok(!isZeroDecimal(nonzero), nonzero);
    for (const ok of ["0", "1", "97000.50", "0.00100000"]) assert.ok(isDecimal(ok), ok);
    for (const bad of ["", "-1", "1e3", " 1", "1.", ".5", "1_000", "NaN", "Infinity", 1, null]) {
      assert.ok(!isDecimal(bad), String(bad));
    }
  });

  test("sums, differences, mids and running totals are exact", () => {
    assert.equal(addDecimal("0.1", "0.2"), "0.3");
    assert.equal(addDecimal("1.5", "0.25"), "1.75");
    assert.equal(subtractDecimal("97001.00", "97000.50"), "0.50");
    assert.equal(subtractDecimal("1", "1.5"), "-0.5");
    assert.equal(midDecimal("97000.50", "97001.00"), "97000.75");
    assert.equal(midDecimal("97000.5", "97001"), "97000.75");
    assert.equal(midDecimal("100", "102"), "101");
    assert.equal(midDecimal("100", "101"), "100.5");
    assert.deepEqual(cumulativeDecimals(["0.1", "0.2", "1", "0.00000001"]), ["0.1", "0.3", "1.3", "1.30000001"]);
    assert.deepEqual(cumulativeDecimals([]), []);
  });
});

describe("checksum", () => {
  test("CRC-32 check values (IEEE, as zlib.crc32)", () => {
    assert.equal(crc32(""), 0);
    assert.equal(crc32("123456789"), 0xcbf43926);
    assert.equal(crc32("The quick brown fox jumps over the lazy dog"), 0x414fa339);
    assert.equal(crc32("€"), 0x83f2c8d6); // UTF-8 bytes, not UTF-16 code units
  });

  test("OKX's documented examples, unsigned", () => {
    assert.equal(bookChecksum([["3366.1", "7"], ["3366", "6"]], [["3366.8", "9"], ["3368", "8"]]), -1881014294 >>> 0);
    assert.equal(bookChecksum([["3366.1", "7"]], [["3366.8", "9"], ["3368", "8"], ["3372", "8"]]), 831078360);
  });

  test("every vector markets.book computed", () => {
    assert.ok(VECTORS.checksums.length >= 9);
    for (const { bids, asks, checksum } of VECTORS.checksums) {
      assert.equal(bookChecksum(bids, asks), checksum, JSON.stringify({ bids, asks }));
      assert.equal(OrderBook.fromLevels({ bids, asks }).checksum(), checksum);
    }
  });
});

describe("OrderBook", () => {
  test("keeps sides ordered by value, replaces re-sent levels' strings, deletes on zero", () => {
    const book = OrderBook.fromLevels({
      bids: [["99.5", "1"], ["100", "2"], ["9.75", "3"]],
      asks: [["101", "1"], ["100.5", "2"], ["1000", "3"]],
    });
    assert.deepEqual(book.bids.map((l) => l[0]), ["100", "99.5", "9.75"]);
    assert.deepEqual(book.asks.map((l) => l[0]), ["100.5", "101", "1000"]);
    book.apply({ bids: [["100.00", "5.0"], ["9.75", "0.000"], ["42", "0"]], asks: [["100.50", "0"]] });
    assert.deepEqual(book.bids, [["100.00", "5.0"], ["99.5", "1"]]);
    assert.deepEqual(book.asks, [["101", "1"], ["1000", "3"]]);
    assert.deepEqual(book.bestBid, ["100.00", "5.0"]);
    assert.deepEqual(book.bestAsk, ["101", "1"]);
    assert.ok(!book.crossed());
    book.apply({ bids: [["101", "1"]] });
    assert.ok(book.crossed());
  });

  test("a bad level changes nothing", () => {
    const book = OrderBook.fromLevels({ bids: [["1", "1"]] });
    for (const bad of [[["2", "1"], ["x", "1"]], [["2", 1]], [["0", "1"]], [["2"]], "levels"]) {
      assert.throws(() => book.apply({ bids: bad }), /level|price|side/);
    }
    assert.deepEqual(book.bids, [["1", "1"]]);
  });
});

function snapshot(overrides = {}) {
  const bids = [["97000.50", "1.25"], ["97000", "2"]];
  const asks = [["97001.00", "0.40"], ["97002", "1"]];
  return { type: "book", symbol: "BTC-USD", seq: 5120, epoch: "e1", ts: 1, depth: 10, bids, asks, checksum: bookChecksum(bids, asks), ...overrides };
}

describe("BookReplica", () => {
  test("replays every server stream of markets.book to the server's book and checksums", () => {
    for (const stream of VECTORS.streams) {
      const replica = new BookReplica("BTC-USD");
      let updates = 0;
      for (const frame of stream.frames) {
        const result = frame.type === "book" ? replica.applySnapshot(frame) : replica.applyUpdate(frame);
        assert.deepEqual(result, { ok: true }, `depth ${stream.depth} seq ${frame.seq}`);
        assert.equal(replica.seq, frame.seq);
        assert.equal(replica.checksum, frame.checksum);
        if (frame.type === "book_update") updates += 1;
      }
      assert.ok(updates >= 8, `only ${updates} updates`);
      assert.deepEqual(replica.book.bids, stream.final.bids);
      assert.deepEqual(replica.book.asks, stream.final.asks);
    }
  });

  test("an update that skips a seq is a prev_seq fault; updates are ignored until the next snapshot", () => {
    const replica = new BookReplica("BTC-USD");
    assert.deepEqual(replica.applySnapshot(snapshot()), { ok: true });
    const update = { type: "book_update", seq: 5122, prev_seq: 5121, bids: [], asks: [], checksum: replica.book.checksum() };
    assert.deepEqual(replica.applyUpdate(update), { ok: false, fault: BookFault.PREV_SEQ });
    assert.equal(replica.synced, false);
    assert.deepEqual(replica.applyUpdate({ ...update, prev_seq: 5120 }), { ok: false, ignored: true });
    assert.deepEqual(replica.applySnapshot(snapshot({ seq: 5200, epoch: "e2" })), { ok: true });
    assert.equal(replica.epoch, "e2");
    assert.deepEqual(replica.applyUpdate({ ...update, prev_seq: 5200, seq: 5201 }), { ok: true });
  });

  test("a wrong checksum, a level beyond the depth and a bad level are faults", () => {
    const replica = new BookReplica("BTC-USD");
    assert.deepEqual(replica.applySnapshot(snapshot({ checksum: 1 })), { ok: false, fault: BookFault.CHECKSUM });
    replica.applySnapshot(snapshot({ depth: 2 }));
    const next = { type: "book_update", seq: 5121, prev_seq: 5120, asks: [["97003", "1"]] };
    const three = [...replica.book.asks, ["97003", "1"]];
    assert.deepEqual(replica.applyUpdate({ ...next, checksum: bookChecksum(replica.book.bids, three) }), { ok: false, fault: BookFault.DEPTH });
    replica.applySnapshot(snapshot());
    assert.deepEqual(replica.applyUpdate({ ...next, asks: [["97003", "-1"]], checksum: 0 }), { ok: false, fault: BookFault.BAD_FRAME });
    replica.applySnapshot(snapshot());
    // A deletion that takes the book to what the server says.
    const after = [["97002", "1"]];
    assert.deepEqual(
      replica.applyUpdate({ ...next, asks: [["97001.00", "0"]], checksum: bookChecksum(replica.book.bids, after) }),
      { ok: true },
    );
    assert.deepEqual(replica.book.asks, after);
  });

  test("a symbol without a book says so", () => {
    const replica = new BookReplica("ETH-USD");
    const result = replica.applySnapshot({ type: "book", symbol: "ETH-USD", seq: 0, bids: [], asks: [], available: false, reason: "replay has no order book" });
    assert.deepEqual(result, { ok: true });
    assert.equal(replica.available, false);
    assert.equal(replica.reason, "replay has no order book");
    replica.applySnapshot(snapshot());
    assert.equal(replica.available, true);
    assert.equal(replica.reason, null);
  });
});

describe("what the views read", () => {
  test("the ladder: best N per side, exact totals, shares, spread and mid", () => {
    const book = OrderBook.fromLevels({
      bids: [["100.5", "0.1"], ["100", "0.2"], ["99", "1"]],
      asks: [["101", "0.3"], ["102", "0.3"]],
    });
    const ladder = ladderOf(book, 2);
    assert.deepEqual(ladder.bids.map((r) => [r.price, r.size, r.total]), [["100.5", "0.1", "0.1"], ["100", "0.2", "0.3"]]);
    assert.deepEqual(ladder.asks.map((r) => [r.price, r.size, r.total]), [["101", "0.3", "0.3"], ["102", "0.3", "0.6"]]);
    assert.deepEqual(ladder.asks.map((r) => r.share), [0.5, 1]);
    assert.equal(ladder.bids[1].share, 0.5);
    assert.equal(ladder.spread, "0.5");
    assert.equal(ladder.mid, "100.75");
    const empty = ladderOf(new OrderBook(), 10);
    assert.deepEqual([empty.bids, empty.asks, empty.spread, empty.mid], [[], [], null, null]);
  });

  test("the depth chart: cumulative from the touch out, ascending prices", () => {
    const book = OrderBook.fromLevels({ bids: [["100", "1"], ["99", "2"]], asks: [["101", "0.5"], ["103", "1"]] });
    const series = depthSeriesOf(book);
    assert.deepEqual(series.bids, { x: [99, 100], y: [3, 1] });
    assert.deepEqual(series.asks, { x: [101, 103], y: [0.5, 1.5] });
    assert.equal(series.mid, 100.5);
  });
});
