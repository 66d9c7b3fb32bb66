// Candle history from the REST API (GET /api/symbols/{s}/candles, docs/api.md) for the
// timeframes the server keeps: 1m, 5m and 1h as served, 1D rolled up from 1h here.
// No DOM; `fetch` is injectable (a fake in tests/js).

import { DAY_MS, bucketStart, fromApiCandle, rollUp } from "./candles.js";

// Timeframe -> the API interval it is read from.
export const HISTORY_SOURCES = Object.freeze({ "1m": "1m", "5m": "5m", "1h": "1h", "1D": "1h" });
export const HISTORY_CANDLES = 300;
// The API's largest limit (API_CANDLES_MAX_LIMIT) and how many pages 1D may read:
// 300 days are 7,200 hours, so 8 pages of 1,000.
const PAGE = 1000;
const MAX_DAY_PAGES = 8;

export class CandleHistory {
  /**
   * @param {object} [options]
   * @param {typeof fetch} [options.fetch]
   * @param {string} [options.base]  the symbols endpoint
   */
  constructor({ fetch = (...args) => globalThis.fetch(...args), base = "/api/symbols/", candles = HISTORY_CANDLES } = {}) {
    this.fetch = fetch;
    this.base = base;
    this.candles = candles;
    this.requests = 0;
  }

  /** Whether timeframe `name` has server history. */
  static has(name) {
    return Object.hasOwn(HISTORY_SOURCES, name);
  }

  /** The last `candles` candles of timeframe `name` (ascending), or null without history. */
  async load(symbol, name) {
    const source = HISTORY_SOURCES[name];
    if (!source) return null;
    if (name !== "1D") return (await this._page(symbol, source, { limit: this.candles })).map(fromApiCandle);
    // Days from hours, paging back until enough days or no more hours.
    let hours = [];
    let end = null;
    for (let page = 0; page < MAX_DAY_PAGES; page += 1) {
      const got = await this._page(symbol, "1h", { limit: PAGE, end });
      hours = got.map(fromApiCandle).concat(hours);
      if (got.length < PAGE) break;
      end = got[0].start;
      if (new Set(hours.map((c) => bucketStart(c.t, DAY_MS))).size > this.candles) break;
    }
    return rollUp(hours, DAY_MS).slice(-this.candles);
  }

  /** The session (the UTC day holding `now`) as one candle rolled up from its hours, or null. */
  async session(symbol, now) {
    const day = bucketStart(now, DAY_MS);
    const hours = (await this._page(symbol, "1h", { limit: 24, start: day })).map(fromApiCandle);
    return hours.length ? rollUp(hours, DAY_MS)[0] : null;
  }

  async _page(symbol, interval, { limit, start = null, end = null }) {
    const query = new URLSearchParams({ interval, limit: String(limit) });
    if (start !== null) query.set("start", String(start));
    if (end !== null) query.set("end", String(end));
    this.requests += 1;
    const response = await this.fetch(`${this.base}${encodeURIComponent(symbol)}/candles?${query}`, {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    });
    if (!response.ok) throw new Error(`candles for ${symbol}: HTTP ${response.status}`);
    const body = await response.json();
    return Array.isArray(body?.candles) ? body.candles : [];
  }
}
