// The user's watchlist, selected symbol and chart mode, kept in localStorage.
// Pure apart from the storage object passed in (a Map-like stub in tests).

export const STORAGE_KEY = "ticker.dashboard.v1";
export const DEFAULT_WATCHLIST = Object.freeze(["BTC-USD", "ETH-USD", "AAPL", "MSFT", "EUR-USD"]);
export const CHART_MODES = Object.freeze(["line", "1s", "5s", "1m", "5m", "1h", "1D"]);
// The server's default per-connection limit (docs/protocol.md, too_many_symbols).
export const MAX_WATCHLIST = 50;

// Same rule as the server's symbol validation (markets/symbols.py).
const SYMBOL_RE = /^[A-Z0-9._-]{1,20}$/;

export function isValidSymbol(value) {
  return typeof value === "string" && SYMBOL_RE.test(value);
}

/** Upper-case and trim what a user typed; null when it cannot be a symbol. */
export function normalizeSymbol(text) {
  const symbol = String(text ?? "").trim().toUpperCase();
  return isValidSymbol(symbol) ? symbol : null;
}

export function defaultPreferences() {
  return { symbols: [...DEFAULT_WATCHLIST], selected: DEFAULT_WATCHLIST[0], mode: "line" };
}

/** Read preferences; anything missing, corrupt or hostile falls back to the defaults. */
export function loadPreferences(storage) {
  const defaults = defaultPreferences();
  let raw = null;
  try {
    raw = storage?.getItem(STORAGE_KEY);
  } catch {
    return defaults; // storage disabled (private mode, blocked cookies)
  }
  if (!raw) return defaults;
  let parsed;
  try {
    parsed = JSON.parse(raw);
  } catch {
    return defaults;
  }
  if (parsed === null || typeof parsed !== "object") return defaults;
  const symbols = Array.isArray(parsed.symbols)
    ? [...new Set(parsed.symbols.filter(isValidSymbol))].slice(0, MAX_WATCHLIST)
    : defaults.symbols;
  const selected = symbols.includes(parsed.selected) ? parsed.selected : (symbols[0] ?? null);
  const mode = CHART_MODES.includes(parsed.mode) ? parsed.mode : defaults.mode;
  return { symbols, selected, mode };
}

export function savePreferences(storage, { symbols, selected, mode }) {
  try {
    storage?.setItem(STORAGE_KEY, JSON.stringify({ symbols, selected, mode }));
    return true;
  } catch {
    return false; // quota or disabled storage: the session still works
  }
}

/**
 * The preferences to use once the server's copy of a signed-in user's watchlist is
 * known (remote: {symbols, saved} from ServerWatchlist.load). A saved server list wins
 * over this browser's; with none saved yet (a first sign-in) this browser's list is
 * kept and `upload` says to save it. The selected symbol and chart mode stay local.
 */
export function withServerWatchlist(prefs, remote) {
  if (!remote?.saved) return { prefs: { ...prefs, symbols: [...prefs.symbols] }, upload: true };
  const symbols = Array.isArray(remote.symbols)
    ? [...new Set(remote.symbols.filter(isValidSymbol))].slice(0, MAX_WATCHLIST)
    : [];
  const selected = symbols.includes(prefs.selected) ? prefs.selected : (symbols[0] ?? null);
  return { prefs: { symbols, selected, mode: prefs.mode }, upload: false };
}

// The watchlist's sort ({key, dir} or null), kept apart from the preferences above.
export const SORT_STORAGE_KEY = "ticker.dashboard.sort.v1";

export function loadSort(storage) {
  try {
    const parsed = JSON.parse(storage?.getItem(SORT_STORAGE_KEY) ?? "null");
    if (parsed && ["symbol", "change", "volume"].includes(parsed.key) && ["asc", "desc"].includes(parsed.dir)) {
      return { key: parsed.key, dir: parsed.dir };
    }
  } catch {
    // corrupt or blocked storage: unsorted
  }
  return null;
}

export function saveSort(storage, sort) {
  try {
    storage?.setItem(SORT_STORAGE_KEY, JSON.stringify(sort));
  } catch {
    // the sort just does not persist
  }
}
