// The trade tape (time and sales) of the selected symbol: its newest ticks, newest first,
// with time, price and size, coloured by the aggressor side when the source knows it
// (a tick's optional `side`: "buy" or "sell"). app.js calls render from its animation
// frame when the symbol has new ticks; the rows are made once and only their text changes.

import { formatPrice } from "./format.js";

export const TAPE_ROWS = 24;

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
const sizeFormat = new Intl.NumberFormat("en-US", { maximumFractionDigits: 8 });

/** The newest `n` ticks as tape rows, newest first (pure). */
export function tapeRowsOf(ticks, n = TAPE_ROWS, { decimals } = {}) {
  const rows = [];
  for (let i = ticks.length - 1; i >= 0 && rows.length < n; i -= 1) {
    const t = ticks[i];
    rows.push({
      seq: t.seq,
      time: timeFormat.format(new Date(t.ts)),
      price: formatPrice(t.price, decimals),
      size: Number.isFinite(t.size) ? sizeFormat.format(t.size) : "—",
      side: t.side === "buy" || t.side === "sell" ? t.side : "",
    });
  }
  return rows;
}

export class TapeView {
  /**
   * @param {HTMLElement} body  the element the rows go in (role="rowgroup")
   * @param {HTMLElement} empty  shown while there is no tick
   */
  constructor(body, empty, { rows = TAPE_ROWS } = {}) {
    this.body = body;
    this.empty = empty;
    this.rows = [];
    for (let i = 0; i < rows; i += 1) {
      const row = document.createElement("div");
      row.className = "trow";
      row.setAttribute("role", "row");
      const cells = ["tt", "tp", "ts"].map((name) => {
        const el = document.createElement("span");
        el.className = name;
        el.setAttribute("role", "cell");
        row.append(el);
        return el;
      });
      row.hidden = true;
      body.append(row);
      this.rows.push({ row, cells });
    }
    this.newest = null;
  }

  /** Draw the newest ticks of `ticks` (ascending seq) unless the newest is already shown. */
  render(ticks, { decimals } = {}) {
    const newest = ticks.length ? ticks[ticks.length - 1].seq : null;
    if (newest === this.newest) return;
    this.newest = newest;
    const data = tapeRowsOf(ticks, this.rows.length, { decimals });
    this.empty.hidden = data.length > 0;
    for (let i = 0; i < this.rows.length; i += 1) {
      const { row, cells } = this.rows[i];
      const r = data[i];
      row.hidden = !r;
      if (!r) continue;
      row.dataset.side = r.side;
      row.dataset.seq = String(r.seq);
      cells[0].textContent = r.time;
      cells[1].textContent = r.price;
      cells[2].textContent = r.size;
    }
  }

  /** Forget what is shown (another symbol was selected). */
  clear() {
    this.newest = undefined;
  }
}
