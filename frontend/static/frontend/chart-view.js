// The main Plotly chart: a live line (last price, with the bid/ask band) or
// candlesticks with a volume histogram under them, the session's open, high and low
// as dotted levels, and a crosshair whose OHLCV readout app.js shows (onHover). app.js
// calls flush() once per animation frame; the chart decides whether a redraw is due.

import { INTERVALS } from "./candles.js";

export const LINE_MAX_POINTS = 600;
export const CANDLES_SHOWN = 120;
const MIN_DRAW_GAP_MS = 50;

const COLORS = {
  price: "#38bdf8",
  bid: "rgba(34, 197, 94, 0.75)",
  ask: "rgba(239, 68, 68, 0.75)",
  band: "rgba(148, 163, 184, 0.14)",
  up: "#22c55e",
  down: "#ef4444",
  upVolume: "rgba(34, 197, 94, 0.45)",
  downVolume: "rgba(239, 68, 68, 0.45)",
  grid: "#1f2a3d",
  text: "#a8b3c7",
  spike: "rgba(226, 232, 240, 0.55)",
  session: "rgba(245, 158, 11, 0.7)",
};

// Crosshair: dotted lines across both panes at the cursor (Plotly "spikes"). Plotly's
// own hover labels are off (hoverinfo "none"); its hover events still fire and feed the
// readout, which costs no extra SVG per redraw.
const SPIKE = { showspikes: true, spikemode: "across", spikesnap: "cursor", spikethickness: 1, spikedash: "dot", spikecolor: COLORS.spike };

// Plotly draws epoch-ms numbers as UTC wall time; shift them so the axis shows
// the viewer's local time.
const TZ_SHIFT_MS = new Date().getTimezoneOffset() * 60000;
export const plotTime = (ts) => ts - TZ_SHIFT_MS;

function baseLayout(decimals, uirevision) {
  const tickformat = decimals === undefined ? undefined : `,.${decimals}f`;
  return {
    uirevision,
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "rgba(0,0,0,0)",
    font: { color: COLORS.text, family: "Inter, system-ui, sans-serif", size: 11 },
    autosize: true,
    margin: { l: 10, r: 70, t: 10, b: 30 },
    // The legend is static HTML in the page: Plotly re-measures its own legend
    // text on every redraw, about a quarter of a live redraw's cost.
    showlegend: false,
    hovermode: "x",
    hoverdistance: -1,
    spikedistance: -1,
    xaxis: { type: "date", gridcolor: COLORS.grid, linecolor: COLORS.grid, zeroline: false, ...SPIKE },
    yaxis: { side: "right", gridcolor: COLORS.grid, zeroline: false, tickformat, hoverformat: tickformat, automargin: true, ...SPIKE },
  };
}

export class ChartView {
  /**
   * @param {HTMLElement} el  the Plotly graph div
   * @param {object} options
   * @param {object} options.Plotly  the Plotly global
   * @param {() => number} [options.now]  monotonic clock in ms
   * @param {(point: object|null) => void} [options.onHover]  the crosshair's point:
   *   a candle ({t, open, high, low, close, volume, count}) or a tick, or null on leaving
   */
  constructor(el, { Plotly, now = () => performance.now(), maxPoints = LINE_MAX_POINTS, candlesShown = CANDLES_SHOWN, onHover = () => {} }) {
    this.el = el;
    this.Plotly = Plotly;
    this.now = now;
    this.maxPoints = maxPoints;
    this.candlesShown = candlesShown;
    this.series = null;
    this.decimals = undefined;
    this.mode = "line";
    this.pending = [];
    this.pointCount = 0;
    this.needsFull = true;
    this.candlesRevision = -1;
    this.lastDrawAt = -Infinity;
    // Plotly redraws the whole SVG on every update; how long that takes sets how
    // often we allow it (see flush).
    this.minGapMs = MIN_DRAW_GAP_MS;
    this.lastDrawCostMs = 0;
    this.draws = 0;
    this.onHover = onHover;
    this.drawnCandles = [];
    this.hooked = false;
  }

