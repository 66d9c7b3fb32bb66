// Per-symbol market state fed by the protocol client and read by the views.
// Pure: no DOM and no clock of its own (callers pass receive times), so it is
// unit-tested under node and every view reads the same numbers.

import { CandleSeries, INTERVALS } from "./candles.js";

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

  /** Forget every tick (on a protocol "reset", before a snapshot rebuilds it). */
  clear() {
    this.ticks = [];
    this.open = null; // first price seen: "change" is measured from it
    this.last = null;
    this.previousPrice = null;
    this.direction = 0; // +1 uptick, -1 downtick, 0 unchanged or none yet
    this.lastReceivedAt = null;
    this.count = 0;
    for (const series of Object.values(this.candles)) series.clear();
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

  get change() {
    return this.last === null || this.open === null ? null : this.last.price - this.open;
  }

  get changePct() {
    return this.change === null || !this.open ? null : (this.change / this.open) * 100;
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

  /** Replace a symbol's history with a server snapshot (ascending seq). */
  applySnapshot(symbol, ticks, receivedAt) {
    const series = this.series.get(symbol);
    if (!series) return null;
    series.clear();
    for (const tick of ticks) series.add(tick, receivedAt);
    // A snapshot is history, not a fresh move: do not flash the row for it.
    series.direction = 0;
    if (!ticks.length) series.lastReceivedAt = null;
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
