// Per-symbol market state fed by the protocol client and read by the views.
// Pure: no DOM and no clock of its own (callers pass receive times), so it is
// unit-tested under node and every view reads the same numbers.

import { CandleSeries, DAY_MS, INTERVALS, bucketStart } from "./candles.js";

export const DEFAULT_MAX_TICKS = 1500;
export const DEFAULT_MAX_CANDLES = 300;

export class SymbolSeries {
  constructor(symbol, { maxTicks = DEFAULT_MAX_TICKS, maxCandles = DEFAULT_MAX_CANDLES } = {}) {
    this.symbol = symbol;
    this.maxTicks = maxTicks;
    this.maxCandles = maxCandles;
    this.candles = {};
    for (const [name, ms] of Object.entries(INTERVALS)) {
      this.candles[name] = new CandleSeries(ms, { maxCandles });
    }
    this.clear();
  }

  /** Forget every tick and candle (on a protocol "reset": the numbering restarted). */
  clear() {
    this.clearTicks();
    for (const series of Object.values(this.candles)) series.clear();
    // Timeframes whose full history came from the server (CandleHistory).
    this.history = new Set();
  }

  /** Forget the ticks (a snapshot replaces them); candles seeded from history stay. */
  clearTicks() {
    this.ticks = [];
    this.open = null; // first price seen: "change" is measured from it
    this.last = null;
    this.previousPrice = null;
    this.direction = 0; // +1 uptick, -1 downtick, 0 unchanged or none yet
    this.lastReceivedAt = null;
    this.count = 0;
    for (const series of Object.values(this.candles)) if (!series.seeded) series.clear();
  }

  /**
   * History from the server for timeframe `name` (ascending candles), continued with
   * the ticks held here that came after it. `partial`: only the newest candles (the
   * session's day), which full history replaces but never the other way round.
   */
  seedCandles(name, candles, { partial = false } = {}) {
    const series = this.candles[name];
    if (!series || (partial && this.history.has(name))) return false;
    series.seed(candles, this.ticks);
    if (!partial) this.history.add(name);
    return true;
  }

  /**
   * The session: the UTC day of the newest tick, as its 1D candle (open, high, low,
   * close, volume), or null. `known` says whether its open came from the server
   * (the day's first tick) rather than from the first tick this page saw.
   */
  get session() {
    const day = this.candles["1D"];
    const candle = day.latest;
    if (!candle || !this.last || candle.t !== bucketStart(this.last.ts, DAY_MS)) return null;
    return { ...candle, known: day.seeded };
  }

  add(tick, receivedAt) {
    if (this.open === null) this.open = tick.price;
    if (this.last !== null) {
      this.previousPrice = this.last.price;
      if (tick.price > this.last.price) this.direction = 1;
      else if (tick.price < this.last.price) this.direction = -1;
      else this.direction = 0;
    }
    this.last = tick;
    this.lastReceivedAt = receivedAt;
    this.count += 1;
    this.ticks.push(tick);
    // Trim in chunks, not on every push: Array.prototype.splice on the front is O(n).
    if (this.ticks.length > this.maxTicks * 1.25) {
      this.ticks.splice(0, this.ticks.length - this.maxTicks);
    }
    for (const series of Object.values(this.candles)) series.add(tick);
  }

  /** The price change is measured from: the session open when known, else the first tick seen. */
  get reference() {
    const session = this.session;
    return session?.known ? session.open : this.open;
  }

  get change() {
    const reference = this.reference;
    return this.last === null || reference === null ? null : this.last.price - reference;
  }

  get changePct() {
    const change = this.change;
    return change === null || !this.reference ? null : (change / this.reference) * 100;
  }

  /** The last `n` ticks. */
  recent(n) {
    return n >= this.ticks.length ? this.ticks : this.ticks.slice(-n);
  }

  /** Closing prices of the last `n` 1-second candles: a sparkline over about n seconds. */
  sparkline(n = 60) {
    return this.candles["1s"].tail(n).map((c) => c.close);
  }
}

export class MarketStore {
  constructor(options = {}) {
    this.options = options;
    this.series = new Map();
    // Symbols changed since the views last drew; views drain it once per frame.
    this.dirty = new Set();
  }

  ensure(symbol) {
    let series = this.series.get(symbol);
    if (!series) {
      series = new SymbolSeries(symbol, this.options);
      this.series.set(symbol, series);
    }
    return series;
  }

  get(symbol) {
    return this.series.get(symbol);
  }

  remove(symbol) {
    this.series.delete(symbol);
    this.dirty.delete(symbol);
  }

  applyTick(tick, receivedAt) {
    const series = this.series.get(tick.symbol);
    if (!series) return null; // not (or no longer) on the watchlist
    series.add(tick, receivedAt);
    this.dirty.add(tick.symbol);
    return series;
  }

  /**
   * Replace a symbol's ticks with a server snapshot (ascending seq). Candles seeded from
   * the server's history stay, and take only the snapshot's ticks they have not counted.
   */
  applySnapshot(symbol, ticks, receivedAt) {
    const series = this.series.get(symbol);
    if (!series) return null;
    series.clearTicks();
    for (const tick of ticks) series.add(tick, receivedAt);
    // A snapshot is history, not a fresh move: do not flash the row for it.
    series.direction = 0;
    if (!ticks.length) series.lastReceivedAt = null;
    this.dirty.add(symbol);
    return series;
  }

  /** Seed a timeframe's candles from server history (SymbolSeries.seedCandles). */
  seedCandles(symbol, name, candles, options) {
    const series = this.series.get(symbol);
    if (!series || !series.seedCandles(name, candles, options)) return null;
    this.dirty.add(symbol);
    return series;
  }

  reset(symbol) {
    const series = this.series.get(symbol);
    if (!series) return null;
    series.clear();
    this.dirty.add(symbol);
    return series;
  }

  /** The dirty set, emptied: the symbols to redraw this frame. */
  takeDirty() {
    const dirty = this.dirty;
    this.dirty = new Set();
    return dirty;
  }

  /**
   * Symbols that had no tick for `staleMs`. A symbol that never ticked counts
   * from `since[symbol]` (when it was subscribed), so a silent new symbol warns too.
   */
  staleSymbols(symbols, now, staleMs, since = {}) {
    const stale = [];
    for (const symbol of symbols) {
      const series = this.series.get(symbol);
      const from = series?.lastReceivedAt ?? since[symbol];
      if (from !== undefined && from !== null && now - from > staleMs) stale.push(symbol);
    }
    return stale;
  }
}
