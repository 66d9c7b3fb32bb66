// The signed-in user's price alerts on the REST API (/api/alerts/, docs/api.md): list,
// create, edit, delete and the history of fired ones. No DOM: fetch is injectable.

export class AlertsError extends Error {
  constructor(message, { status = null } = {}) {
    super(message);
    this.name = "AlertsError";
    this.status = status;
  }
}

export class AlertsClient {
  /**
   * @param {object} options
   * @param {string} options.url          the alerts endpoint, e.g. "/api/alerts/"
   * @param {string} [options.csrfToken]  sent as X-CSRFToken on unsafe methods
   * @param {Function} [options.fetch]
   */
  constructor({ url, csrfToken = "", fetch: fetchImpl = (...args) => globalThis.fetch(...args) }) {
    this.url = url.endsWith("/") ? url : `${url}/`;
    this.csrfToken = csrfToken;
    this._fetch = fetchImpl;
  }

  list() {
    return this._request("GET", "");
  }

  /** @param {{symbol: string, direction: "above"|"below", price: number, repeat?: boolean, note?: string}} alert */
  create(alert) {
    return this._request("POST", "", alert);
  }

  update(id, changes) {
    return this._request("PATCH", String(id), changes);
  }

  remove(id) {
    return this._request("DELETE", String(id));
  }

  history({ limit = 20 } = {}) {
    return this._request("GET", `history?limit=${limit}`);
  }

  async _request(method, path, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET" && this.csrfToken) headers["X-CSRFToken"] = this.csrfToken;
    let response;
    try {
      response = await this._fetch(this.url + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "same-origin",
      });
    } catch (err) {
      throw new AlertsError(`network error: ${err?.message ?? err}`);
    }
    if (response.status === 204) return null;
    let parsed = null;
    try {
      parsed = await response.json();
    } catch {
      parsed = null;
    }
    if (!response.ok) throw new AlertsError(parsed?.message ?? `HTTP ${response.status}`, { status: response.status });
    return parsed;
  }
}

/** How an alert reads: "BTC-USD crosses above 100,000.00". */
export function describeAlert({ symbol, direction, price, threshold }, formatPrice = String) {
  return `${symbol} crosses ${direction === "below" ? "below" : "above"} ${formatPrice(threshold ?? price)}`;
}

/**
 * Why the server switched an alert off, as the panel says it; null when it did not.
 * "forbidden": its owner may no longer see the symbol (a right taken away); the alert
 * never fires and cannot be edited until the right is back, only deleted.
 */
export function offReasonText({ symbol, off_reason: reason }) {
  if (reason === "forbidden") return `Switched off: you no longer have access to ${symbol}. Delete it, or switch it on once access is back.`;
  return null;
}