  /** Listen to Plotly's hover events once the plot exists (it adds `on` to the div). */
  _hook() {
    if (this.hooked || typeof this.el.on !== "function") return;
    this.hooked = true;
    this.el.on("plotly_hover", (event) => this.onHover(this._pointOf(event)));
    this.el.on("plotly_unhover", () => this.onHover(null));
  }

  _pointOf(event) {
    const points = event?.points ?? [];
    if (this.mode === "line") {
      const out = { kind: "tick" };
      for (const p of points) out[["bid", "ask", "price"][p.curveNumber]] = p.y;
      out.x = points[0]?.x;
      return points.length ? out : null;
    }
    const index = points[0]?.pointIndex;
    const candle = Number.isInteger(index) ? this.drawnCandles[index] : undefined;
    return candle ? { kind: "candle", ...candle } : null;
  }

  /** Show `series` (a SymbolSeries or null) in `mode` ("line", "1s", "5s" or "1m"). */
  show(series, { mode = this.mode, decimals } = {}) {
    this.series = series;
    this.mode = mode;
    this.decimals = decimals;
    this.pending = [];
    this.needsFull = true;
  }

  /** The shown symbol's history was replaced (snapshot or reset): redraw from it. */
  rebuild() {
    this.pending = [];
    this.needsFull = true;
  }

  /** A new tick of the shown symbol, already folded into the series. */
  push(tick) {
    if (this.mode !== "line" || this.needsFull) return;
    this.pending.push(tick);
    if (this.pending.length > this.maxPoints) this.pending.splice(0, this.pending.length - this.maxPoints);
  }

  /** True when a redraw is owed (so the caller schedules another frame). */
  get hasWork() {
    if (this.needsFull) return true;
    if (this.mode === "line") return this.pending.length > 0;
    return this.series !== null && this.series.candles[this.mode].revision !== this.candlesRevision;
  }

  /** Called once per animation frame; draws if something changed and a draw is due. */
  flush() {
    if (!this.hasWork) return false;
    const start = this.now();
    if (start - this.lastDrawAt < this.minGapMs) return true;
    if (this.needsFull || (this.mode === "line" && this.pointCount === 0)) this._drawFull();
    else if (this.mode === "line") this._extendLine();
    else this._drawCandles();
    const end = this.now();
    this.lastDrawAt = end;
    this.lastDrawCostMs = end - start;
    // Keep Plotly under about a quarter of the main thread whatever the tick
    // rate: a draw that cost 20 ms waits 60 ms before the next one, and the
    // chart never redraws more than 20 times a second (the watchlist still
    // updates every frame). Ticks that arrive meanwhile are drawn together.
    this.minGapMs = Math.min(1000, Math.max(MIN_DRAW_GAP_MS, this.lastDrawCostMs * 3));
    this.draws += 1;
    return this.hasWork;
  }

  _uirevision() {
    return `${this.series?.symbol ?? ""}:${this.mode}`;
  }

  _drawFull() {
    this.needsFull = false;
    this.pending = [];
    if (this.mode === "line") this._drawLine();
    else this._drawCandles();
  }

  _emptyAnnotation(text) {
    return [{ text, showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5, font: { size: 14, color: COLORS.text } }];
  }

  _drawLine() {
    const ticks = this.series ? this.series.recent(this.maxPoints) : [];
    const x = ticks.map((t) => plotTime(t.ts));
    const data = [
      { type: "scatter", mode: "lines", name: "Bid", x, y: ticks.map((t) => t.bid), line: { color: COLORS.bid, width: 1 }, hoverinfo: "none" },
      { type: "scatter", mode: "lines", name: "Ask", x: x.slice(), y: ticks.map((t) => t.ask), line: { color: COLORS.ask, width: 1 }, fill: "tonexty", fillcolor: COLORS.band, hoverinfo: "none" },
      { type: "scatter", mode: "lines", name: "Last", x: x.slice(), y: ticks.map((t) => t.price), line: { color: COLORS.price, width: 2 }, hoverinfo: "none" },
    ];
    const layout = baseLayout(this.decimals, this._uirevision());
    if (!ticks.length) layout.annotations = this._emptyAnnotation(this.series ? "Waiting for ticks…" : "Add a symbol to the watchlist");
    this.pointCount = ticks.length;
    this.Plotly.react(this.el, data, layout, { displaylogo: false, responsive: true });
    this._hook();
  }

