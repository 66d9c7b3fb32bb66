// The depth ladder of the selected symbol: asks above (best at the bottom), the spread and
// mid between the sides, bids below (best at the top); per level the price, the size and
// the cumulative size, with a bar proportional to the cumulative size.
//
// Rows are made once and only their text changes, at most once per animation frame (app.js
// calls render from its frame). The bars are scaled through the CSSOM (element.style), which
// the page's CSP allows: it forbids inline style attributes and <style> text, not scripts
// setting a property (tests/test_browser_book.py watches for violations).

import { ladderOf } from "./order-book.js";

export const LADDER_LEVELS = 10;

// The server's reason codes, in words (a source's own reason is already a sentence).
const REASONS = { no_book: "none has been published for it" };

/** Why `symbol` has no book, for the user. */
export function noBookText(symbol, reason) {
  return `No order book for ${symbol}: ${REASONS[reason] ?? reason ?? "its source keeps none"}.`;
}

function cell(className) {
  const el = document.createElement("span");
  el.className = className;
  el.setAttribute("role", "cell");
  return el;
}

function makeRow(side) {
  const row = document.createElement("div");
  row.className = `lrow lrow-${side}`;
  row.setAttribute("role", "row");
  const bar = document.createElement("span");
  bar.className = "lbar";
  bar.setAttribute("aria-hidden", "true");
  const price = cell("lp");
  const size = cell("ls");
  const total = cell("lt");
  row.append(bar, price, size, total);
  return { row, bar, price, size, total, share: -1 };
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

export class LadderView {
  /**
   * @param {object} els  {root, asks, bids, spread, mid, note}: the ladder's box, the two
   *   row groups, the spread and mid cells, and the note shown instead of the ladder
   * @param {object} [options]
   * @param {number} [options.levels]  rows per side
   */
  constructor(els, { levels = LADDER_LEVELS } = {}) {
    this.els = els;
    this.levels = levels;
    this.asks = [];
    this.bids = [];
    // Asks: the worst shown level first, so the best sits next to the spread.
    for (let i = 0; i < levels; i += 1) {
      const ask = makeRow("ask");
      const bid = makeRow("bid");
      els.asks.prepend(ask.row);
      els.bids.append(bid.row);
      this.asks.push(ask);
      this.bids.push(bid);
    }
    this.version = null;
  }

  /** Show `text` instead of the ladder (no symbol, loading, or a symbol without a book). */
  message(text, { state = "message" } = {}) {
    this.version = null;
    this.els.root.dataset.state = state;
    this.els.note.textContent = text;
    this.els.note.hidden = false;
  }

  /** Draw `replica` (a BookReplica) if it changed since the last call. */
  render(replica) {
    if (!replica.available) {
      this.message(noBookText(replica.symbol, replica.reason), { state: "none" });
      return;
    }
    if (replica.version === this.version) return;
    this.version = replica.version;
    this.els.root.dataset.state = "live";
    this.els.note.hidden = true;
    const ladder = ladderOf(replica.book, this.levels);
    this._fill(this.asks, ladder.asks);
    this._fill(this.bids, ladder.bids);
    setText(this.els.spread, ladder.spread ?? "—");
    setText(this.els.mid, ladder.mid ?? "—");
    this.els.root.dataset.levels = `${ladder.bids.length}/${ladder.asks.length}`;
  }

  _fill(rows, levels) {
    for (let i = 0; i < rows.length; i += 1) {
      const r = rows[i];
      const level = levels[i];
      r.row.classList.toggle("empty", !level);
      setText(r.price, level?.price ?? "");
      setText(r.size, level?.size ?? "");
      setText(r.total, level?.total ?? "");
      const share = level?.share ?? 0;
      if (share !== r.share) {
        r.share = share;
        // A CSSOM write (allowed under the CSP); transform keeps it off layout.
        r.bar.style.transform = `scaleX(${share.toFixed(4)})`;
      }
    }
  }
}
