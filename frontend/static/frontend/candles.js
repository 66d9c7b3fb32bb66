// OHLCV candles built in the browser from live ticks, with the server's bucket rule
// (markets/candles.py), so a candle the page built equals the one the REST API
// serves. Pure: no DOM, no clock.

const DAY_MS = 86_400_000;

// Every timeframe the chart offers, shortest first. "1D" is the UTC day: the same
// day as the session (the session open, high and low) and as the API's change %.
export const INTERVALS = Object.freeze({
  "1s": 1000,
  "5s": 5000,
  "1m": 60_000,
  "5m": 300_000,
  "1h": 3_600_000,
  "1D": DAY_MS,
});
export { DAY_MS };

/** Start (epoch ms) of the interval bucket that contains `ts` (UTC-aligned). */
export function bucketStart(ts, intervalMs) {
  return ts - (((ts % intervalMs) + intervalMs) % intervalMs);
}

/**
 * A rolling series of candles for one symbol and one interval. Ticks are fed in seq
 * order. The bucket rule is the server's: a tick belongs to the bucket holding its
 * `ts`, except that it never goes into a bucket older than the newest one (a clock
 * stepping back joins the newest), so a candle with a newer one is final. A candle's
 * open is its first tick, its close its latest, its volume the sum of trade sizes;
 * `firstSeq`/`lastSeq` are the seqs of its first and last tick. A tick whose seq is
 * not above the newest one folded in (a duplicate, or one that history already
 * counted) is ignored. Empty intervals get no candle. At most `maxCandles` are kept.
 */
export class CandleSeries {
  constructor(intervalMs, { maxCandles = 300 } = {}) {
    if (!(intervalMs > 0)) throw new RangeError("intervalMs must be positive");
    this.intervalMs = intervalMs;
    this.maxCandles = maxCandles;
    this.clear();
  }

  clear() {
    this.candles = [];
    this.lastSeq = 0;
    // Whether the candles came from the server's history (seed) rather than only ticks.
    this.seeded = false;
    // Bumped on every change so a renderer can tell whether to redraw.
    this.revision = (this.revision ?? 0) + 1;
  }

  /** Fold one tick in; returns "new", "update" or "ignored". */
  add({ ts, price, size = 0, seq }) {
    if (!Number.isFinite(ts) || !Number.isFinite(price)) return "ignored";
    const hasSeq = Number.isFinite(seq);
    if (hasSeq && seq <= this.lastSeq) return "ignored";
    if (hasSeq) this.lastSeq = seq;
    const volume = Number.isFinite(size) ? size : 0;
    const last = this.candles[this.candles.length - 1];
    const start = bucketStart(ts, this.intervalMs);
    if (!last || start > last.t) {
      this.candles.push({
        t: start, open: price, high: price, low: price, close: price, volume, count: 1,
        firstSeq: hasSeq ? seq : null, lastSeq: hasSeq ? seq : null,
      });
      if (this.candles.length > this.maxCandles) {
        this.candles.splice(0, this.candles.length - this.maxCandles);
      }
    } else {
      // The newest bucket, also for a tick stamped before it (the candle clock).
      last.close = price;
      if (price > last.high) last.high = price;
      if (price < last.low) last.low = price;
      last.volume += volume;
      last.count += 1;
      if (hasSeq) last.lastSeq = seq;
    }
    this.revision += 1;
    return last && start <= last.t ? "update" : "new";
  }

  /**
   * Replace the candles with history (ascending, e.g. from the REST API) and fold in
   * `ticks` (ascending seq) that came after it: those with a seq above the newest
   * candle's lastSeq. Live ticks then continue the last candle.
   */
  seed(candles, ticks = []) {
    this.candles = candles.slice(-this.maxCandles).map((c) => ({ ...c }));
    const newest = this.candles[this.candles.length - 1];
    this.lastSeq = newest?.lastSeq ?? 0;
    this.seeded = true;
    this.revision += 1;
    for (const tick of ticks) this.add(tick);
  }

  /** The last `n` candles (all of them without `n`). */
  tail(n) {
    return n === undefined || n >= this.candles.length ? this.candles : this.candles.slice(-n);
  }

  /** The newest candle, or null. */
  get latest() {
    return this.candles[this.candles.length - 1] ?? null;
  }
}

/** Candles of `intervalMs` from a list of ticks in seq order. */
export function buildCandles(ticks, intervalMs, options) {
  const series = new CandleSeries(intervalMs, options);
  for (const tick of ticks) series.add(tick);
  return series.candles;
}

/**
 * Roll candles (ascending) up into longer ones of `intervalMs` (e.g. 1h into UTC days):
 * open of the first, close of the last, extremes, summed volume and counts.
 */
export function rollUp(candles, intervalMs) {
  const out = [];
  for (const c of candles) {
    const t = bucketStart(c.t, intervalMs);
    const last = out[out.length - 1];
    if (!last || t > last.t) {
      out.push({ ...c, t });
    } else {
      last.high = Math.max(last.high, c.high);
      last.low = Math.min(last.low, c.low);
      last.close = c.close;
      last.volume += c.volume;
      last.count += c.count;
      last.lastSeq = c.lastSeq;
    }
  }
  return out;
}

/** A candle of the REST API (GET /api/symbols/{s}/candles) in this module's shape. */
export function fromApiCandle(c) {
  return {
    t: c.start, open: c.open, high: c.high, low: c.low, close: c.close,
    volume: c.volume, count: c.ticks, firstSeq: c.first_seq, lastSeq: c.last_seq,
  };
}
