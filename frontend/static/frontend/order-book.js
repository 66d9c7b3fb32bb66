// The dashboard's copy of an order book (docs/protocol.md, "book" and "book_update").
//
// Pure: no DOM, no socket, no clock. The protocol client feeds a BookReplica the frames
// and acts on what it answers (a fault means: resubscribe the book stream); the views
// read its levels. A level is [price, size], both the frame's decimal strings, kept
// verbatim: the checksum is computed from exactly those strings, and so is what the
// ladder shows. Ordering and "is this size zero" compare the digits exactly (decimal.js).

import { crc32 } from "./crc32.js";
import { compareDecimal, cumulativeDecimals, isDecimal, isZeroDecimal, midDecimal, subtractDecimal } from "./decimal.js";

export const CHECKSUM_LEVELS = 10; // levels per side the checksum covers (issue 21, OKX's books)

/** Why a frame could not be applied; each one makes the client resubscribe the book. */
export const BookFault = Object.freeze({
  PREV_SEQ: "prev_seq", // an update that does not continue from the seq held: one was missed
  CHECKSUM: "checksum", // the book after applying does not have the server's checksum
  DEPTH: "depth", // more levels on a side than the subscribed depth: the server's window and ours differ
  BAD_FRAME: "bad_frame", // a level that is not [decimal price above 0, decimal size]
});

export class BookError extends Error {}

/** OKX `books` checksum: unsigned CRC32 of "b1p:b1s:a1p:a1s:b2p:..." over the first 10 levels. */
export function bookChecksum(bids, asks) {
  const parts = [];
  for (let i = 0; i < CHECKSUM_LEVELS; i += 1) {
    // Where one side is shorter, only the other side's pair is written for that level.
    if (i < bids.length) parts.push(bids[i][0], bids[i][1]);
    if (i < asks.length) parts.push(asks[i][0], asks[i][1]);
  }
  return crc32(parts.join(":"));
}

function checkLevels(levels) {
  if (levels === undefined) return [];
  if (!Array.isArray(levels)) throw new BookError("a side is a list of levels");
  for (const level of levels) {
    if (!Array.isArray(level) || level.length !== 2 || !isDecimal(level[0]) || !isDecimal(level[1])) {
      throw new BookError(`a level is [decimal price, decimal size], got ${JSON.stringify(level)}`);
    }
    if (isZeroDecimal(level[0])) throw new BookError(`a price is above 0, got ${level[0]}`);
  }
  return levels;
}

// Index of `price` in `side` (found) or where it belongs (not found); `sign` is -1 for
// bids (highest first) and 1 for asks (lowest first). Binary search: a side holds at
// most the subscribed depth (50), but updates arrive at the book's rate.
function locate(side, price, sign) {
  let lo = 0;
  let hi = side.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const order = sign * compareDecimal(side[mid][0], price);
    if (order === 0) return { index: mid, found: true };
    if (order < 0) lo = mid + 1;
    else hi = mid;
  }
  return { index: lo, found: false };
}

function applySide(side, levels, sign) {
  for (const [price, size] of levels) {
    const { index, found } = locate(side, price, sign);
    if (isZeroDecimal(size)) {
      if (found) side.splice(index, 1);
    } else if (found) {
      side[index] = [price, size]; // a re-sent level replaces the old strings too
    } else {
      side.splice(index, 0, [price, size]);
    }
  }
}

export class OrderBook {
  constructor() {
    this.bids = []; // [price, size], highest price first
    this.asks = []; // [price, size], lowest price first
  }

  static fromLevels({ bids = [], asks = [] } = {}) {
    const book = new OrderBook();
    book.apply({ bids, asks });
    return book;
  }

  /** Apply absolute levels ("0" deletes). Every level is checked first: a bad one
   *  throws BookError and changes nothing. */
  apply({ bids, asks } = {}) {
    const b = checkLevels(bids);
    const a = checkLevels(asks);
    applySide(this.bids, b, -1);
    applySide(this.asks, a, 1);
  }

  clear() {
    this.bids = [];
    this.asks = [];
  }

  get bestBid() {
    return this.bids[0] ?? null;
  }

  get bestAsk() {
    return this.asks[0] ?? null;
  }

  crossed() {
    return this.bids.length > 0 && this.asks.length > 0 && compareDecimal(this.bids[0][0], this.asks[0][0]) >= 0;
  }

  checksum() {
    return bookChecksum(this.bids, this.asks);
  }
}

/**
 * One symbol's book as this client holds it: the levels, the seq of the last book frame
 * applied, the epoch of the snapshot it came from. Frames go in through applySnapshot and
 * applyUpdate, which answer {ok: true}, {ok: false, fault} (the caller resubscribes), or
 * {ok: false, ignored: true} (an update while no snapshot is held, e.g. one in flight
 * when a resync was asked for: the coming snapshot replaces it anyway).
 */
