// Each symbol's feed source and its state, polled from GET /api/symbols/ (docs/api.md:
// `source`, `source_state`, `source_error`), and the words the watchlist shows for a
// source that is not up. No DOM; `fetch` and the timers are injectable (tests/js).

// The server writes each source's status every second and trusts a report for 5 s;
// polling every 5 s marks a failed source within about 10 s of its failure.
export const SOURCE_POLL_MS = 5000;

// The states the API reports (markets.selectors.SOURCE_STATES); anything else is unknown.
export const SOURCE_STATES = Object.freeze(["up", "starting", "down", "ended", "unknown"]);

/** `body` (the /api/symbols/ list) as a Map of ticker -> {source, state, error}. */
export function parseSources(body) {
  const out = new Map();
  if (!Array.isArray(body)) return out;
  for (const s of body) {
    if (typeof s?.ticker !== "string" || typeof s.source !== "string") continue;
    const state = SOURCE_STATES.includes(s.source_state) ? s.source_state : "unknown";
    const error = typeof s.source_error === "string" && s.source_error ? s.source_error : null;
    out.set(s.ticker, { source: s.source, state, error });
  }
  return out;
}

/**
 * The mark of a symbol whose source is not up: `label` (one word, shown) and
 * `description` (the title and the screen reader's text). Null when the source is up,
 * or its state is not known yet.
 */
export function sourceMark(info) {
  if (!info || !info.state || info.state === "up") return null;
  const { source, state, error } = info;
  const why = error ? ` (${error})` : "";
  const description = {
    starting: `Feed source ${source} is starting: no live price from it yet${why}.`,
    down: `Feed source ${source} is down${why}. The price shown is not live.`,
    ended: `Feed source ${source} has ended: the replay played its whole file${why}. The price shown is not live.`,
    unknown: `No recent report from feed source ${source}: no worker may be running it. The price shown may not be live.`,
  }[state];
  return { label: state, description };
}

export class SourceStatusPoller {
  /**
   * @param {object} options
   * @param {string} [options.url]  the symbols endpoint
   * @param {(sources: Map<string, {source: string, state: string, error: string|null}>) => void} options.onUpdate
   * @param {(error: Error) => void} [options.onError]
   * @param {typeof fetch} [options.fetch]
   * @param {{setTimeout: Function, clearTimeout: Function}} [options.timers]
   */
  constructor({
    url = "/api/symbols/",
    onUpdate,
    onError = (err) => console.warn("dashboard: source status", err),
    fetch = (...args) => globalThis.fetch(...args),
    timers = globalThis,
    intervalMs = SOURCE_POLL_MS,
  }) {
    this.url = url;
    this.onUpdate = onUpdate;
    this.onError = onError;
    this.fetch = fetch;
    this.timers = timers;
    this.intervalMs = intervalMs;
    this.active = false;
    this.refused = false; // a 401/403: not again until the stream connects anew
    this.timer = null;
    this.inFlight = false;
    this.requests = 0;
  }

  /**
   * Poll while `active` (the price stream is live and the page is shown). Becoming active
   * polls at once; a refused poll (401/403) waits for the next time it becomes active.
   */
  setActive(active) {
    if (active === this.active) return;
    this.active = active;
    this._clear();
    if (active) {
      this.refused = false;
      this._poll();
    }
  }

  _clear() {
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = null;
  }

  _schedule() {
    this._clear();
    if (this.active && !this.refused) {
      this.timer = this.timers.setTimeout(() => {
        this.timer = null;
        this._poll();
      }, this.intervalMs);
    }
  }

  async _poll() {
    if (!this.active || this.refused || this.inFlight) return;
    this.inFlight = true;
    this.requests += 1;
    try {
      const response = await this.fetch(this.url, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      if (response.status === 401 || response.status === 403) {
        this.refused = true;
        return;
      }
      if (!response.ok) throw new Error(`${this.url}: HTTP ${response.status}`);
      this.onUpdate(parseSources(await response.json()));
    } catch (err) {
      this.onError(err);
    } finally {
      this.inFlight = false;
      this._schedule();
    }
  }
}
