// The signed-in user's watchlist on the server: GET and PUT /api/me/watchlist
// (docs/api.md). The session cookie authenticates; a PUT carries the CSRF token
// the page was rendered with. No DOM: fetch is injectable so node's test runner
// can drive it, like the WebSocket of protocol-client.js.

import { MAX_WATCHLIST, isValidSymbol } from "./preferences.js";

export class WatchlistSyncError extends Error {
  constructor(message, { status = null } = {}) {
    super(message);
    this.name = "WatchlistSyncError";
    this.status = status; // HTTP status, or null when the request never got an answer
  }
}

/** Only well-formed, distinct tickers, at most MAX_WATCHLIST, whatever the server sent. */
export function cleanSymbols(value) {
  return Array.isArray(value) ? [...new Set(value.filter(isValidSymbol))].slice(0, MAX_WATCHLIST) : [];
}

export class ServerWatchlist {
  /**
   * @param {object} options
   * @param {string} options.url          the watchlist endpoint, e.g. /api/me/watchlist
   * @param {string} [options.csrfToken]  Django's CSRF token, sent as X-CSRFToken on PUT
   * @param {Function} [options.fetch]    fetch implementation (injected in tests)
   */
  constructor({ url, csrfToken = "", fetch: fetchImpl = globalThis.fetch?.bind(globalThis) }) {
    if (!url) throw new Error("ServerWatchlist needs a url");
    this.url = url;
    this._csrfToken = csrfToken;
    this._fetch = fetchImpl;
    this._inFlight = null; // the PUT under way
    this._queued = null; // symbols to PUT once it is done (only the newest list is kept)
    this._queuedWaiters = [];
  }

  /** {symbols, saved}: saved is false when the user never saved a watchlist. */
  async load() {
    const body = await this._request("GET");
    return { symbols: cleanSymbols(body?.symbols), saved: body?.updated !== null && body?.updated !== undefined };
  }

  /**
   * Save `symbols`. One PUT at a time: a save asked for while one is under way waits,
   * and only the newest of the lists asked for meanwhile is sent. Resolves with the
   * list the server kept; rejects with a WatchlistSyncError.
   */
  save(symbols) {
    const list = [...symbols];
    if (!this._inFlight) return this._start(list);
    this._queued = list;
    return new Promise((resolve, reject) => this._queuedWaiters.push({ resolve, reject }));
  }

  _start(list) {
    const run = this._request("PUT", { symbols: list }).then((body) => cleanSymbols(body?.symbols));
    this._inFlight = run;
    const next = () => {
      this._inFlight = null;
      if (this._queued === null) return;
      const queued = this._queued;
      const waiters = this._queuedWaiters;
      this._queued = null;
      this._queuedWaiters = [];
      this._start(queued).then(
        (kept) => waiters.forEach((w) => w.resolve(kept)),
        (err) => waiters.forEach((w) => w.reject(err)),
      );
    };
    run.then(next, next);
    return run;
  }

  async _request(method, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET" && this._csrfToken) headers["X-CSRFToken"] = this._csrfToken;
    let response;
    try {
      response = await this._fetch(this.url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "same-origin",
        cache: "no-store",
      });
    } catch (err) {
      throw new WatchlistSyncError(`the server could not be reached (${err?.message ?? err})`);
    }
    let parsed = null;
    try {
      parsed = await response.json();
    } catch {
      parsed = null;
    }
    if (!response.ok) {
      const why = parsed?.message ?? `HTTP ${response.status}`;
      throw new WatchlistSyncError(why, { status: response.status });
    }
    return parsed;
  }
}