export class BookReplica {
  constructor(symbol) {
    this.symbol = symbol;
    this.book = new OrderBook();
    this.synced = false;
    this.seq = null;
    this.epoch = null;
    this.ts = null;
    this.depth = null;
    this.available = true;
    this.reason = null;
    this.checksum = null;
    this.version = 0; // +1 per applied frame: a view redraws only when it moved
  }

  /** Forget the book until the next snapshot (a resync was asked for). */
  unsync() {
    this.synced = false;
  }

  applySnapshot(msg) {
    const book = new OrderBook();
    try {
      book.apply({ bids: msg.bids ?? [], asks: msg.asks ?? [] });
    } catch (err) {
      if (err instanceof BookError) return this._fault(BookFault.BAD_FRAME);
      throw err;
    }
    this.book = book;
    this.seq = Number.isInteger(msg.seq) ? msg.seq : null;
    this.epoch = typeof msg.epoch === "string" ? msg.epoch : null;
    this.depth = Number.isInteger(msg.depth) ? msg.depth : null;
    this.available = msg.available !== false;
    this.reason = this.available ? null : (typeof msg.reason === "string" ? msg.reason : "no order book");
    return this._verified(msg);
  }

  applyUpdate(msg) {
    if (!this.synced) return { ok: false, ignored: true };
    if (msg.prev_seq !== this.seq) return this._fault(BookFault.PREV_SEQ);
    try {
      this.book.apply({ bids: msg.bids ?? [], asks: msg.asks ?? [] });
    } catch (err) {
      if (err instanceof BookError) return this._fault(BookFault.BAD_FRAME);
      throw err;
    }
    this.seq = Number.isInteger(msg.seq) ? msg.seq : this.seq;
    return this._verified(msg);
  }

  _verified(msg) {
    this.ts = Number.isFinite(msg.ts) ? msg.ts : this.ts;
    const { bids, asks } = this.book;
    if (this.depth !== null && (bids.length > this.depth || asks.length > this.depth)) {
      return this._fault(BookFault.DEPTH);
    }
    // A frame without a checksum (the no-book snapshot may have none) is not checked.
    if (Number.isInteger(msg.checksum)) {
      const mine = this.book.checksum();
      if (mine !== msg.checksum) return this._fault(BookFault.CHECKSUM);
      this.checksum = mine;
    }
    this.synced = true;
    this.version += 1;
    return { ok: true };
  }

  _fault(fault) {
    this.synced = false;
    return { ok: false, fault };
  }
}

/**
 * What the ladder shows: the best `levels` per side with their running totals (exact),
 * each level's share of the larger of the two sides' totals (for the bar), the spread
 * and the mid. Prices and sizes stay the frame's strings.
 */
export function ladderOf(book, levels) {
  const side = (rows) => {
    const top = rows.slice(0, levels);
    const totals = cumulativeDecimals(top.map(([, size]) => size));
    return top.map(([price, size], i) => ({ price, size, total: totals[i] }));
  };
  const bids = side(book.bids);
  const asks = side(book.asks);
  const deepest = Math.max(Number(bids.at(-1)?.total ?? 0), Number(asks.at(-1)?.total ?? 0));
  for (const row of [...bids, ...asks]) row.share = deepest > 0 ? Number(row.total) / deepest : 0;
  const bid = book.bestBid?.[0];
  const ask = book.bestAsk?.[0];
  const both = bid !== undefined && ask !== undefined;
  return {
    bids,
    asks,
    spread: both ? subtractDecimal(ask, bid) : null,
    mid: both ? midDecimal(bid, ask) : null,
  };
}

/**
 * The depth chart's two step areas: x the price, y the cumulative size from the touch
 * outwards, both ascending in x (Plotly draws left to right). Numbers: this is a
 * picture, the exact strings are in the ladder.
 */
export function depthSeriesOf(book) {
  const cumulative = (rows) => {
    let total = 0;
    return rows.map(([price, size]) => {
      total += Number(size);
      return [Number(price), total];
    });
  };
  const bids = cumulative(book.bids).reverse();
  const asks = cumulative(book.asks);
  const bid = book.bestBid?.[0];
  const ask = book.bestAsk?.[0];
  return {
    bids: { x: bids.map((p) => p[0]), y: bids.map((p) => p[1]) },
    asks: { x: asks.map((p) => p[0]), y: asks.map((p) => p[1]) },
    mid: bid !== undefined && ask !== undefined ? Number(midDecimal(bid, ask)) : null,
  };
}
