// Watchlist order: as the user arranged it, or sorted by symbol, change % or session
// volume. Pure: reads a MarketStore, no DOM.

export const SORT_KEYS = Object.freeze(["symbol", "change", "volume"]);

function valueOf(key, symbol, store) {
  if (key === "symbol") return symbol;
  const series = store.get(symbol);
  if (!series) return null;
  if (key === "change") return series.changePct;
  if (key === "volume") return series.session?.volume ?? null;
  return null;
}

/**
 * `symbols` in the order of `sort` ({key, dir: "asc"|"desc"}), or as given without one.
 * Symbols without a value (no tick yet) go last either way; ties keep the given order.
 */
export function sortSymbols(symbols, store, sort) {
  if (!sort || !SORT_KEYS.includes(sort.key)) return [...symbols];
  const sign = sort.dir === "desc" ? -1 : 1;
  const keyed = symbols.map((symbol, index) => ({ symbol, index, value: valueOf(sort.key, symbol, store) }));
  keyed.sort((a, b) => {
    const an = a.value === null || a.value === undefined;
    const bn = b.value === null || b.value === undefined;
    if (an || bn) return an === bn ? a.index - b.index : an ? 1 : -1;
    const cmp = typeof a.value === "string" ? a.value.localeCompare(b.value) : a.value - b.value;
    return cmp === 0 ? a.index - b.index : sign * cmp;
  });
  return keyed.map((k) => k.symbol);
}

/** The next sort after clicking column `key`: ascending, descending, then none. */
export function nextSort(current, key) {
  if (!current || current.key !== key) return { key, dir: key === "symbol" ? "asc" : "desc" };
  const first = key === "symbol" ? "asc" : "desc";
  if (current.dir === first) return { key, dir: first === "asc" ? "desc" : "asc" };
  return null;
}

/** The symbol `delta` rows away from `selected` in `order` (clamped), or the first. */
export function moveSelection(order, selected, delta) {
  if (!order.length) return null;
  const index = order.indexOf(selected);
  if (index === -1) return order[delta >= 0 ? 0 : order.length - 1];
  return order[Math.max(0, Math.min(order.length - 1, index + delta))];
}
