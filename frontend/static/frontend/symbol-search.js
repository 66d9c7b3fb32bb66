// Completion for the "add symbol" box. Pure: ranks known symbols against a query.

/**
 * Known symbols matching `query`, best first: ticker prefix, then a word of the
 * ticker or the name starting with it, then substring anywhere. Symbols in
 * `exclude` (already on the watchlist) are left out.
 * @param {{ticker: string, name?: string}[]} known
 */
export function matchSymbols(known, query, { exclude = new Set(), limit = 8 } = {}) {
  const q = String(query ?? "").trim().toUpperCase();
  const ranked = [];
  for (const entry of known) {
    if (exclude.has(entry.ticker)) continue;
    const ticker = entry.ticker.toUpperCase();
    const name = (entry.name ?? "").toUpperCase();
    let rank;
    if (!q) rank = 3;
    else if (ticker.startsWith(q)) rank = 0;
    else if (ticker.split(/[-._]/).some((part) => part.startsWith(q)) || name.split(/\s+/).some((w) => w.startsWith(q))) rank = 1;
    else if (ticker.includes(q) || name.includes(q)) rank = 2;
    else continue;
    ranked.push({ rank, entry });
  }
  ranked.sort((a, b) => a.rank - b.rank || a.entry.ticker.localeCompare(b.entry.ticker));
  return ranked.slice(0, limit).map((r) => r.entry);
}
