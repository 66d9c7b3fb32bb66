// OHLCV candles built in the browser from live ticks. Pure: no DOM, no clock.

export const INTERVALS = Object.freeze({ "1s": 1000, "5s": 5000, "1m": 60000 });

/** Start (epoch ms) of the interval bucket that contains `ts`. */
export function bucketStart(ts, intervalMs) {
  return Math.floor(ts / intervalMs) * intervalMs;
}

/**
 * A rolling series of candles for one symbol and one interval. Ticks are fed in
 * seq order; a candle's open is its first tick, its close its latest, and its
 * volume the sum of trade sizes. Empty intervals get no candle (the chart's time
 * axis shows the gap). At most `maxCandles` are kept, oldest dropped first.
 */
export class CandleSeries {
  constructor(intervalMs, { maxCandles = 300 } = {}) {
    if (!(intervalMs > 0)) throw new RangeError("intervalMs must be positive");
    this.intervalMs = intervalMs;
    this.maxCandles = maxCandles;
    this.candles = [];
    // Bumped on every change so a renderer can tell whether to redraw.
    this.revision = 0;
  }

  /** Fold one tick in; returns "new", "update" or "ignored". */
  add({ ts, price, size = 0 }) {
    if (!Number.isFinite(ts) || !Number.isFinite(price)) return "ignored";
    const volume = Number.isFinite(size) ? size : 0;
    const start = bucketStart(ts, this.intervalMs);
    const last = this.candles[this.candles.length - 1];
    if (!last || start > last.t) {
      this.candles.push({ t: start, open: price, high: price, low: price, close: price, volume, count: 1 });
      if (this.candles.length > this.maxCandles) {
        this.candles.splice(0, this.candles.length - this.maxCandles);
      }
      this.revision += 1;
      return "new";
    }
    let candle = last;
    if (start < last.t) {
      // A tick stamped earlier than the newest candle (clock skew between two
      // producers): fold it into its own candle if that is still kept, but it
      // cannot be that candle's close, which belongs to the later tick.
      candle = this._find(start);
      if (!candle) return "ignored";
    } else {
      candle.close = price;
    }
    if (price > candle.high) candle.high = price;
    if (price < candle.low) candle.low = price;
    candle.volume += volume;
    candle.count += 1;
    this.revision += 1;
    return "update";
  }

  /** The last `n` candles (all of them without `n`). */
  tail(n) {
    return n === undefined || n >= this.candles.length ? this.candles : this.candles.slice(-n);
  }

  clear() {
    this.candles = [];
    this.revision += 1;
  }

  _find(start) {
    let lo = 0;
    let hi = this.candles.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const t = this.candles[mid].t;
      if (t === start) return this.candles[mid];
      if (t < start) lo = mid + 1;
      else hi = mid - 1;
    }
    return null;
  }
}

/** Candles of `intervalMs` from a list of ticks in seq order. */
export function buildCandles(ticks, intervalMs, options) {
  const series = new CandleSeries(intervalMs, options);
  for (const tick of ticks) series.add(tick);
  return series.candles;
}
