// The signed-in user's watchlist on the server (server-watchlist.js) and how the
// dashboard merges it with this browser's copy (preferences.js).
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { DEFAULT_WATCHLIST, MAX_WATCHLIST, withServerWatchlist } from "../../frontend/static/frontend/preferences.js";
import { ServerWatchlist, WatchlistSyncError } from "../../frontend/static/frontend/server-watchlist.js";

const URL = "/api/me/watchlist";

/** A fetch that records requests and answers from a queue the test controls. */
function fakeFetch() {
  const requests = [];
  const fetch = (url, init) =>
    new Promise((resolve, reject) => {
      requests.push({ url, init, body: init.body === undefined ? undefined : JSON.parse(init.body), resolve, reject });
    });
  const answer = (index, status, body) =>
    requests[index].resolve({ ok: status >= 200 && status < 300, status, json: async () => body });
  return { fetch, requests, answer };
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

describe("ServerWatchlist", () => {
  test("load reads the saved list, and says when none was ever saved", async () => {
    const f = fakeFetch();
    const server = new ServerWatchlist({ url: URL, csrfToken: "t0k", fetch: f.fetch });
    const first = server.load();
    f.answer(0, 200, { symbols: ["AAPL", "BTC-USD"], updated: 1764072000000 });
    assert.deepEqual(await first, { symbols: ["AAPL", "BTC-USD"], saved: true });
    assert.equal(f.requests[0].init.method, "GET");
    assert.equal(f.requests[0].init.credentials, "same-origin");
    assert.equal(f.requests[0].init.headers["X-CSRFToken"], undefined);

    const second = server.load();
    f.answer(1, 200, { symbols: [], updated: null });
    assert.deepEqual(await second, { symbols: [], saved: false });
  });

  test("hostile server data is cleaned", async () => {
    const f = fakeFetch();
    const server = new ServerWatchlist({ url: URL, fetch: f.fetch });
    const loading = server.load();
    const many = Array.from({ length: 80 }, (_, i) => `S${i}`);
    f.answer(0, 200, { symbols: ["AAPL", "<img>", 7, "AAPL", ...many], updated: 1 });
    const { symbols } = await loading;
    assert.equal(symbols[0], "AAPL");
    assert.equal(symbols.length, MAX_WATCHLIST);
    assert.ok(!symbols.includes("<img>"));
  });

  test("save PUTs JSON with the CSRF token and returns what the server kept", async () => {
    const f = fakeFetch();
    const server = new ServerWatchlist({ url: URL, csrfToken: "t0k", fetch: f.fetch });
    const saving = server.save(["NVDA", "AAPL"]);
    const [request] = f.requests;
    assert.equal(request.url, URL);
    assert.equal(request.init.method, "PUT");
    assert.equal(request.init.headers["X-CSRFToken"], "t0k");
    assert.equal(request.init.headers["Content-Type"], "application/json");
    assert.deepEqual(request.body, { symbols: ["NVDA", "AAPL"] });
    f.answer(0, 200, { symbols: ["NVDA", "AAPL"], updated: 2 });
    assert.deepEqual(await saving, ["NVDA", "AAPL"]);
  });

  test("one PUT at a time; of the saves asked for meanwhile only the newest is sent", async () => {
    const f = fakeFetch();
    const server = new ServerWatchlist({ url: URL, fetch: f.fetch });
    const first = server.save(["A"]);
    const second = server.save(["A", "B"]);
    const third = server.save(["A", "B", "C"]);
    assert.equal(f.requests.length, 1);
    f.answer(0, 200, { symbols: ["A"], updated: 1 });
    assert.deepEqual(await first, ["A"]);
    await settle();
    assert.equal(f.requests.length, 2);
    assert.deepEqual(f.requests[1].body, { symbols: ["A", "B", "C"] });
    f.answer(1, 200, { symbols: ["A", "B", "C"], updated: 2 });
    assert.deepEqual(await second, ["A", "B", "C"]);
    assert.deepEqual(await third, ["A", "B", "C"]);
  });

  test("a failed PUT does not block the next one", async () => {
    const f = fakeFetch();
    const server = new ServerWatchlist({ url: URL, fetch: f.fetch });
    const first = server.save(["A"]);
    const second = server.save(["B"]);
    f.answer(0, 500, null);
    await assert.rejects(first, (err) => err instanceof WatchlistSyncError && err.status === 500);
    await settle();
    f.answer(1, 200, { symbols: ["B"], updated: 3 });
    assert.deepEqual(await second, ["B"]);
  });

  test("errors carry the server's message and status, or say the server was unreachable", async () => {
    const f = fakeFetch();
    const server = new ServerWatchlist({ url: URL, fetch: f.fetch });
    const denied = server.save(["A"]);
    f.answer(0, 403, { code: "csrf_failed", message: "CSRF check failed: send the X-CSRFToken header" });
    await assert.rejects(denied, { name: "WatchlistSyncError", status: 403, message: /CSRF check failed/ });

    const offline = server.load();
    await settle();
    f.requests[1].reject(new TypeError("Failed to fetch"));
    await assert.rejects(offline, { status: null, message: /could not be reached \(Failed to fetch\)/ });
  });

  test("needs a url", () => {
    assert.throws(() => new ServerWatchlist({ url: "" }), /needs a url/);
  });
});

describe("withServerWatchlist", () => {
  const local = { symbols: [...DEFAULT_WATCHLIST], selected: "AAPL", mode: "5s" };

  test("a saved server list wins; the selection stays when it is on it", () => {
    const { prefs, upload } = withServerWatchlist(local, { symbols: ["NVDA", "AAPL"], saved: true });
    assert.deepEqual(prefs, { symbols: ["NVDA", "AAPL"], selected: "AAPL", mode: "5s" });
    assert.equal(upload, false);
  });

  test("a selection not on the server list falls back to its first symbol", () => {
    assert.equal(withServerWatchlist(local, { symbols: ["NVDA"], saved: true }).prefs.selected, "NVDA");
    assert.equal(withServerWatchlist(local, { symbols: [], saved: true }).prefs.selected, null);
  });

  test("a first sign-in keeps this browser's list and uploads it", () => {
    const { prefs, upload } = withServerWatchlist(local, { symbols: [], saved: false });
    assert.deepEqual(prefs, local);
    assert.notEqual(prefs.symbols, local.symbols); // a copy, not the same array
    assert.equal(upload, true);
  });
});
