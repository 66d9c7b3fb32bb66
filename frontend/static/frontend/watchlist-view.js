// The watchlist table: one row per symbol. It only draws; app.js decides when
// (once per animation frame, for the symbols that changed since the last one).

import { formatChange, formatPct, formatPrice, formatVolume } from "./format.js";
import { sourceMark } from "./source-status.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const SPARK_W = 80;
const SPARK_H = 26;
// Nobody reads a price that changes 60 times a second: a row's numbers are
// redrawn at most ~12 times a second, which also caps its flashes and keeps
// text layout off most frames. Sparklines move little per tick: ~5 Hz.
const ROW_MIN_INTERVAL_MS = 80;
const SPARK_MIN_INTERVAL_MS = 200;
const FLASH_MS = 650;

/** SVG polyline points for a sparkline of `values` in a w x h box. */
export function sparklinePoints(values, w = SPARK_W, h = SPARK_H) {
  if (values.length < 2) return "";
  let min = Infinity;
  let max = -Infinity;
  for (const v of values) {
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const span = max - min || 1;
  const step = w / (values.length - 1);
  let out = "";
  for (let i = 0; i < values.length; i += 1) {
    const y = h - 2 - ((values[i] - min) / span) * (h - 4);
    out += `${(i * step).toFixed(1)},${y.toFixed(1)} `;
  }
  return out.trimEnd();
}

export class WatchlistView {
  /**
   * @param {HTMLTableSectionElement} tbody
   * @param {object} options
   * @param {Map<string, {name: string, decimals: number, source?: string}>} options.meta
   * @param {(symbol: string) => void} options.onSelect
   * @param {(symbol: string) => void} options.onRemove
   */
  constructor(tbody, { meta, onSelect, onRemove, now = () => performance.now() }) {
    this.tbody = tbody;
    this.meta = meta;
    this.now = now;
    this.rows = new Map();
    // ticker -> {source, state, error} from the server (source-status.js); until it
    // answers, a row shows the source the page was rendered with (meta) and no mark.
    this.sources = new Map();
    this.selected = null;
    this.order = [];
    tbody.addEventListener("click", (event) => {
      const row = event.target.closest("tr[data-symbol]");
      if (!row) return;
      if (event.target.closest("button.remove")) onRemove(row.dataset.symbol);
      else onSelect(row.dataset.symbol);
    });
    tbody.addEventListener("keydown", (event) => {
      const row = event.target.closest("tr[data-symbol]");
      if (!row || event.target !== row) return;
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        onSelect(row.dataset.symbol);
      } else if (event.key === "Delete" || event.key === "Backspace") {
        onRemove(row.dataset.symbol);
      }
    });
  }

  /** Make the rows match `symbols`, in that order, keeping existing rows. */
  setSymbols(symbols) {
    for (const symbol of [...this.rows.keys()]) {
      if (!symbols.includes(symbol)) this.remove(symbol);
    }
    this.setOrder(symbols);
  }

  /** Put the rows in `symbols`' order, moving only those out of place. */
  setOrder(symbols) {
    let previous = null;
    for (const symbol of symbols) {
      const row = this.rows.get(symbol) ?? this._create(symbol);
      const want = previous ? previous.nextSibling : this.tbody.firstChild;
      if (row.tr !== want) this.tbody.insertBefore(row.tr, want);
      previous = row.tr;
    }
    this.order = [...symbols];
  }

  /** Focus the row of `symbol` (keyboard navigation), scrolling it into view. */
  focus(symbol) {
    const row = this.rows.get(symbol);
    if (!row) return;
    row.tr.focus({ preventScroll: true });
    row.tr.scrollIntoView({ block: "nearest" });
  }

  remove(symbol) {
    const row = this.rows.get(symbol);
    if (!row) return;
    row.tr.remove();
    this.rows.delete(symbol);
  }

  setSelected(symbol) {
    this.selected = symbol;
    for (const [s, row] of this.rows) {
      const on = s === symbol;
      row.tr.classList.toggle("selected", on);
      row.tr.setAttribute("aria-selected", String(on));
    }
  }

  setStale(staleSymbols) {
    for (const [s, row] of this.rows) {
      const stale = staleSymbols.has(s);
      if (row.stale !== stale) {
        row.stale = stale;
        row.tr.classList.toggle("stale", stale);
        this._showStaleMark(row);
      }
    }
  }

  /** Each symbol's feed source and state (a Map from source-status.js); marks those not up. */
  setSources(sources) {
    this.sources = sources;
    for (const [symbol, row] of this.rows) this._renderSource(symbol, row);
  }

  // A source that is not up says why its row has no ticks; "stale" would only repeat it.
  _showStaleMark(row) {
    row.staleMark.hidden = !row.stale || row.sourceMark !== null;
  }

  _renderSource(symbol, row) {
    const info = this.sources.get(symbol) ?? { source: this.meta.get(symbol)?.source ?? "", state: null, error: null };
    const mark = sourceMark(info);
    const key = `${info.source}|${mark?.label ?? ""}|${mark?.description ?? ""}`;
    if (row.sourceKey === key) return;
    row.sourceKey = key;
    row.srcCell.textContent = info.source;
    row.srcTag.textContent = info.source;
    row.srcTag.hidden = !info.source;
    row.sourceMark = mark;
    row.tr.classList.toggle("source-off", mark !== null);
    if (mark) {
      row.tr.dataset.sourceState = mark.label;
      row.srcCell.dataset.state = mark.label;
      row.mark.dataset.state = mark.label;
      row.mark.title = mark.description;
      row.markLabel.textContent = mark.label;
      row.markText.textContent = mark.description;
    } else {
      delete row.tr.dataset.sourceState;
      delete row.srcCell.dataset.state;
    }
    row.mark.hidden = mark === null;
    this._showStaleMark(row);
  }

  /** Redraw the rows of `symbols` from the store; rows drawn too recently wait. Returns those drawn. */
  render(store, symbols) {
    const now = this.now();
    const drawn = new Set();
    for (const symbol of symbols) {
      const row = this.rows.get(symbol);
      const series = store.get(symbol);
      if (!row || !series) continue;
      if (now - row.drawnAt < ROW_MIN_INTERVAL_MS && series.last !== null && row.seq !== null) {
        row.owed = true; // drawn by a later frame, with whatever is newest then
        continue;
      }
      row.owed = false;
      row.drawnAt = now;
      this._renderRow(row, series, now);
      drawn.add(symbol);
    }
    return drawn;
  }

  /** Symbols whose rows still owe a redraw (throttled in an earlier frame). */
  takeOwed() {
    const out = [];
    for (const [symbol, row] of this.rows) {
      if (row.owed || row.sparkPending) {
        row.owed = false;
        row.sparkPending = false;
        out.push(symbol);
      }
    }
    return out;
  }

  /** True while some row waits for a later frame. */
  get owesWork() {
    for (const row of this.rows.values()) if (row.owed || row.sparkPending) return true;
    return false;
  }

  _renderRow(row, series, now) {
    const digits = this.meta.get(series.symbol)?.decimals;
    const last = series.last;
    if (!last) {
      this._text(row, "last", "—");
      this._text(row, "chg", "—");
      this._text(row, "pct", "—");
      this._text(row, "bid", "—");
      this._text(row, "ask", "—");
      this._text(row, "vol", "—");
      this._text(row, "hi", "—");
      this._text(row, "lo", "—");
      row.spark.setAttribute("points", "");
      row.seq = null;
      row.tr.dataset.seq = "";
      return;
    }
    this._text(row, "last", formatPrice(last.price, digits));
    this._text(row, "chg", formatChange(series.change, digits));
    this._text(row, "pct", formatPct(series.changePct));
    this._text(row, "bid", formatPrice(last.bid, digits));
    this._text(row, "ask", formatPrice(last.ask, digits));
    // The session (UTC day): its volume, high and low, from the server's history and live ticks.
    const session = series.session;
    this._text(row, "vol", session ? formatVolume(session.volume) : "—");
    this._text(row, "hi", session ? formatPrice(session.high, digits) : "—");
    this._text(row, "lo", session ? formatPrice(session.low, digits) : "—");
    const trend = series.change > 0 ? "up" : series.change < 0 ? "down" : "flat";
    if (row.trend !== trend) {
      row.trend = trend;
      row.tr.dataset.trend = trend;
    }
    if (row.seq !== last.seq) {
      if (row.seq !== null && series.direction !== 0) this._flash(row, series.direction);
      row.seq = last.seq;
      row.tr.dataset.seq = String(last.seq);
    }
    const spark = series.candles["1s"];
    if (spark.revision !== row.sparkRevision && now - row.sparkDrawnAt >= SPARK_MIN_INTERVAL_MS) {
      row.sparkRevision = spark.revision;
      row.sparkDrawnAt = now;
      row.spark.setAttribute("points", sparklinePoints(series.sparkline(60)));
    } else if (spark.revision !== row.sparkRevision) {
      // Drawn too recently: ask to be visited again next frame.
      row.sparkPending = true;
    }
  }

  _flash(row, direction) {
    const dir = direction > 0 ? "up" : "down";
    if (row.dir !== dir) {
      row.dir = dir;
      row.lastCell.dataset.dir = dir;
    }
    // Restarting through the Web Animations API avoids the forced style
    // recalculation of removing and re-adding a CSS class.
    row.flash?.cancel();
    row.flash = row.flashEl.animate([{ opacity: 1 }, { opacity: 0 }], { duration: FLASH_MS, easing: "ease-out" });
  }

  _text(row, key, value) {
    if (row.texts[key] !== value) {
      row.texts[key] = value;
      row.cells[key].textContent = value;
    }
  }

  _create(symbol) {
    const meta = this.meta.get(symbol);
    const tr = document.createElement("tr");
    tr.className = "wl-row";
    tr.dataset.symbol = symbol;
    tr.dataset.seq = "";
    tr.tabIndex = 0;
    tr.setAttribute("aria-selected", "false");

    const symCell = document.createElement("td");
    symCell.className = "c-sym";
    const tickerEl = document.createElement("span");
    tickerEl.className = "ticker";
    tickerEl.textContent = symbol;
    const staleMark = document.createElement("span");
    staleMark.className = "stale-mark";
    staleMark.textContent = "stale";
    staleMark.title = "No tick for several seconds";
    staleMark.hidden = true;
    // A source that is not up: its state in a word, and why in the title and for screen
    // readers (the word alone is hidden from them).
    const mark = document.createElement("span");
    mark.className = "source-mark";
    mark.hidden = true;
    const markLabel = document.createElement("span");
    markLabel.className = "source-mark-label";
    markLabel.setAttribute("aria-hidden", "true");
    const markText = document.createElement("span");
    markText.className = "visually-hidden";
    mark.append(markLabel, markText);
    // The source on the name line, where the list has no room for the Source column.
    const nameEl = document.createElement("span");
    nameEl.className = "name";
    const srcTag = document.createElement("span");
    srcTag.className = "src-tag";
    nameEl.append(srcTag, meta?.name ?? "");
    symCell.append(tickerEl, mark, staleMark, nameEl);
    const srcCell = document.createElement("td");
    srcCell.className = "c-src";

    const cells = {};
    const numCell = (key) => {
      const td = document.createElement("td");
      td.className = `num c-${key}`;
      td.textContent = "—";
      cells[key] = td;
      return td;
    };
    // The flash is an overlay whose opacity is animated: the compositor runs
    // that without main-thread style or paint work in every frame, unlike an
    // animated background colour.
    const lastCell = document.createElement("td");
    lastCell.className = "num c-last";
    const flash = document.createElement("span");
    flash.className = "flash";
    flash.setAttribute("aria-hidden", "true");
    const lastValue = document.createElement("span");
    lastValue.className = "value";
    lastValue.textContent = "—";
    cells.last = lastValue;
    lastCell.append(flash, lastValue);
    const sparkCell = document.createElement("td");
    sparkCell.className = "c-spark";
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", `0 0 ${SPARK_W} ${SPARK_H}`);
    svg.setAttribute("width", String(SPARK_W));
    svg.setAttribute("height", String(SPARK_H));
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("aria-hidden", "true");
    const spark = document.createElementNS(SVG_NS, "polyline");
    spark.setAttribute("fill", "none");
    svg.appendChild(spark);
    sparkCell.appendChild(svg);

    const removeCell = document.createElement("td");
    removeCell.className = "c-remove";
    const button = document.createElement("button");
    button.type = "button";
    button.className = "remove";
    button.title = `Remove ${symbol}`;
    button.setAttribute("aria-label", `Remove ${symbol}`);
    button.textContent = "×";
    removeCell.appendChild(button);

    // Bid over ask in one cell keeps the row narrow enough for the sparkline.
    const quoteCell = document.createElement("td");
    quoteCell.className = "num c-quote";
    for (const key of ["bid", "ask"]) {
      const span = document.createElement("span");
      span.className = `c-${key}`;
      span.textContent = "—";
      cells[key] = span;
      quoteCell.appendChild(span);
    }

    tr.append(
      symCell, srcCell, lastCell, numCell("chg"), numCell("pct"), numCell("vol"), numCell("hi"), numCell("lo"),
      quoteCell, sparkCell, removeCell,
    );
    const row = {
      tr,
      cells,
      lastCell,
      flashEl: flash,
      dir: null,
      spark,
      staleMark,
      mark,
      markLabel,
      markText,
      srcCell,
      srcTag,
      sourceMark: null,
      sourceKey: null,
      texts: {},
      seq: null,
      trend: null,
      stale: false,
      flash: null,
      sparkRevision: -1,
      sparkDrawnAt: -Infinity,
      sparkPending: false,
      owed: false,
      drawnAt: -Infinity,
    };
    this.rows.set(symbol, row);
    this._renderSource(symbol, row);
    return row;
  }
}
