import assert from "node:assert/strict";
import { test } from "node:test";

import { DEFAULT_WATCHLIST, MAX_WATCHLIST, STORAGE_KEY, loadPreferences, normalizeSymbol, savePreferences } from "../../frontend/static/frontend/preferences.js";
import { formatChange, formatPct, formatPrice, decimalsForTickSize } from "../../frontend/static/frontend/format.js";
import { matchSymbols } from "../../frontend/static/frontend/symbol-search.js";

class MemoryStorage {
  constructor() {
    this.items = new Map();
  }
  getItem(key) {
    return this.items.has(key) ? this.items.get(key) : null;
  }
  setItem(key, value) {
    this.items.set(key, String(value));
  }
}

test("the default watchlist holds well-known symbols", () => {
  assert.deepEqual([...DEFAULT_WATCHLIST], ["BTC-USD", "ETH-USD", "AAPL", "MSFT", "EUR-USD"]);
  assert.deepEqual(loadPreferences(new MemoryStorage()), { symbols: [...DEFAULT_WATCHLIST], selected: "BTC-USD", mode: "line" });
});

test("preferences round-trip through storage", () => {
  const storage = new MemoryStorage();
  savePreferences(storage, { symbols: ["NVDA", "AAPL"], selected: "AAPL", mode: "5s" });
  assert.deepEqual(loadPreferences(storage), { symbols: ["NVDA", "AAPL"], selected: "AAPL", mode: "5s" });
});

test("an empty watchlist is remembered as empty", () => {
  const storage = new MemoryStorage();
  savePreferences(storage, { symbols: [], selected: null, mode: "line" });
  assert.deepEqual(loadPreferences(storage).symbols, []);
});

test("corrupt or hostile stored data falls back safely", () => {
  const storage = new MemoryStorage();
  storage.setItem(STORAGE_KEY, "{not json");
  assert.deepEqual(loadPreferences(storage).symbols, [...DEFAULT_WATCHLIST]);
  storage.setItem(STORAGE_KEY, JSON.stringify({ symbols: ["AAPL", "<img src=x>", 42, "AAPL", "msft"], selected: "ZZZ", mode: "3d" }));
  assert.deepEqual(loadPreferences(storage), { symbols: ["AAPL"], selected: "AAPL", mode: "line" });
  const many = Array.from({ length: 80 }, (_, i) => `S${i}`);
  storage.setItem(STORAGE_KEY, JSON.stringify({ symbols: many }));
  assert.equal(loadPreferences(storage).symbols.length, MAX_WATCHLIST);
});

test("a storage that throws never breaks the page", () => {
  const broken = {
    getItem() {
      throw new Error("SecurityError");
    },
    setItem() {
      throw new Error("QuotaExceededError");
    },
  };
  assert.deepEqual(loadPreferences(broken).symbols, [...DEFAULT_WATCHLIST]);
  assert.equal(savePreferences(broken, { symbols: [], selected: null, mode: "line" }), false);
});

test("typed symbols are normalised and validated like the server does", () => {
  assert.equal(normalizeSymbol("  sol-usd "), "SOL-USD");
  assert.equal(normalizeSymbol("BRK.B"), "BRK.B");
  assert.equal(normalizeSymbol("a b"), null);
  assert.equal(normalizeSymbol("X".repeat(21)), null);
  assert.equal(normalizeSymbol(""), null);
});

const KNOWN = [
  { ticker: "SOL-USD", name: "Solana" },
  { ticker: "USD-JPY", name: "US Dollar / Japanese Yen" },
  { ticker: "AAPL", name: "Apple Inc." },
  { ticker: "MSFT", name: "Microsoft Corp." },
  { ticker: "EUR-USD", name: "Euro / US Dollar" },
  { ticker: "GBP-USD", name: "British Pound / US Dollar" },
];

test("completion ranks ticker prefixes, then words, then substrings", () => {
  assert.deepEqual(matchSymbols(KNOWN, "usd").map((k) => k.ticker), ["USD-JPY", "EUR-USD", "GBP-USD", "SOL-USD"]);
  assert.deepEqual(matchSymbols(KNOWN, "apple").map((k) => k.ticker), ["AAPL"]);
  assert.deepEqual(matchSymbols(KNOWN, "soft").map((k) => k.ticker), ["MSFT"]);
  assert.deepEqual(matchSymbols(KNOWN, "zzz"), []);
  assert.deepEqual(matchSymbols(KNOWN, "usd", { exclude: new Set(["EUR-USD"]), limit: 2 }).map((k) => k.ticker), ["USD-JPY", "GBP-USD"]);
});

test("prices and changes are formatted with the symbol's decimals", () => {
  assert.equal(decimalsForTickSize("0.00001000"), 5);
  assert.equal(decimalsForTickSize("1"), 0);
  assert.equal(formatPrice(97000.5, 2), "97,000.50");
  assert.equal(formatPrice(null, 2), "—");
  assert.equal(formatChange(-0.00012, 5), "−0.00012");
  assert.equal(formatChange(1e-12, 2), "0.00");
  assert.equal(formatPct(1.234), "+1.23%");
});