  _extendLine() {
    const ticks = this.pending;
    this.pending = [];
    const x = ticks.map((t) => plotTime(t.ts));
    this.Plotly.extendTraces(
      this.el,
      { x: [x, x.slice(), x.slice()], y: [ticks.map((t) => t.bid), ticks.map((t) => t.ask), ticks.map((t) => t.price)] },
      [0, 1, 2],
      this.maxPoints,
    );
    this.pointCount = Math.min(this.maxPoints, this.pointCount + ticks.length);
  }

  _drawCandles() {
    const candleSeries = this.series?.candles[this.mode];
    const candles = candleSeries ? candleSeries.tail(this.candlesShown) : [];
    this.candlesRevision = candleSeries ? candleSeries.revision : -1;
    this.drawnCandles = candles;
    // Centre each candle on its interval rather than on its opening instant.
    const half = (INTERVALS[this.mode] ?? 0) / 2;
    const x = candles.map((c) => plotTime(c.t + half));
    const data = [
      {
        type: "candlestick",
        name: `${this.mode} candles`,
        x,
        open: candles.map((c) => c.open),
        high: candles.map((c) => c.high),
        low: candles.map((c) => c.low),
        close: candles.map((c) => c.close),
        increasing: { line: { color: COLORS.up, width: 1 }, fillcolor: COLORS.up },
        decreasing: { line: { color: COLORS.down, width: 1 }, fillcolor: COLORS.down },
        xaxis: "x",
        yaxis: "y",
        hoverinfo: "none",
      },
      {
        type: "bar",
        name: "Volume",
        x: x.slice(),
        y: candles.map((c) => c.volume),
        marker: { color: candles.map((c) => (c.close >= c.open ? COLORS.upVolume : COLORS.downVolume)) },
        xaxis: "x",
        yaxis: "y2",
        hoverinfo: "none",
      },
    ];
    const layout = baseLayout(this.decimals, this._uirevision());
    layout.xaxis.rangeslider = { visible: false };
    layout.xaxis.anchor = "y2"; // time labels under the volume pane, not between the panes
    layout.yaxis.domain = [0.28, 1];
    layout.yaxis2 = { domain: [0, 0.2], side: "right", gridcolor: COLORS.grid, zeroline: false, showticklabels: true, tickfont: { size: 9 }, automargin: true };
    layout.bargap = 0.15;
    const session = this.series?.session ?? null;
    if (session) Object.assign(layout, sessionLevels(session));
    if (!candles.length) layout.annotations = this._emptyAnnotation(this.series ? "Waiting for ticks…" : "Add a symbol to the watchlist");
    this.pointCount = candles.length;
    this.Plotly.react(this.el, data, layout, { displaylogo: false, responsive: true });
    this._hook();
  }
}

/** Dotted lines at the session's open, high and low across the price pane, labelled. */
export function sessionLevels(session) {
  const levels = [["O", session.open], ["H", session.high], ["L", session.low]];
  return {
    shapes: levels.map(([, y]) => ({
      type: "line", xref: "paper", x0: 0, x1: 1, yref: "y", y0: y, y1: y,
      line: { color: COLORS.session, width: 1, dash: "dot" },
    })),
    annotations: levels.map(([label, y]) => ({
      xref: "paper", x: 0, xanchor: "left", yref: "y", y, yanchor: "bottom", showarrow: false,
      text: `session ${label}`, font: { size: 9, color: COLORS.session },
    })),
  };
}
